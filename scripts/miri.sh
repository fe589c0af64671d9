#!/usr/bin/env bash
# The two-core hand-over of runtime::duo under Miri (nightly): its data-race detector and
# weak-memory emulation check that every read of a published half-state is ordered after its
# write. A small model (runtime/src/duo.rs, `handover_is_race_free`); about 2 minutes, plus
# building Miri's sysroot the first time.
set -euo pipefail
cd "$(dirname "$0")/../runtime"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
rustup component add miri rust-src --toolchain nightly
# Two CPUs, so DuoEncoder splits (Miri reports one by default).
MIRIFLAGS="-Zmiri-num-cpus=2" cargo +nightly miri test --features duo --lib duo::tests::handover_is_race_free
