#!/usr/bin/env bash
# Peers side by side: hrtrain vs PyTorch vs Keras/TensorFlow, same MLP, same machine.
#
# The one command (from the repository root):
#
#     Benchmarks/peers/run.sh
#
# It (a) creates or reuses the venv $PEERS_VENV [.build/peers-venv], installs requirements.txt,
# (b) generates .build/peers-data.csv with `hrtrain generate` when that subcommand
# exists (else the peers use --synthetic), (c) runs hrtrain bench, torch_peer.py and
# keras_peer.py alternately, R times, (d) prints medians and hrtrain/peer ratios and
# writes Benchmarks/peers/results-<date>.jsonl (raw lines + summary) and last-run.md.
#
# Options (defaults in brackets):
#   --repeats R        alternating rounds [3]
#   --steps S          timed steps per run [100]
#   --warmup-steps W   untimed steps first [20]
#   --batch B          [4000]
#   --hidden LIST      [256,256,256]
#   --layout L         dense-tanh-bn | dense-bn-tanh [dense-tanh-bn]
#   --threads T        [2]
#   --events N         rows to generate / synthetic rows [200000]
#   --synthetic        use random data even if hrtrain generate exists
#   --compile          also run PyTorch with torch.compile
#   --xla              also run Keras with jit_compile=True
#   --no-omp-passive   skip the extra PyTorch run with OMP_WAIT_POLICY=PASSIVE (by
#                      default run too: libgomp's spin-waiting collapses PyTorch's
#                      throughput when another process shares the cores, see README)
#   --no-hrtrain       skip hrtrain (peers only)
#   --hrtrain-backends "LIST"  hrtrain backends to run, in order ["cpu opencl"]
#   --skip-install     do not touch the venv (must exist)
# Environment: HRTRAIN (binary) [.build/release/hrtrain], HRTRAIN_BENCH_ARGS (extra
# arguments for `hrtrain bench`), PYTHON (to create the venv) [python3], PEERS_VENV (the
# venv, created there if missing; may live outside the repository, e.g. /work/peers-venv)
# [.build/peers-venv].
set -euo pipefail

# The number read from `hrtrain bench --json`: a dot path into its JSON object.
HRTRAIN_EPS_KEY="training.events_per_second"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

repeats=3 steps=100 warmup=20 batch=4000 hidden=256,256,256 layout=dense-tanh-bn threads=2
hrtrain_backends="cpu opencl"
events=200000 force_synthetic=0 with_compile=0 with_xla=0 with_hrtrain=1 skip_install=0 with_passive=1
command_line="Benchmarks/peers/run.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --repeats) repeats=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --warmup-steps) warmup=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --hidden) hidden=$2; shift 2 ;;
        --layout) layout=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --events) events=$2; shift 2 ;;
        --synthetic) force_synthetic=1; shift ;;
        --compile) with_compile=1; shift ;;
        --xla) with_xla=1; shift ;;
        --no-hrtrain) with_hrtrain=0; shift ;;
        --hrtrain-backends) hrtrain_backends=$2; shift 2 ;;
        --no-omp-passive) with_passive=0; shift ;;
        --skip-install) skip_install=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

venv="${PEERS_VENV:-$root/.build/peers-venv}"
py="$venv/bin/python"
hrtrain="${HRTRAIN:-$root/.build/release/hrtrain}"
log() { printf '[peers] %s\n' "$*" >&2; }
# ArgumentParser answers `hrtrain NOSUCH --help` with the top-level help and status 0,
# so a subcommand exists only if its own usage line comes back.
has_subcommand() { "$hrtrain" "$1" --help 2>&1 | grep -q "USAGE: hrtrain $1"; }

# (a) venv
if [ "$skip_install" = 0 ]; then
    if [ ! -x "$py" ]; then
        log "creating $venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    stamp="$venv/.requirements.sha256"
    want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing requirements.txt (first time: ~1.5 min, ~2.4 GB with the CPU torch wheel)"
        if ! ls /opt/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 && ! "$py" -c 'import torch' 2>/dev/null; then
            log "note: no local CPU torch wheel; PyPI's torch brings the CUDA runtime wheels (several GB)"
        fi
        t0=$(date +%s)
        "$py" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt"
        echo "$want" > "$stamp"
        log "installed in $(( $(date +%s) - t0 )) s; venv size $(du -sh "$venv" | cut -f1)"
    fi
