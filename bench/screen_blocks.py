"""Screens decision-vector blocks and label-free choice criteria on the quality suite without
training (numpy + scikit-learn; not part of the harness or CI).

    python3 bench/screen_blocks.py DATA_DIR SET...

For each set: the summary blocks the device computes (runtime::summary), computed here from the
raw series resampled to one length, each candidate vector clustered by spectral clustering on a
10-NN graph, and per candidate the NMI (labels score only) beside the internal criteria.
"""
import glob, gzip, os, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
from sklearn.cluster import SpectralClustering
from sklearn.metrics import normalized_mutual_info_score as nmi, adjusted_rand_score as ari


def read(path):
    op = gzip.open if path.endswith(".gz") else open
    xs, ys = [], []
    with op(path, "rt") as f:
        if path.endswith(".ts") or path.endswith(".ts.gz"):
            data = False
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.lower().startswith("@data"):
                    data = True
                    continue
                if not data:
                    continue
                *dims, label = line.split(":")
                xs.append([np.array([float(v) for v in d.split(",") if v not in ("?", "NaN")]) for d in dims])
                ys.append(label)
        else:
            for line in f:
                v = line.replace(",", " ").split()
                if not v:
                    continue
                a = np.array([float(t) for t in v[1:]])
                xs.append([a[~np.isnan(a)]])
                ys.append(v[0])
    return xs, ys


def load(data, name):
    dev = "../shared/data/devsuite"
    cands = glob.glob(f"{data}/{name}/{name}_TRAIN*") + glob.glob(f"{dev}/{name}/{name}_TRAIN*")
    if name == "ECG5000":
        cands = ["data/ecg5000/ECG5000_TRAIN.tsv.gz"]
    tr = cands[0]
    x1, y1 = read(tr)
    x2, y2 = read(tr.replace("_TRAIN", "_TEST"))
    xs, ys = x1 + x2, y1 + y2
    n = max(len(d) for s in xs for d in s)
    out = np.zeros((len(xs), n, len(xs[0])), np.float32)
    for i, s in enumerate(xs):
        for k, d in enumerate(s):
            out[i, :, k] = np.interp(np.linspace(0, len(d) - 1, n), np.arange(len(d)), d)
    _, lab = np.unique(ys, return_inverse=True)
    return out, lab


