#!/usr/bin/env bash
# Runs hrtrain's kernels -- both variants (tiled, column-strip), both layer orders -- and CLBlast's GEMMs under
# Oclgrind, a simulated OpenCL device that reports out-of-bounds accesses, data races between work-items,
# uninitialised values, barrier divergence and OpenCL API misuse, and fails on ANY report.
#
#   scripts/oclgrind-check.sh                # the checks (needs .build/debug/hrtrain; the kernel tests too, if
#                                            # the test bundle is built)
#   scripts/oclgrind-check.sh --self-check   # proves the check can fail: a racy and an out-of-bounds kernel
#                                            # (through HRTRAIN_KERNELS_DIR) must each be reported
#
# How: Oclgrind's ICD (/usr/lib/oclgrind/liboclgrind-rt-icd.so, Debian package oclgrind) is registered alone
# in a private vendors folder named by OCL_ICD_VENDORS, so "Oclgrind Simulator" is the only OpenCL device the
# runs see (running the binary under `oclgrind ...`, its LD_PRELOAD mode, aborts inside the allocator).
# Checks: OCLGRIND_DATA_RACES, OCLGRIND_UNIFORM_WRITES (uniform write-write races too), OCLGRIND_CHECK_API,
# OCLGRIND_UNINITIALIZED. Oclgrind reports on stderr and never changes an exit status, so every run writes
# its reports to its own OCLGRIND_LOG file and any non-empty log fails the check.
#
# The kernel tests run without OCLGRIND_UNINITIALIZED: Oclgrind 21.10's uninitialised-value shadow keeps the
# size of a released buffer when its id is reused, so a test that frees buffers and allocates larger ones
# (each shape of a kernel test) gets false reports past the old size (keeping the buffers alive removes
# them). The hrtrain runs above keep their buffers and run with it on.
# Settings (environment): HRTRAIN (binary, default .build/debug/hrtrain).
set -euo pipefail
cd "$(dirname "$0")/.."
hrtrain=${HRTRAIN:-.build/debug/hrtrain}
icd=/usr/lib/oclgrind/liboclgrind-rt-icd.so
[ -f "$icd" ] || { echo "oclgrind-check: $icd not found (install the Debian package oclgrind)" >&2; exit 1; }
[ -x "$hrtrain" ] || { echo "oclgrind-check: $hrtrain not found (run swift build first)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/vendors"
echo "$icd" > "$work/vendors/oclgrind.icd"
export OCL_ICD_VENDORS="$work/vendors" HRTRAIN_CACHE_DIR="$work/cache"
unset OCL_ICD_FILENAMES HRTRAIN_DEVICE HRTRAIN_KERNELS_DIR HRTRAIN_KERNEL_VARIANT
export OCLGRIND_DATA_RACES=1 OCLGRIND_UNIFORM_WRITES=1 OCLGRIND_CHECK_API=1 OCLGRIND_UNINITIALIZED=1
runs=0

# Runs "$@" with its reports in a log of its own; fails (printing the first reports) on any report or on a
# non-zero exit status.
checked() {
  local name=$1
  shift
  runs=$((runs + 1))
  local log="$work/log-$runs.txt" out="$work/out-$runs.txt"
  local status=0 began=$SECONDS
  OCLGRIND_LOG="$log" "$@" > "$out" 2>&1 || status=$?
  if [ -s "$log" ]; then
    echo "oclgrind-check: FAIL: $name: Oclgrind reported $(grep -c '^[A-Z]' "$log") problems:" >&2
    head -60 "$log" >&2
    exit 1
  fi
  if [ "$status" != 0 ]; then
    echo "oclgrind-check: FAIL: $name exited with status $status:" >&2
    tail -40 "$out" >&2
    exit 1
  fi
  echo "  ok   $name ($((SECONDS - began)) s)"
}

# Runs a deliberately broken kernel set and requires Oclgrind to report `expected`.
must_be_reported() {
  local name=$1 expected=$2 kernels=$3
  runs=$((runs + 1))
  local log="$work/log-$runs.txt"
  HRTRAIN_KERNELS_DIR="$kernels" HRTRAIN_KERNEL_VARIANT=tiled OCLGRIND_LOG="$log" \
    "$hrtrain" verify --batch 16 --hidden 8,8 --inputs 5 --fd-probes 0 --steps 1 > /dev/null 2>&1 || true
  if ! grep -q "$expected" "$log" 2>/dev/null; then
    echo "oclgrind-check: SELF-CHECK FAILED: $name was not reported (expected \"$expected\")" >&2
    exit 1
  fi
  echo "  ok   $name reported: $(grep -m1 "$expected" "$log")"
}

# A copy of Kernels/ with `file` changed by the Python expression `edit` (on the text `s`), which must change it.
mutant() {
  local dir=$1 file=$2 edit=$3
  cp -r Kernels "$dir"
  python3 - "$dir/$file" "$edit" <<'EOF'
import sys
path, edit = sys.argv[1], sys.argv[2]
s = open(path).read()
t = eval(edit)
if t == s:
    sys.exit(f"the mutation of {path} changed nothing: {edit}")
open(path, "w").write(t)
EOF
}

device=$("$hrtrain" devices)
if ! grep -q "Oclgrind Simulator" <<< "$device" || [ "$(grep -c '^[0-9]' <<< "$device")" != 1 ]; then
  echo "oclgrind-check: expected the Oclgrind Simulator as the only device, got:" >&2
  echo "$device" >&2
  exit 1
fi

if [ "${1:-}" = "--self-check" ]; then
  echo "oclgrind-check --self-check: broken kernels must be reported"
  # A race: the lane tree of the fused tiled kernels without the barrier between its levels.
  mutant "$work/race" fused.cl \
    "s.replace('        barrier(CLK_LOCAL_MEM_FENCE);\n        if (ly < stride) {', '        if (ly < stride) {', 1)"
  must_be_reported "a missing barrier in lane_sums (fused.cl)" "data race" "$work/race"
  # Out of bounds: Adam without its bound check writes past the parameter buffer (the launch is rounded up).
  mutant "$work/bounds" adam.cl "s.replace('    if (i >= n) return;\n', '', 1)"
  must_be_reported "Adam without its bound check (adam.cl)" "Invalid write" "$work/bounds"
  echo "oclgrind-check --self-check: PASS"
  exit 0
fi

start=$SECONDS
echo "oclgrind-check: every kernel of both variants, and CLBlast's GEMMs, on the Oclgrind Simulator"
# The whole training path: CSV, shuffled row gather, standardisation, two epochs with a partial last batch.
"$hrtrain" generate --events 150 --seed 3 --output "$work/events.csv" > /dev/null 2>&1
for variant in tiled column-strip; do
  for layout in dense-tanh-bn dense-bn-tanh; do
    for profile in keras pytorch; do
      # One training step (forward, loss, backward, Adam, running statistics) and the inference forward; 17
      # and 33 rows, 9/20/7 columns: odd sizes, more than one work-group of columns.
      checked "verify $variant $layout $profile" env HRTRAIN_KERNEL_VARIANT=$variant \
        "$hrtrain" verify --batch 17 --hidden 9,20,7 --inputs 5 --layout $layout --profile $profile \
        --fd-probes 0 --steps 2
    done
  done
  checked "verify $variant, batch of 2 rows" env HRTRAIN_KERNEL_VARIANT=$variant \
    "$hrtrain" verify --batch 2 --hidden 8 --inputs 3 --fd-probes 0 --steps 1
  checked "train $variant (150 events, batch 64)" env HRTRAIN_KERNEL_VARIANT=$variant \
    "$hrtrain" train --data "$work/events.csv" --model "$work/model-$variant.safetensors" --epochs 2 \
    --batch-size 64 --hidden 16,16 --quiet
done
tests=.build/debug/hrtrainPackageTests.xctest
if [ -e "$tests" ]; then
  # The kernel tests: every kernel against the reference on odd shapes with guard regions (the 4000 x 256
  # determinism test is left out: minutes in the simulator, and its kernels are covered on the small shapes).
  checked "kernel and command-count tests" env OCLGRIND_UNINITIALIZED=0 \
    swift test --skip-build --filter 'KernelTests|CommandCountTests' --skip testReductionsAreBitwiseDeterministic
else
  echo "  skip kernel tests: $tests not built (swift build --build-tests)"
fi
echo "oclgrind-check: PASS, $runs runs without a report ($((SECONDS - start)) s)"
