#!/usr/bin/env bash
# Runs on the GPU machine, from inside the bundle made by build-bundle.sh: lists the OpenCL devices, checks
# the numerics against the Double reference, tunes CLBlast's GEMMs for the training shapes (bounded), and
# benchmarks training and inference, writing everything to results/.
#
#   ./run-on-gpu.sh [DEVICE_INDEX] [TUNE_SECONDS]      # default: the first GPU; 120 s of tuning (0: none)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export HRTRAIN_CACHE_DIR="$here/cache"
device=(); [ -n "${1:-}" ] && device=(--device "$1")
tune=${2:-120}
mkdir -p "$here/results"
cd "$here/results"
{ uname -a; nvidia-smi 2>/dev/null || true; } > machine.txt
"$here/hrtrain" devices | tee devices.txt
"$here/hrtrain" devices --json > devices.json
"$here/hrtrain" verify "${device[@]}" | tee verify.txt
"$here/hrtrain" bench "${device[@]}" --steps 100 --ceiling-size 8192 | tee bench-untuned.txt
"$here/hrtrain" bench "${device[@]}" --steps 100 --ceiling-size 8192 --json > bench-untuned.json
if [ "$tune" != 0 ]; then
  "$here/hrtrain" tune "${device[@]}" --budget "$tune" 2>&1 | tee tune.txt
  "$here/hrtrain" bench "${device[@]}" --steps 100 --ceiling-size 8192 | tee bench-tuned.txt
  "$here/hrtrain" bench "${device[@]}" --steps 100 --ceiling-size 8192 --json > bench-tuned.json
  "$here/hrtrain" verify "${device[@]}" > verify-tuned.txt
fi
echo "results in $here/results"
