"""Writes the three generated classics of the quality suite, seeded, as UCR `.tsv` files.

    python3 bench/synthetic_sets.py OUT_DIR [--seed 0]

writes OUT_DIR/{CBF,SyntheticControl,TwoPatterns}/<set>_{TRAIN,TEST}.tsv (label, then values,
tab-separated) with the UCR archive's sizes. Standard library only (the harness needs no numpy).
Each generator follows its published definition; where the paper leaves a range open, the
choice is said beside it.

* Cylinder-Bell-Funnel (Saito 1994, as in the UCR archive): t = 1..128,
  a ~ U{16..32}, b - a ~ U{32..96}, eta, eps(t) ~ N(0, 1);
  cylinder (6 + eta) 1[a,b](t) + eps(t); bell (6 + eta) 1[a,b](t) (t - a) / (b - a) + eps(t);
  funnel (6 + eta) 1[a,b](t) (b - t) / (b - a) + eps(t). 30 + 900 series.
* Synthetic Control (Alcock and Manolopoulos 1999, after Pham and Chan 1998): t = 1..60,
  m = 30, s = 2, r(t) ~ U[-3, 3]; normal m + r s; cyclic m + r s + a sin(2 pi t / T),
  a, T ~ U[10, 15]; increasing / decreasing trend m + r s +- g t, g ~ U[0.2, 0.5];
  upward / downward shift m + r s +- k 1[t >= t3], k ~ U[7.5, 20], t3 ~ U[n/3, 2n/3].
  100 per class, 300 + 300 series.
* Two Patterns (Geurts 2001): t = 1..128, background N(0, 1); each series carries two
  patterns in order, each an upward step (-5 then +5, "U") or a downward step (+5 then -5, "D");
  classes UU, UD, DU, DD. Here the first pattern starts in the first half and the second in the
  second half, each of length l ~ U{16..32} split at its middle, with the noise on top.
  1000 + 4000 series.
"""
import argparse
import math
import os
import random


def cbf(rng, cls):
    a = rng.randint(16, 32)
    b = a + rng.randint(32, 96)
    eta = rng.gauss(0, 1)
    out = []
    for t in range(1, 129):
        inside = 1.0 if a <= t <= b else 0.0
        shape = (1.0, (t - a) / (b - a), (b - t) / (b - a))[cls]
        out.append((6 + eta) * inside * shape + rng.gauss(0, 1))
    return out


def synthetic_control(rng, cls):
    n, m, s = 60, 30.0, 2.0
    a, period = rng.uniform(10, 15), rng.uniform(10, 15)
    g = rng.uniform(0.2, 0.5)
    k, t3 = rng.uniform(7.5, 20), rng.uniform(n / 3, 2 * n / 3)
    out = []
    for t in range(1, n + 1):
        y = m + rng.uniform(-3, 3) * s
        y += (0.0, a * math.sin(2 * math.pi * t / period), g * t, -g * t,
              k * (t >= t3), -k * (t >= t3))[cls]
        out.append(y)
    return out


def two_patterns(rng, cls):
    n = 128
    x = [rng.gauss(0, 1) for _ in range(n)]
    for half, up in ((0, cls in (0, 1)), (1, cls in (0, 2))):
        length = rng.randint(16, 32)
        start = half * (n // 2) + rng.randint(0, n // 2 - length)
        for j in range(length):
            first = j < length // 2
            x[start + j] += (-5.0 if first else 5.0) if up else (5.0 if first else -5.0)
    return x


SETS = {
    # name: (generator, classes, train size, test size)
    "CBF": (cbf, 3, 30, 900),
    "SyntheticControl": (synthetic_control, 6, 300, 300),
    "TwoPatterns": (two_patterns, 4, 1000, 4000),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for name, (gen, classes, n_train, n_test) in SETS.items():
        rng = random.Random(f"{name}-{args.seed}")
        rows = [(i % classes, gen(rng, i % classes)) for i in range(n_train + n_test)]
        rng.shuffle(rows)
        os.makedirs(os.path.join(args.out, name), exist_ok=True)
        for part, chunk in (("TRAIN", rows[:n_train]), ("TEST", rows[n_train:])):
            path = os.path.join(args.out, name, f"{name}_{part}.tsv")
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                for label, x in chunk:
                    f.write(str(label + 1) + "\t" + "\t".join(f"{v:.6f}" for v in x) + "\n")
            os.replace(tmp, path)


if __name__ == "__main__":
    main()
