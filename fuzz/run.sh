#!/usr/bin/env bash
# Runs every fuzz target for N executions each (default 100000) with cargo-fuzz on nightly.
#
#   fuzz/run.sh [N] [TARGET...]
#
# Starts from the committed seeds (fuzz/seeds/<target>), keeps the grown corpus in
# fuzz/corpus/<target> (ignored by git) and stops at the first crash, panic, timeout (10 s per
# input) or out-of-memory (2 GiB); libFuzzer then writes the input to
# fuzz/libfuzzer/artifacts/<target>/. Copy it to fuzz/regressions/<target>/ so that
# `cargo test -p fuzz` replays it forever. Prints one summary line per target.
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-100000}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(bundle encoder_stream data_loaders model_files checkpoint fleet_rows)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# Address sanitizer for the runtime (it has unsafe code), plain coverage-guided runs elsewhere:
# the other targets are safe Rust, where ASan only slows the search down.
# FUZZ_SANITIZER=none|address overrides that for every target (CI's smoke run: one build).
# FUZZ_SEED=N makes libFuzzer's choices repeatable (CI's smoke run); unset, each run differs.
sanitizer() {
  if [ -n "${FUZZ_SANITIZER:-}" ]; then echo "$FUZZ_SANITIZER"; return; fi
  case $1 in bundle|encoder_stream) echo address ;; *) echo none ;; esac
}
declare -a SUMMARY
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  start=$(date +%s)
  if cargo +nightly fuzz run --fuzz-dir libfuzzer --sanitizer "$(sanitizer "$t")" -O "$t" "corpus/$t" "seeds/$t" -- \
      -runs="$N" -seed="${FUZZ_SEED:-0}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  SUMMARY+=("$(printf '%-15s %-6s %10s execs  %-10s %4ss' "$t" "$status" "${execs:-?}" "${cov:-}" "$(( $(date +%s) - start ))")")
  if [ "$status" != ok ]; then
    tail -40 "$log"
    printf '%s\n' "${SUMMARY[@]}"
    exit 1
  fi
  rm -f "$log"
done
printf '%s\n' "${SUMMARY[@]}"
