#!/usr/bin/env bash
# CUDA toolkit from PyPI (no system CUDA, no driver needed to compile): installs nvcc and the
# headers and libraries candle's `cuda` feature builds against into one folder, and exports what
# candle-kernels and cudarc read. Source it:
#
#   . scripts/cuda-toolkit.sh            # then: cargo check -p trainer --features cuda
#
# CUDA 13.4: cudarc 0.19.10 (candle 0.11.1) accepts at most 13.4; the CUDA 12 wheels ship no nvcc.
# All wheels go in ONE pip call (separate calls into one --target skip the shared nvidia/cu13
# folder). CCCL numbers its own versions. See ../shared/RECIPES.md, "CUDA toolkit from PyPI".
# Linking a binary also needs the driver's libcuda.so, which no wheel has: on a machine without
# an NVIDIA driver only `cargo check` / `cargo build --lib` can succeed.
# Sourced: no `set -e` here (it would change the caller's shell); failures return 1.
_cuda_dir="${CUDA_WHEELS_DIR:-$PWD/target/cuda-wheels}"
_cuda_root="$_cuda_dir/nvidia/cu13"
# CUDA_LINK_LIBS=1 adds cuBLAS and cuRAND (~0.6 GB), which only linking a binary needs; a folder
# installed without them is not topped up (one pip call per folder), so use another
# CUDA_WHEELS_DIR for it.
_link_wheels=""
[ -z "${CUDA_LINK_LIBS:-}" ] || _link_wheels='nvidia-cublas==13.4.0.1 nvidia-curand==10.4.2.51'

if [ ! -x "$_cuda_root/bin/nvcc" ]; then
    echo "installing the CUDA 13.4 toolkit wheels from PyPI into $_cuda_dir" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$_cuda_dir" \
        nvidia-cuda-nvcc==13.4.92 nvidia-cuda-runtime==13.4.92 nvidia-cuda-crt==13.4.92 \
        nvidia-nvvm==13.4.92 nvidia-cuda-nvrtc==13.4.92 nvidia-cuda-cccl==13.3.5.0.6 \
        ${_link_wheels} || return 1 2>/dev/null || exit 1
fi
[ -x "$_cuda_root/bin/nvcc" ] || { echo "no nvcc in $_cuda_root/bin after installing the wheels" >&2; return 1 2>/dev/null || exit 1; }
# The wheels ship versioned sonames only; the linker looks for the unversioned names.
for _lib in "$_cuda_root"/lib/lib*.so.*; do
    [ -e "$_lib" ] || continue
    _base="${_lib%%.so.*}.so"
    [ -e "$_base" ] || ln -s "$(basename "$_lib")" "$_base"
done
export CUDA_ROOT="$_cuda_root" CUDA_PATH="$_cuda_root"
export PATH="$_cuda_root/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LD_LIBRARY_PATH="$_cuda_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L $_cuda_root/lib"
