#!/usr/bin/env bash
# The main job in one command, on a fresh Debian machine: installs the system packages, builds hrtrain
# (release), generates a W+ -> mu nu sample, trains the thesis network on it, evaluates it on the held-out
# test events against the raw recoils, and writes the HTML report.
#
#   scripts/main-job.sh                       # 500,000 events, 20 epochs (a few minutes on 2 CPU cores)
#   EVENTS=3625136 EPOCHS=50 scripts/main-job.sh   # the thesis' sample size
#
# Settings (environment): EVENTS, EPOCHS, OUT (output folder, default out/), DEVICE (OpenCL device index),
# SEED. Everything lands in $OUT: the sample (CSV), model, checkpoint, metrics, evaluation and report.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-500000}
EPOCHS=${EPOCHS:-20}
OUT=${OUT:-out}
SEED=${SEED:-42}
device=(); [ -n "${DEVICE:-}" ] && device=(--device "$DEVICE")

bash scripts/install-system-packages.sh
swift build -c release
hrtrain=.build/release/hrtrain
mkdir -p "$OUT"

$hrtrain devices
# The thesis' proportions: 2,275,902 training and 1,349,234 test events out of 3,625,136.
$hrtrain generate --events "$EVENTS" --seed "$SEED" --split --output "$OUT/events.csv" --test-output "$OUT/events-test.csv"
# The thesis configuration: 3 x Dense(256) + tanh + batch norm, Adam lr 1e-3, batch 4000, 20 % validation.
$hrtrain train "${device[@]}" --data "$OUT/events.csv" --model "$OUT/model.safetensors" --metrics "$OUT/metrics.jsonl" \
  --epochs "$EPOCHS" --seed "$SEED" --reduce-lr-patience 3 --reduce-lr-factor 0.5
$hrtrain evaluate "${device[@]}" --model "$OUT/model.safetensors" --data "$OUT/events-test.csv" \
  --compare hr_all_x,hr_all_y --compare hr_charged_x,hr_charged_y --compare hr_neutral_x,hr_neutral_y | tee "$OUT/evaluation.txt"
$hrtrain report "${device[@]}" --model "$OUT/model.safetensors" --data "$OUT/events-test.csv" --metrics "$OUT/metrics.jsonl" \
  --output "$OUT/report.html"
echo "done: open $OUT/report.html"
