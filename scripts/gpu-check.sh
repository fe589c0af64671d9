#!/usr/bin/env bash
# GPU check (not part of CI; run it on a machine with an NVIDIA GPU and driver):
#   scripts/gpu-check.sh                 # EPOCHS=5 BATCHES="32 512" TOL=0.02 by default
# 1. installs the CUDA 13.4 toolkit wheels if missing (scripts/cuda-toolkit.sh), links against
#    the driver's libcuda, builds the trainer with --features cuda;
# 2. fits the bundled ECG5000 for EPOCHS epochs with the same seed on the CPU (fused kernels) and
#    on the GPU (candle's op-by-op CUDA path), for each batch size in BATCHES;
# 3. prints per epoch the training loss of both and their relative difference, seconds per epoch
#    and the clustering scores; exits 1 if, at the first batch size, an epoch after the first
#    differs by more than TOL (relative): same data, same initial weights, same noise, so only
#    float rounding (fused vs op-by-op kernels, cuBLAS reductions) may separate them.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_LINK_LIBS=1 CUDA_WHEELS_DIR="${CUDA_WHEELS_DIR:-$PWD/target/cuda-wheels-link}" . scripts/cuda-toolkit.sh
command -v nvidia-smi >/dev/null && nvidia-smi -L
# The driver ships libcuda.so.1; the linker wants libcuda.so.
drv=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -n "$drv" ] || { echo "no libcuda.so.1 (NVIDIA driver) on this machine: cannot link a CUDA binary" >&2; exit 1; }
ln -sf "$drv" "$CUDA_ROOT/lib/libcuda.so"
cargo build --release -p trainer --features cuda --target-dir target/cuda-build
t=target/cuda-build/release/trainer
epochs=${EPOCHS:-5}
batches=${BATCHES:-32 512}
out=${GPU_CHECK_OUT:-target/gpu-check}
mkdir -p "$out"
for b in $batches; do
    for dev in cpu cuda; do
        echo "fit: $dev, batch $b, $epochs epochs" >&2
        "$t" fit --out "$out/$dev-b$b" --device "$dev" --epochs "$epochs" --batch-size "$b" --seed 0 --no-plots --quiet \
            > "$out/$dev-b$b.log" 2>&1 || { cat "$out/$dev-b$b.log" >&2; exit 1; }
    done
done
python3 - "$out" "${TOL:-0.02}" $batches <<'PY'
import csv, json, sys
out, tol, batches = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
ok = True
for i, b in enumerate(batches):
    logs = {d: list(csv.DictReader(open(f"{out}/{d}-b{b}/training_log.csv"))) for d in ("cpu", "cuda")}
    print(f"\n### batch {b}\n\n| epoch | CPU loss | GPU loss | rel. diff | CPU s | GPU s |\n|---|---|---|---|---|---|")
    for c, g in zip(logs["cpu"], logs["cuda"]):
        lc, lg = float(c["loss"]), float(g["loss"])
        rel = abs(lc - lg) / max(abs(lc), 1e-12)
        if i == 0 and int(c["epoch"]) > 1 and rel > tol:
            ok = False
        print(f"| {c['epoch']} | {lc:.6f} | {lg:.6f} | {rel:.2e} | {float(c['seconds']):.2f} | {float(g['seconds']):.2f} |")
    for d in ("cpu", "cuda"):
        m = json.load(open(f"{out}/{d}-b{b}/metrics.json"))
        h = m.get("vrae_holdout") or {}
        print(f"{d}: held-out ARI {h.get('ari', float('nan')):.3f} NMI {h.get('nmi', float('nan')):.3f}, "
              f"{m['seconds_per_epoch']:.2f} s/epoch (median)")
print("\nloss agreement:", "ok" if ok else f"FAILED (an epoch after the first differs by more than {tol})")
sys.exit(0 if ok else 1)
PY
