#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Sources/hrtrain-fuzz, with -sanitize=fuzzer,address) in .build/fuzz and
# runs each for a given time or number of executions, starting from the seed corpora in Fuzz/corpus/<target>.
#   Fuzz/run.sh [SECONDS] [TARGET...]       # default: 60 seconds each, targets csv npy hdf5 model
#   RUNS=1000000 Fuzz/run.sh 0 csv          # a fixed number of executions instead of a time
#   SINGLE_BUILD=1 Fuzz/run.sh 8            # one (ASan) build for all targets: the CI smoke run
# A crash leaves its input in .build/fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(csv npy hdf5 model); fi

# Two builds: with AddressSanitizer for the readers written in Swift (csv, npy, model), and without it for
# hdf5, whose reader forks a child per file (IsolatedReader), which is very slow under ASan's shadow memory.
build() {
  HRTRAIN_FUZZ=1 swift build --build-path ".build/$1" -c debug --product hrtrain-fuzz \
    -Xswiftc -parse-as-library -Xswiftc "$2" 2>&1 | grep -v "Cannot export local symbol" | tail -1
}
# SINGLE_BUILD=1 (the CI smoke run) builds only the ASan binary and runs hdf5 with it too, more slowly.
for target in "${targets[@]}"; do
  if [ "$target" = hdf5 ] && [ -z "${SINGLE_BUILD:-}" ]; then need_plain=1; else need_asan=1; fi
done
if [ -n "${need_asan:-}" ]; then build fuzz -sanitize=fuzzer,address; fi
if [ -n "${need_plain:-}" ]; then build fuzz-plain -sanitize=fuzzer; fi

status=0
for target in "${targets[@]}"; do
  binary=.build/fuzz/debug/hrtrain-fuzz
  if [ "$target" = hdf5 ] && [ -z "${SINGLE_BUILD:-}" ]; then binary=.build/fuzz-plain/debug/hrtrain-fuzz; fi
  corpus=.build/fuzz/corpus/$target
  artifacts=.build/fuzz/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  limits=(-rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=20 -print_final_stats=1)
  if [ -n "${RUNS:-}" ]; then limits+=(-runs="$RUNS"); else limits+=(-max_total_time="$seconds"); fi
  echo "== fuzz $target: ${RUNS:+$RUNS runs}${RUNS:-$seconds s}"
  # Sizes above 512 MiB are refused by the readers' size limit, well inside libFuzzer's memory limits.
  if ! LSAN_OPTIONS=suppressions=Fuzz/lsan.supp HRTRAIN_FUZZ_TARGET=$target HRTRAIN_MEMORY_LIMIT=536870912 \
      HRTRAIN_READER_TIMEOUT=5 "$binary" "${limits[@]}" \
      -artifact_prefix="$artifacts/" "$corpus" "Fuzz/corpus/$target" 2>&1 | tee ".build/fuzz/$target.log" \
      | grep -E '^(==|#[0-9]+ *DONE|stat::number_of_executed_units|.*ERROR|.*SUMMARY)'; then
    :
  fi
  if ! grep -q 'Done [0-9]* runs' ".build/fuzz/$target.log"; then
    echo "fuzz $target: FAILED (see .build/fuzz/$target.log and $artifacts)"
    status=1
  fi
done
exit $status
