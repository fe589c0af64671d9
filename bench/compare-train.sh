#!/usr/bin/env bash
# Side-by-side training speed: our trainer vs the PyTorch reference, same model, data, batch and
# optimiser, on this machine. Needs PyTorch: installs torch (CPU use only) from PyPI into
# target/torch once (about 3 GB with its CUDA libraries).
#
# Shared machines drift by 20% within seconds, so each configuration (cell x threads) runs ROUNDS
# times, ours and PyTorch's alternating, and the table reports the median of each side and the
# lowest and highest ratio of a round's pair.
# usage: bench/compare-train.sh [EPOCHS [ROUNDS]]   (defaults 3 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-3}"
rounds="${2:-3}"
torchdir="${TORCH_DIR:-$PWD/target/torch}"
if ! PYTHONPATH="$torchdir" python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$torchdir" torch==2.15.0 numpy
fi
cargo bench -q -p trainer --bench train_epoch --no-run
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
    for cell in lstm gru; do
        for t in 1 2; do
            echo "round $round/$rounds: $cell, $t thread(s)"
            cargo bench -q -p trainer --bench train_epoch -- "$epochs" "$cell" "$t" | grep '^csv,' | sed "s/\$/,$round/" >> "$out"
            PYTHONPATH="$torchdir" python3 bench/vrae_torch.py "$epochs" "$cell" "$t" | grep '^csv,' | sed "s/\$/,$round/" >> "$out"
        done
    done
done
echo
echo "ms per batch, median of $rounds rounds of $epochs epochs each (ours / PyTorch: lower is faster)"
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.strip().split(",") for l in open(sys.argv[1]) if l.strip()]
ms = {}
for _, who, cell, t, _, msb, rnd in rows:
    ms.setdefault((cell, t), {}).setdefault(who, {})[rnd] = float(msb)
print(f"{'cell':<5} {'threads':>7} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} {'per-round ratios':>18}")
for (cell, t), side in ms.items():
    ours, torch = side["rust"], side["torch"]
    per = sorted(ours[r] / torch[r] for r in ours if r in torch)
    mo, mt = statistics.median(ours.values()), statistics.median(torch.values())
    print(f"{cell:<5} {t:>7} {mo:>9.1f} {mt:>9.1f} {mo / mt:>6.2f} {per[0]:>8.2f} - {per[-1]:.2f}")
PY