def blocks(x, segments=32, freqs=32, levels=16):
    """Summary blocks per runtime::summary (all features side by side)."""
    n, t, f = x.shape
    stride = -(-t // min(segments, t))
    segs = -(-t // stride)
    d = np.diff(x, axis=1, prepend=x[:, :1])
    idx = np.minimum(np.arange(t) // stride, segs - 1)
    cnt = np.bincount(idx, minlength=segs)[None, :, None]
    seg_mean = np.zeros((n, segs, f)); np.add.at(seg_mean, (slice(None), idx), x); seg_mean /= cnt
    seg_abs = np.zeros((n, segs, f)); np.add.at(seg_abs, (slice(None), idx), np.abs(d)); seg_abs /= cnt
    seg_step = np.zeros((n, segs, f)); np.add.at(seg_step, (slice(None), idx), d); seg_step /= cnt
    fr = min(freqs, t // 2)
    ph = np.exp(-2j * np.pi * np.outer(np.arange(1, fr + 1), np.arange(t)) / t)
    spec = np.abs(np.einsum("ft,ntk->nfk", ph, x)) / t
    dd = d[:, 1:]
    sspec = np.abs(np.einsum("ft,ntk->nfk", ph[:, 1:], dd)) / (t - 1)
    edges = np.quantile(dd.reshape(-1, f), np.arange(1, levels + 1) / (levels + 1), axis=0)
    cdf = (dd[:, :, None, :] < edges[None, None]).mean(axis=1)
    flat = lambda a: a.reshape(n, -1)
    return {"mean": flat(seg_mean), "abs": flat(seg_abs), "spec": flat(spec), "cdf": flat(cdf),
            "sspec": flat(sspec), "step": flat(seg_step), "pdiff": flat(np.diff(seg_mean, axis=1))}


def weigh(parts):
    out = []
    for b, w in parts:
        b = b - b.mean(0)
        tot = np.sqrt((b ** 2).sum(0).sum() / len(b))
        out.append(b * (w / tot if tot > 1e-12 else 0))
    return np.concatenate(out, 1)


def spectral(v, k, seed):
    sc = SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=10, random_state=seed,
                            assign_labels="kmeans", n_init=10)
    return sc.fit_predict(v), sc.affinity_matrix_


def eigengap(aff, k):
    from scipy.sparse.csgraph import laplacian
    a = 0.5 * (aff + aff.T)
    lap = laplacian(a, normed=True).toarray()
    ev = np.sort(np.linalg.eigvalsh(np.eye(a.shape[0]) - lap))[::-1]
    return ev[k - 1] - ev[k]


def within(aff, l):
    """Share of the kNN graph's edge weight inside clusters (1 - normalised cut over k)."""
    a = (0.5 * (aff + aff.T)).tocoo()
    return a.data[l[a.row] == l[a.col]].sum() / a.data.sum()


def modularity(aff, l):
    a = (0.5 * (aff + aff.T)).tocoo()
    vol = np.bincount(l[a.row], weights=a.data, minlength=l.max() + 1)
    return within(aff, l) - ((vol / vol.sum()) ** 2).sum()


def silhouette(v, l):
    from sklearn.metrics import silhouette_score
    return silhouette_score(v, l) if len(set(l)) > 1 else -1


def stability(v, k, seed, rounds=3):
    rng = np.random.default_rng(seed)
    n = len(v); m = int(n * 0.8); tot = 0
    for _ in range(rounds):
        a = np.sort(rng.choice(n, m, replace=False)); b = np.sort(rng.choice(n, m, replace=False))
        la, _ = spectral(v[a], k, seed); lb, _ = spectral(v[b], k, seed)
        common = np.intersect1d(a, b)
        tot += ari(la[np.searchsorted(a, common)], lb[np.searchsorted(b, common)])
    return tot / rounds


CANDIDATES = {
    "pdiff": [("pdiff", 1)],
    "mean+pdiff": [("mean", 1), ("pdiff", 1)],
    "default+pdiff": [("mean", .5), ("abs", .5), ("spec", 1), ("cdf", 1), ("sspec", .5), ("pdiff", .5)],
    "default": [("mean", .5), ("abs", .5), ("spec", 1), ("cdf", 1), ("sspec", .5)],
    "default+step": [("mean", .5), ("abs", .5), ("spec", 1), ("cdf", 1), ("sspec", .5), ("step", 1)],
    "step": [("step", 1)],
    "mean": [("mean", 1)],
    "mean+step": [("mean", 1), ("step", 1)],
    "phasefree": [("spec", 1), ("cdf", 1), ("sspec", .5)],
}

if __name__ == "__main__":
    data = sys.argv[1]
    for name in sys.argv[2:]:
        x, y = load(data, name)
        if len(x) > 2000:
            keep = np.random.default_rng(0).choice(len(x), 2000, replace=False)
            x, y = x[keep], y[keep]
        k = len(set(y))
        b = blocks(x)
        raw = x.reshape(len(x), -1)
        from sklearn.cluster import KMeans
        rk = nmi(y, KMeans(k, n_init=10, random_state=0).fit_predict(raw))
        rows = []
        labs = {}
        for cname, parts in CANDIDATES.items():
            v = weigh([(b[p], w) for p, w in parts])
            l, aff = spectral(v, k, 0)
            labs[cname] = l
            rows.append((cname, nmi(y, l), eigengap(aff, k), stability(v, k, 1), within(aff, l), silhouette(v, l), modularity(aff, l)))
        for i, r in enumerate(rows):
            agree = np.mean([ari(labs[r[0]], labs[o]) for o in labs if o != r[0]])
            rows[i] = r + (agree,)
        print(f"## {name} n={len(x)} T={x.shape[1]} f={x.shape[2]} k={k} raw-kmeans {rk:.3f}")
        for r in rows:
            print(f"  {r[0]:14s} nmi {r[1]:.3f}  gap {r[2]:.3f}  stab {r[3]:.3f}  within {r[4]:.3f}  sil {r[5]:.3f}  mod {r[6]:.3f}  agree {r[7]:.3f}")
        sys.stdout.flush()
