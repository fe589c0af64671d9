"""Screens label-free choice criteria on the runs bench/quality.sh wrote (not part of CI).

    python3 bench/choice_table.py QUALITY_OUT SEEDS SET...

Each run fitted with a choice of representation (`--representation` other than `given`) records
in metrics.json, per candidate decision vector, the modularity of its spectral partition, its
mean ARI with the other candidates' partitions, with `modularity-gap` the modularity the same
clustering reaches on its nulls (a Gaussian sample with the candidate's covariance; the candidate
with every column permuted on its own) and, with labels, the NMI of its partition. This prints, per criterion, the NMI each set gets when that criterion picks
(mean over seeds), the suite's mean and worst set, the widest seed spread, and the oracle (the
best candidate per run, picked with the labels: an upper bound, not a method).
"""
import json, statistics, sys

out, seeds, sets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def gap(c, null="null_gaussian"):
    # The nulls are measured only by `--representation modularity-gap` runs.
    return float("nan") if c.get(null) is None else c["modularity"] - c[null]


CRITERIA = {
    "modularity": lambda c: c["modularity"],
    "gap gauss": gap,
    "gap perm": lambda c: gap(c, "null_permuted"),
    "agreement": lambda c: c.get("agreement") or float("nan"),
    "modularity+agreement": lambda c: c["modularity"] + (c.get("agreement") or float("nan")),
}


def runs(s):
    for i in range(seeds):
        m = json.load(open(f"{out}/{s}-s{i}/metrics.json"))
        cands = [c for c in m.get("candidates", []) if c.get("nmi") is not None]
        raw = m["raw_train"]["nmi"]
        yield cands, raw


table = {}
for s in sets:
    per = {name: [] for name in CRITERIA}
    per["given"], per["oracle"], per["raw"] = [], [], []
    for cands, raw in runs(s):
        if not cands:
            continue
        per["raw"].append(raw)
        per["given"].append(cands[0]["nmi"])
        per["oracle"].append(max(c["nmi"] for c in cands))
        for name, f in CRITERIA.items():
            # NaN (not measured) never wins; ties keep the earlier candidate.
            best = max(cands, key=lambda c: (f(c) if f(c) == f(c) else float("-inf"), -cands.index(c)))
            per[name].append(best["nmi"])
    table[s] = per
    print(f"## {s}")
    for cands, _ in runs(s):
        print("   " + "  ".join(f"{c['name']}: nmi {c['nmi']:.3f} Q {c['modularity']:.3f} gap {gap(c):.3f} "
                                f"agree {c.get('agreement') or float('nan'):.3f}" for c in cands))

cols = ["raw", "given", *CRITERIA, "oracle"]
print("\n| set | " + " | ".join(cols) + " |")
print("|---|" + "---|" * len(cols))
for s, per in table.items():
    print(f"| {s} | " + " | ".join(f"{statistics.mean(per[c]):.3f}" if per[c] else "-" for c in cols) + " |")
for label, agg in (("mean", statistics.mean), ("worst", min)):
    print(f"| **{label}** | " + " | ".join(f"{agg(statistics.mean(p[c]) for p in table.values() if p[c]):.3f}" for c in cols) + " |")
print("| below raw | " + " | ".join(str(sum(statistics.mean(p[c]) < statistics.mean(p['raw']) for p in table.values() if p[c]))
                                    for c in cols) + " |")
print("| widest spread | " + " | ".join(f"{max(max(p[c]) - min(p[c]) for p in table.values() if p[c]):.3f}" for c in cols) + " |")
