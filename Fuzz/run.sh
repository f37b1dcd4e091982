#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Sources/hrtrain-fuzz, with -sanitize=fuzzer,address) in .build/fuzz and
# runs each for a given time or number of executions, starting from the seed corpora in Fuzz/corpus/<target>.
#   Fuzz/run.sh [SECONDS] [TARGET...]       # default: 60 seconds each, targets csv npy hdf5 model
#   RUNS=1000000 Fuzz/run.sh 0 csv          # a fixed number of executions instead of a time
#   SINGLE_BUILD=1 Fuzz/run.sh 8            # the CI smoke run (one ASan build is all there is now; kept)
# A crash leaves its input in .build/fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(csv npy hdf5 model); fi

# One build, with AddressSanitizer, for every target. (hdf5 used to need a second build without ASan: its
# reader forked a child per input; the target now keeps one server child, forked by a small manager process.)
HRTRAIN_FUZZ=1 swift build --build-path .build/fuzz -c debug --product hrtrain-fuzz \
  -Xswiftc -parse-as-library -Xswiftc -sanitize=fuzzer,address 2>&1 | grep -v "Cannot export local symbol" | tail -1

status=0
for target in "${targets[@]}"; do
  binary=.build/fuzz/debug/hrtrain-fuzz
  corpus=.build/fuzz/corpus/$target
  artifacts=.build/fuzz/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  limits=(-rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=20 -print_final_stats=1)
  # Sizes above 512 MiB are refused by the readers' size limit, well inside libFuzzer's memory limits.
  environment=(HRTRAIN_MEMORY_LIMIT=536870912 HRTRAIN_READER_TIMEOUT=5)
  if [ "$target" = hdf5 ]; then
    # hdf5: a 4 MiB size limit (larger tables are refused by the same check, and the reads stay fast); 1 s for
    # the production reader's child; libhdf5's crash reports in the server child go to a log; no per-input
    # leak check (libhdf5's free lists keep memory across inputs, and LSan's scan after every input made the
    # target several times slower; the leak check at exit still runs, with Fuzz/lsan.supp); sanitizer reports
    # unsymbolized (symbolizing each of libhdf5's crash reports in the server child took a fifth of the run;
    # rerun a saved artifact with ASAN_OPTIONS=symbolize=1 for function names).
    environment=(HRTRAIN_MEMORY_LIMIT=4194304 HRTRAIN_READER_TIMEOUT=1
      HRTRAIN_FUZZ_CHILD_STDERR=.build/fuzz/hdf5-children.log ASAN_OPTIONS="${ASAN_OPTIONS:-symbolize=0}")
    limits+=(-detect_leaks=0)
  fi
  if [ -n "${RUNS:-}" ]; then limits+=(-runs="$RUNS"); else limits+=(-max_total_time="$seconds"); fi
  echo "== fuzz $target: ${RUNS:+$RUNS runs}${RUNS:-$seconds s}"
  if ! env LSAN_OPTIONS=suppressions=Fuzz/lsan.supp HRTRAIN_FUZZ_TARGET="$target" "${environment[@]}" \
      "$binary" "${limits[@]}" \
      -artifact_prefix="$artifacts/" "$corpus" "Fuzz/corpus/$target" 2>&1 | tee ".build/fuzz/$target.log" \
      | grep -E '^(==|#[0-9]+ *DONE|stat::number_of_executed_units|.*ERROR|.*SUMMARY|hdf5 target)'; then
    :
  fi
  if ! grep -q 'Done [0-9]* runs' ".build/fuzz/$target.log"; then
    echo "fuzz $target: FAILED (see .build/fuzz/$target.log and $artifacts)"
    status=1
  fi
done
exit $status
