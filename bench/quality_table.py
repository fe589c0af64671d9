"""Prints the quality harness's markdown tables from the model directories bench/quality.sh wrote."""
import csv, json, os, statistics, sys

out, seeds, sets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
here = os.path.dirname(os.path.abspath(__file__))
anchors = {r["set"]: r for r in csv.DictReader(open(os.path.join(here, "anchors.csv")))}

def ms(v):
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"

rows = []
nmis = {}
raws = {}
spreads = {}
for s in sets:
    held = s == "ECG5000-seed"
    dev, off, raw, agree, secs, epochs, k = {"ari": [], "nmi": []}, [], {"ari": [], "nmi": []}, [], [], [], []
    for i in range(seeds):
        d = f"{out}/{s}-s{i}"
        m = json.load(open(f"{d}/metrics.json"))
        part = "holdout" if held else "train"
        for key in ("ari", "nmi"):
            dev[key].append(m[f"vrae_{part}"][key])
            raw[key].append(m[f"raw_{part}"][key])
        if m.get("offline_train"):
            off.append(m["offline_train"]["nmi"])
        agree.append(m.get(f"agreement_{part}", float("nan")))
        secs.append(float(open(f"{d}.seconds").read()))
        rep = json.load(open(f"{d}/report.json"))
        epochs.append(len(rep["epochs"]))
    nmis[s] = statistics.mean(dev["nmi"])
    raws[s] = statistics.mean(raw["nmi"])
    spreads[s] = max(dev["nmi"]) - min(dev["nmi"])
    a = anchors.get(s.replace("-seed", ""), {})
    rows.append((s + (" (seed protocol, held-out)" if held else ""), ms(dev["ari"]), ms(dev["nmi"]), ms(off),
                 ms(raw["nmi"]), "yes" if statistics.mean(dev["nmi"]) >= statistics.mean(raw["nmi"]) else "**no**",
                 a.get("best_no_umap_nmi", "-"), a.get("best_umap_nmi", "-"),
                 f"{100 * min(agree):.1f}%", f"{statistics.mean(epochs):.0f}", f"{statistics.mean(secs):.0f}"))

print(f"| set | ARI | NMI | offline NMI | raw k-means NMI | >= raw | best published (no UMAP) | with UMAP | device agreement (min) | epochs | fit s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
dev5 = ("Trace", "Coffee", "ACSF1", "PigCVP", "ECG5000")
merged = [nmis[s] for s in dev5 if s in nmis]
if len(merged) == 5:
    # The anchors' mean over the same five sets, read from anchors.csv (not written out here).
    published = statistics.mean(float(anchors[s]["best_no_umap_nmi"]) for s in dev5 if s in anchors)
    print(f"\nMean NMI over Trace, Coffee, ACSF1, PigCVP, ECG5000 (merged): **{statistics.mean(merged):.3f}** "
          f"(best published per set, no UMAP: {published:.3f})")

# The whole suite (merged protocol): mean, worst set, sets below raw k-means, seed spread.
suite = [s for s in nmis if s != "ECG5000-seed" and not s.startswith("Cycles")]
if len(suite) > 5:
    worst = min(suite, key=lambda s: nmis[s])
    below = [s for s in suite if nmis[s] < raws[s]]
    best = [float(anchors[s]["best_no_umap_nmi"]) for s in suite if s in anchors]
    wide = max(suite, key=lambda s: spreads[s])
    print(f"\nSuite ({len(suite)} sets, merged): mean NMI **{statistics.mean(nmis[s] for s in suite):.3f}** "
          f"(raw k-means {statistics.mean(raws[s] for s in suite):.3f}; best published per set, no UMAP, "
          f"{statistics.mean(best):.3f} over the {len(best)} with an anchor); worst set {worst} {nmis[worst]:.3f}; "
          f"below raw k-means: {', '.join(below) if below else 'none'}; widest seed spread (max - min NMI) "
          f"{wide} {spreads[wide]:.3f}")
