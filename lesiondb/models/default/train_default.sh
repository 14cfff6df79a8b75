#!/usr/bin/env bash
# The exact recipe of the default lesion encoder shipped in lesiondb/models/default/.
#
#   bash lesiondb/models/default/train_default.sh            # WORK=/tmp/lesiondb-default-model
#   WORK=/scratch/x THREADS=2 bash lesiondb/models/default/train_default.sh
#
# 1. a synthetic training cohort (seed 11) and a held-out one (seed 202), with images;
# 2. `lesiondb train` with train_config.json, seed 0, deterministic, on THREADS CPU threads;
#    the held-out cohort's metrics against both baselines go into the model card.
# Same thread count and CPU type → the same weights (model id) as the shipped model.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${WORK:-/tmp/lesiondb-default-model}"
OUT="${OUT:-$WORK/model}"
THREADS="${THREADS:-2}"
LESIONDB="${LESIONDB:-lesiondb}"
mkdir -p "$WORK"
$LESIONDB --no-progress synth "$WORK/cohort-train" --patients 400 --seed 11 --workers "$THREADS" --force
$LESIONDB --no-progress synth "$WORK/cohort-val" --patients 120 --seed 202 --workers "$THREADS" --force
$LESIONDB --data-dir "$WORK/data" train "$WORK/cohort-train" --config "$HERE/train_config.json" \
    --seed 0 --deterministic --threads "$THREADS" --val-cohort "$WORK/cohort-val" --out "$OUT" --json
