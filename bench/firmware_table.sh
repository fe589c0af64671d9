#!/usr/bin/env bash
# Firmware cost of the shipped ECG5000 model, f32 weights against int8 (`trainer export
# --weights int8`), on the Cortex-M4F (QEMU mps2-an386) and the Cortex-M33 (mps2-an505):
# instructions per 140-sample window (QEMU `-icount shift=0`, decision included), `.text`,
# `.rodata` (the model lives there) and the stack's high-water mark. Prints a markdown table.
#
#   bench/firmware_table.sh
#
# Needs what the firmware tests need (scripts/test.sh installs it): the thumbv7em and thumbv8m
# targets, qemu-system-arm, binutils-arm-none-eabi.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p trainer
target/release/trainer export models/ecg5000 --out "$work/encoder.onnx" --bundle "$work/int8.bundle" --weights int8 >/dev/null
echo "| board | weights | bundle bytes | instructions / window | .text | .rodata | stack high water |"
echo "|---|---|---|---|---|---|---|"
for board in m4f:thumbv7em-none-eabihf:mps2-an386:cortex-m4 m33:thumbv8m.main-none-eabihf:mps2-an505:cortex-m33; do
    IFS=: read -r name triple machine cpu <<<"$board"
    for weights in f32 int8; do
        bundle=$PWD/models/ecg5000/model.bundle
        [ "$weights" = int8 ] && bundle=$work/int8.bundle
        dir=firmware-sim/mcu/target/table-$name-$weights
        (cd firmware-sim/mcu && FIRMWARE_BUNDLE=$bundle cargo build --release -q --target "$triple" --target-dir "target/table-$name-$weights")
        elf=$dir/$triple/release/firmware-mcu
        out=$(timeout 300 qemu-system-arm -M "$machine" -cpu "$cpu" -icount shift=0 -nographic \
            -semihosting-config enable=on,target=native -kernel "$elf")
        grep -q "mismatches=0" <<<"$out" || { echo "$name $weights: the firmware disagrees with the host:" >&2; echo "$out" >&2; exit 1; }
        instr=$(sed -n 's/^instructions_per_window=\([0-9]*\).*/\1/p' <<<"$out")
        stack=$(sed -n 's/^stack_high_water_bytes=//p' <<<"$out")
        sections=$(arm-none-eabi-size -A "$elf")
        text=$(awk '$1 == ".text" { print $2 }' <<<"$sections")
        rodata=$(awk '$1 == ".rodata" { print $2 }' <<<"$sections")
        printf '| %s | %s | %s | %s M | %s | %s | %s |\n' "$name" "$weights" "$(stat -c %s "$bundle")" \
            "$(awk "BEGIN { printf \"%.2f\", $instr / 1e6 }")" "$text" "$rodata" "$stack"
    done
done
