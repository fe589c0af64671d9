#!/usr/bin/env bash
# Clustering-quality harness (not a CI test): fits the default pipeline on the dev suite and
# ECG5000 for several seeds and prints one markdown table per protocol, beside raw k-means and the
# published anchors in bench/anchors.csv.
#
#   bench/quality.sh [SEEDS] [SETS...] [-- extra trainer fit flags]
#   bench/quality.sh 3                       # seeds 0-2, every set
#   bench/quality.sh 1 Coffee Trace -- --cluster-method kmeans
#   RECLUSTER=1 bench/quality.sh 1 -- --cluster-method kmeans   # same trained models, re-clustered
#   REUSE=1 bench/quality.sh 3               # keep runs already in QUALITY_OUT
#
# Protocols: merged TRAIN+TEST, --holdout 0, k = number of classes, scored on all series (every
# set, ECG5000 included); ECG5000 also with the seed notebook's 90/10 split, scored on the held-out
# 10%. Labels only score. Data: ../shared/data/devsuite (DEVSUITE=... to point elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-3}; shift || true
sets=(); extra=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
    sets+=("$1"); shift
done
[ ${#sets[@]} -gt 0 ] || sets=(Trace Coffee ACSF1 PigCVP ECG5000 ECG5000-seed)
dev=${DEVSUITE:-../shared/data/devsuite}
out=${QUALITY_OUT:-target/quality}
mkdir -p "$out"
# TRAINER=path runs another trainer binary (e.g. a copy, while this checkout is rebuilt).
if [ -n "${TRAINER:-}" ]; then
    t=$TRAINER
else
    cargo build --release -q -p trainer
    t=target/release/trainer
fi
files() {
    case $1 in
        ECG5000|ECG5000-seed) echo data/ecg5000/ECG5000_TRAIN.tsv.gz data/ecg5000/ECG5000_TEST.tsv.gz ;;
        ACSF1) echo "$dev/ACSF1/ACSF1_TRAIN.ts.gz $dev/ACSF1/ACSF1_TEST.ts.gz" ;;
        *) echo "$dev/$1/$1_TRAIN.tsv.gz $dev/$1/$1_TEST.tsv.gz" ;;
    esac
}
for set in "${sets[@]}"; do
    holdout=0; [ "$set" = ECG5000-seed ] && holdout=0.1
    for ((s = 0; s < seeds; s++)); do
        dir="$out/$set-s$s"
        # REUSE=1: a run already in the output folder is kept (e.g. after an interrupted harness).
        if [ -n "${REUSE:-}" ] && [ -z "${RECLUSTER:-}" ] && [ -f "$dir/metrics.json" ] && [ -f "$dir.seconds" ]; then
            echo "$set seed $s: kept from an earlier run" >&2
            continue
        fi
        start=$(date +%s.%N)
        # shellcheck disable=SC2046
        if [ -n "${RECLUSTER:-}" ]; then
            args=(--resume "$dir")
        else
            args=(--out "$dir" --holdout $holdout --seed $s)
        fi
        $t fit $(files "$set") "${args[@]}" --no-plots --quiet "${extra[@]}" > "$dir.log" 2>&1 \
            || { echo "fit failed for $set seed $s: see $dir.log" >&2; exit 1; }
        # A re-clustered run keeps the fit time of the run that trained it.
        [ -n "${RECLUSTER:-}" ] || awk "BEGIN { print $(date +%s.%N) - $start }" > "$dir.seconds"
        echo "$set seed $s: $(grep -E 'VRAE device (train|held-out)' "$dir.log" | tr -s ' ' | paste -sd ';') ($(cat "$dir.seconds") s)" >&2
    done
done
python3 bench/quality_table.py "$out" "$seeds" "${sets[@]}"
