#!/usr/bin/env bash
# Runs every test. Installs what the tests need but Rust itself, once: the Cortex-M and ARM Linux
# targets, QEMU and the ARM cross linkers (firmware and gateway tests), headless Chromium (the
# report-rendering test), onnxruntime's shared library and the `onnx` checker from PyPI (into
# target/pydeps); then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

for t in thumbv7em-none-eabihf aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    rustup target list --installed | grep -q "^$t\$" || rustup target add "$t"
done
if ! command -v qemu-system-arm >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null \
    || ! command -v chromium >/dev/null; then
    echo "installing QEMU, the ARM Linux cross toolchains and Chromium (Debian)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq qemu-system-arm qemu-user binutils-arm-none-eabi \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
    $sudo apt-get install -y -qq --no-install-recommends chromium
fi
# The report test must not skip itself when Chromium is meant to be here.
export REQUIRE_CHROMIUM=1

pydeps="${PYDEPS_DIR:-$PWD/target/pydeps}"
ort_lib="$pydeps/onnxruntime/capi/libonnxruntime.so.1.32.0"
if [ ! -f "$ort_lib" ] || [ ! -d "$pydeps/onnx" ]; then
    echo "installing onnxruntime 1.32.0 and onnx from PyPI into $pydeps"
    python3 -m pip install --quiet --disable-pip-version-check --target "$pydeps" onnxruntime==1.32.0 onnx==1.23.2
fi
export ORT_DYLIB_PATH="$ort_lib"
export ONNX_PYTHONPATH="$pydeps"

cargo test --release --workspace "$@"