fi
[ -x "$py" ] || { echo "run.sh: no venv at $venv" >&2; exit 1; }

# (b) data
have_hrtrain=0
[ -x "$hrtrain" ] && have_hrtrain=1 || log "no hrtrain binary at $hrtrain (build: swift build -c release)"
data_args=(--synthetic "$events")
data_file="$root/.build/peers-data.csv"
if [ "$force_synthetic" = 0 ] && [ "$have_hrtrain" = 1 ] && has_subcommand generate; then
    if [ ! -s "$data_file" ]; then
        log "generating $data_file ($events events)"
        "$hrtrain" generate --events "$events" --output "$data_file" >&2
    else
        log "reusing $data_file"
    fi
    data_args=(--data "$data_file")
else
    [ "$force_synthetic" = 1 ] || log "hrtrain generate not available: peers use --synthetic $events"
fi

run_hrtrain=0
if [ "$with_hrtrain" = 1 ] && [ "$have_hrtrain" = 1 ]; then
    if has_subcommand bench; then
        run_hrtrain=1
    else
        log "SKIPPING hrtrain: '$hrtrain bench' does not exist yet (peers only; ratios left empty)"
    fi
fi

# (c) alternate
logs="$root/.build/peers-logs"; mkdir -p "$logs"
stamp_date="$(date +%Y-%m-%d-%H%M%S)"
results="$here/results-$stamp_date.jsonl"
: > "$results"
common=("${data_args[@]}" --batch "$batch" --hidden "$hidden" --layout "$layout"
        --steps "$steps" --warmup-steps "$warmup" --threads "$threads")
export OMP_NUM_THREADS="$threads"
run_peer() {  # name, script, extra args...
    local name=$1 script=$2; shift 2
    log "round $r/$repeats: $name (load avg $(cut -d' ' -f1-3 /proc/loadavg))"
    local line
    if line="$(cd "$here" && "$py" "$script" "${common[@]}" "$@" 2>"$logs/$name.stderr")"; then
        echo "$line" >> "$results"
        log "  $(echo "$line" | "$py" "$here/summarize.py" brief)"
    else
        log "  $name FAILED; stderr:"; tail -20 "$logs/$name.stderr" >&2
    fi
}
for r in $(seq 1 "$repeats"); do
    for backend in $hrtrain_backends; do
        [ "$run_hrtrain" = 1 ] || break
        log "round $r/$repeats: hrtrain --backend $backend (load avg $(cut -d' ' -f1-3 /proc/loadavg))"
        extra=(); [ "$backend" = cpu ] && extra=(--threads "$threads")
        # shellcheck disable=SC2086
        if out="$(POCL_CPU_MAX_CU_NUM="${POCL_CPU_MAX_CU_NUM:-$threads}" "$hrtrain" bench --json --backend "$backend" \
                "${extra[@]}" --steps "$steps" --warmup-steps "$warmup" --batch "$batch" --hidden "$hidden" \
                --layout "$layout" ${HRTRAIN_BENCH_ARGS:-})"; then
            if line="$(echo "$out" | "$py" "$here/summarize.py" wrap-hrtrain --key "$HRTRAIN_EPS_KEY" \
                    --threads "$threads" --mode "$backend")"; then
                echo "$line" >> "$results"
                log "  $(echo "$line" | "$py" "$here/summarize.py" brief)"
            else
                log "  could not read $HRTRAIN_EPS_KEY from hrtrain's output"
            fi
        else
            log "  hrtrain bench --backend $backend FAILED"
        fi
    done
    run_peer torch torch_peer.py
    [ "$with_compile" = 0 ] || run_peer torch-compile torch_peer.py --compile
    [ "$with_passive" = 0 ] || OMP_WAIT_POLICY=PASSIVE run_peer torch-passive torch_peer.py
    run_peer keras keras_peer.py
    [ "$with_xla" = 0 ] || run_peer keras-xla keras_peer.py --jit-compile
done

# (d) summary
"$py" "$here/summarize.py" report "$results" --markdown "$here/last-run.md" --command "$command_line"
log "raw + summary: $results; markdown: $here/last-run.md"
