#!/usr/bin/env bash
# Runs every test. Installs what the tests need but Rust itself, once: the Cortex-M target and
# QEMU (for the firmware test), onnxruntime's shared library and the `onnx` checker from PyPI
# (into target/pydeps); then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -q '^thumbv7em-none-eabihf$' || rustup target add thumbv7em-none-eabihf
if ! command -v qemu-system-arm >/dev/null; then
    echo "installing qemu-system-arm (Debian)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq qemu-system-arm binutils-arm-none-eabi
fi

pydeps="${PYDEPS_DIR:-$PWD/target/pydeps}"
ort_lib="$pydeps/onnxruntime/capi/libonnxruntime.so.1.32.0"
if [ ! -f "$ort_lib" ] || [ ! -d "$pydeps/onnx" ]; then
    echo "installing onnxruntime 1.32.0 and onnx from PyPI into $pydeps"
    python3 -m pip install --quiet --disable-pip-version-check --target "$pydeps" onnxruntime==1.32.0 onnx==1.23.2
fi
export ORT_DYLIB_PATH="$ort_lib"
export ONNX_PYTHONPATH="$pydeps"

cargo test --release --workspace "$@"
