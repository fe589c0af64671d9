#!/usr/bin/env bash
# Side-by-side training speed: our trainer vs the PyTorch reference, same model, data, batch and
# optimiser, one after the other on this machine. Needs PyTorch: installs torch (CPU use only)
# from PyPI into target/torch once (about 3 GB with its CUDA libraries).
# usage: bench/compare-train.sh [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-3}"
torchdir="${TORCH_DIR:-$PWD/target/torch}"
if ! PYTHONPATH="$torchdir" python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$torchdir" torch==2.15.0 numpy
fi
out=$(mktemp)
cargo bench -q -p trainer --bench train_epoch -- "$epochs" | tee -a "$out"
PYTHONPATH="$torchdir" python3 bench/vrae_torch.py "$epochs" | tee -a "$out"
echo
echo "ratio ours / PyTorch (lower is faster)"
printf "%-5s %7s %10s %10s %7s\n" cell threads "ours ms" "torch ms" ratio
for cell in lstm gru; do
    for t in 1 2; do
        r=$(grep "^csv,rust,$cell,$t," "$out" | cut -d, -f6)
        p=$(grep "^csv,torch,$cell,$t," "$out" | cut -d, -f6)
        awk -v c="$cell" -v t="$t" -v r="$r" -v p="$p" 'BEGIN { printf "%-5s %7s %10s %10s %7.2f\n", c, t, r, p, r / p }'
    done
done
rm -f "$out"
