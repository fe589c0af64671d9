#!/usr/bin/env bash
# Runs every test. Installs what the tests need but Rust itself, once: the Cortex-M and ARM Linux
# targets, QEMU and the ARM cross linkers (firmware and gateway tests), headless Chromium (the
# report-rendering test), mosquitto (the `edge serve` tests), protoc (the trainer's `onnx-import`
# feature: candle-onnx compiles onnx.proto), onnxruntime's shared library and
# the `onnx` checker from PyPI (into target/pydeps); starts mosquitto on a free local port; then
# `cargo test`, then the Python package's wheel and its pytest suite (PySpark in local mode).
set -euo pipefail
cd "$(dirname "$0")/.."

for t in thumbv7em-none-eabihf thumbv8m.main-none-eabihf thumbv6m-none-eabi aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    rustup target list --installed | grep -q "^$t\$" || rustup target add "$t"
done
if ! command -v qemu-system-arm >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v arm-linux-gnueabihf-gcc >/dev/null \
    || ! command -v chromium >/dev/null || ! { command -v mosquitto || test -x /usr/sbin/mosquitto; } >/dev/null \
    || ! command -v protoc >/dev/null; then
    echo "installing QEMU, the ARM Linux cross toolchains, Chromium, mosquitto and protoc (Debian)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq qemu-system-arm qemu-user binutils-arm-none-eabi \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
    $sudo apt-get install -y -qq --no-install-recommends chromium mosquitto protobuf-compiler
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

# An MQTT broker for the `edge serve` tests: mosquitto on a free 127.0.0.1 port, stopped on exit.
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
mqtt_dir="$(mktemp -d)"
mqtt_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$mqtt_dir/mosquitto.conf" <<EOF
listener $mqtt_port 127.0.0.1
allow_anonymous true
user root
max_queued_messages 100000
log_dest file $mqtt_dir/mosquitto.log
EOF
"$mosquitto_bin" -c "$mqtt_dir/mosquitto.conf" 2>>"$mqtt_dir/mosquitto.log" &
mqtt_pid=$!
trap 'kill "$mqtt_pid" 2>/dev/null; wait "$mqtt_pid" 2>/dev/null; rm -rf "$mqtt_dir"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null && break
    kill -0 "$mqtt_pid" 2>/dev/null || { echo "mosquitto did not start:"; cat "$mqtt_dir/mosquitto.log"; exit 1; }
    sleep 0.1
done
export EDGE_TEST_MQTT="127.0.0.1:$mqtt_port" REQUIRE_MOSQUITTO=1
echo "mosquitto for the tests on $EDGE_TEST_MQTT"

# TEST_PACKAGES (e.g. "-p edge") narrows the run while working on one crate. The opt-in
# features are tested too: `trainer import` (onnx-import) and edge's `--engine tract`.
features=()
case "${TEST_PACKAGES:-all}" in
    all) features=(--features trainer/onnx-import,tests/onnx-import,edge/tract) ;;
    *) case "$TEST_PACKAGES" in *"-p tests"* | *trainer*) features+=(trainer/onnx-import) ;; esac
       case "$TEST_PACKAGES" in *"-p tests"*) features+=(tests/onnx-import) ;; esac
       case "$TEST_PACKAGES" in *"-p edge"*) features+=(edge/tract) ;; esac
       if [ ${#features[@]} -gt 0 ]; then features=(--features "$(IFS=,; echo "${features[*]}")"); fi ;;
esac
cargo test --release ${TEST_PACKAGES:---workspace} "${features[@]}" "$@"

# The Python package (python/): its wheel built by maturin into a venv with pyarrow, numpy,
# pandas (PySpark's Arrow UDFs need it), pytest and PySpark (PyPI), then pytest, the Spark tests
# in local mode on the JDK (installed from Debian if missing). TEST_PYTHON=0 skips this.
if [ "${TEST_PYTHON:-1}" != 0 ]; then
    if ! command -v java >/dev/null; then
        echo "installing a JDK for the PySpark tests (Debian)"
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless
    fi
    pyvenv="${PYVENV_DIR:-$PWD/target/pyvenv}"
    pyreqs="maturin==1.16.0 pyarrow==26.0.1 numpy==2.4.6 pandas==2.3.3 pytest==9.2.0 pyspark==4.3.0"
    if [ "$(cat "$pyvenv/.reqs" 2>/dev/null)" != "$pyreqs" ]; then
        echo "installing $pyreqs from PyPI into $pyvenv"
        python3 -m venv "$pyvenv"
        # shellcheck disable=SC2086
        "$pyvenv/bin/pip" install --quiet --disable-pip-version-check $pyreqs
        echo "$pyreqs" > "$pyvenv/.reqs"
    fi
    rm -rf target/wheels
    "$pyvenv/bin/maturin" build --release --quiet -m python/Cargo.toml --out target/wheels
    "$pyvenv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/vrae_edge-*.whl
    # From the repository root, so `vrae_edge` is the installed wheel, not python/'s sources.
    rc=0
    # The edge binary cargo built above, wherever CARGO_TARGET_DIR puts it (CI may share one).
    edge_bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/edge"
    EDGE_BIN="$edge_bin" REQUIRE_SPARK=1 SPARK_LOCAL_IP=127.0.0.1 \
        "$pyvenv/bin/python" -m pytest python/tests -q -p no:cacheprovider || rc=$?
    if [ "$rc" = 5 ]; then
        echo "pytest collected no tests from python/tests: that is a failure, not a pass"
        exit 1
    elif [ "$rc" != 0 ]; then
        echo "pytest failed (exit code $rc)"
        exit "$rc"
    fi
fi
