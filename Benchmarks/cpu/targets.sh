#!/usr/bin/env bash
# Every measurement behind the CPU backend's targets (issue 13), in one run, on whatever machine this is:
#
#     Benchmarks/cpu/targets.sh            # from anywhere; --help lists the options
#
# 1. machine facts: CPU model, family and model, cores, load, the BLAS and kernels hrtrain picks;
# 2. R alternating pairs of `hrtrain bench --backend cpu` with the defaults and with the alternative ALT, a
#    variable=value for hrtrain: by default HRTRAIN_BLAS=blis where oneDNN is the default (AMD Zen 4), else
#    HRTRAIN_BLAS=onednn where libdnnl2 is installed (the open question on the Xeon), else a BLIS split
#    (HRTRAIN_BLAS_SPLIT=library with haswell kernels, =by-shape with others): events/s, the step over its GEMMs;
# 3. the peers side by side (Benchmarks/peers/run.sh: hrtrain CPU and OpenCL without a stored `tune`,
#    PyTorch eager, Keras fit; 3 rounds, 200,000 generated events, batch 4000);
# 4. E thesis-size epochs (`hrtrain generate --events 2275902 --seed 42`, 1,820,722 training events,
#    `hrtrain train --backend cpu --epochs 1`), alternating the defaults and ALT when E ≥ 2;
# 5. a summary against the targets: CPU ≥ 1.3× PyTorch eager and ≥ 2× Keras fit, the step within 1.4× of its
#    GEMMs, an epoch under 12 s, untuned OpenCL ≥ 1.5 × 18,424 events/s.
#
# Everything goes to Benchmarks/raw/cpu/targets-<cpu>-<UTC date and time>.txt (the peers also write their own
# results-*.jsonl and last-run.md). Nothing is asserted: a target missed is printed as missed.
#
# Options (defaults in brackets):
#   --threads T        [2, the issue's]
#   --pairs R          bench pairs [4]
#   --epochs E         thesis-size epochs [2]
#   --alternative ALT  the other setting of the pairs, VARIABLE=value [see 2.], e.g. HRTRAIN_BLAS_SPLIT=rows
#   --no-peers         skip step 3 (it needs the peers venv; about 6 minutes)
#   --events-file F    the thesis-size sample [.build/targets-events.npy, generated if missing]
# Environment: HRTRAIN (binary) [.build/release/hrtrain]; PEERS_VENV (for step 3) [.build/peers-venv].
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

threads=2 pairs=4 epochs=2 alternative="" with_peers=1 events_file="$root/.build/targets-events.npy"
command_line="Benchmarks/cpu/targets.sh $*"
value() {  # $1: the option, $2: its value (missing when the option came last)
    if [ -z "${2:-}" ]; then echo "targets.sh: $1 needs a value (see --help)" >&2; exit 2; fi
    printf '%s' "$2"
}
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads=$(value "$1" "${2:-}"); shift 2 ;;
        --pairs) pairs=$(value "$1" "${2:-}"); shift 2 ;;
        --epochs) epochs=$(value "$1" "${2:-}"); shift 2 ;;
        --alternative) alternative=$(value "$1" "${2:-}"); shift 2 ;;
        --no-peers) with_peers=0; shift ;;
        --events-file) events_file=$(value "$1" "${2:-}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "targets.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

hrtrain="${HRTRAIN:-$root/.build/release/hrtrain}"
if [ ! -x "$hrtrain" ]; then
    echo "targets.sh: no hrtrain binary at $hrtrain (build it: swift build -c release, or set HRTRAIN)" >&2
    exit 1
fi
cpu_family=$(awk -F': ' '/^cpu family/ {print $2; exit}' /proc/cpuinfo)
cpu_model=$(awk -F': ' '/^model\t/ {print $2; exit}' /proc/cpuinfo)
vendor=$(awk -F': ' '/^vendor_id/ {print $2; exit}' /proc/cpuinfo)
stamp=$(date -u +%Y-%m-%d-%H%M%S)
mkdir -p Benchmarks/raw/cpu
out="Benchmarks/raw/cpu/targets-${vendor}-${cpu_family}-${cpu_model}-${stamp}.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { printf '[targets] %s\n' "$*" | tee -a "$out" >&2; }

{
    echo "# $command_line, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), vendor $vendor family $cpu_family model" \
        "$cpu_model, $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "hrtrain: $hrtrain (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    "$hrtrain" devices 2>&1 | grep -i -E "cpu|blas" || true
} | tee "$out" >&2

# The library and kernels hrtrain picks decide the default alternative (see 2.).
picked=$("$hrtrain" bench --backend cpu --threads "$threads" --steps 1 --warmup-steps 0 --json 2>/dev/null |
    python3 -c 'import json, sys; b = json.load(sys.stdin)["blas"]; print(b["library"], b["reportedKernels"])' ||
    true)
library=${picked%% *} kernels=${picked#* }
if [ -z "$alternative" ]; then
    if [ "$library" = onednn ]; then
        alternative=HRTRAIN_BLAS=blis
    elif [ -e /usr/lib/x86_64-linux-gnu/libdnnl.so.2 ]; then
        alternative=HRTRAIN_BLAS=onednn
    elif [ "$kernels" = haswell ]; then
        alternative=HRTRAIN_BLAS_SPLIT=library
    else
        alternative=HRTRAIN_BLAS_SPLIT=by-shape
    fi
fi
case "$alternative" in
    HRTRAIN_*=*) ;;
    *) echo "targets.sh: --alternative takes VARIABLE=value (e.g. HRTRAIN_BLAS=onednn), got $alternative" >&2; exit 2 ;;
esac
log "BLAS: ${library:-unknown} '${kernels:-unknown}' kernels; pairs: the defaults against $alternative"

# 2. bench pairs, alternating.
bench() {  # $1: label, $2: VARIABLE=value or "" (the defaults); appends one JSON line to $work/bench.jsonl
    local json
    if ! json=$(env ${2:+"$2"} "$hrtrain" bench --backend cpu --threads "$threads" --steps 40 --json \
        2>"$work/bench.err"); then
        log "hrtrain bench (${2:-defaults}) failed: $(cat "$work/bench.err")"
        exit 1
    fi
    python3 - "$1" "$json" >>"$work/bench.jsonl" <<'EOF'
import json, sys
d = json.loads(sys.argv[2])
print(json.dumps({"setting": sys.argv[1], "library": d["blas"]["library"],
                  "events_per_second": d["training"]["events_per_second"],
                  "step_over_gemms": d["stepOverIsolatedGEMMs"], "gemm_ms": d["isolatedGEMMMilliseconds"],
                  "gemm_gflops": d["isolatedGEMMGFLOPs"], "loadavg": open("/proc/loadavg").read().split()[0]}))
EOF
    tail -n 1 "$work/bench.jsonl" | tee -a "$out" >&2
}
for ((i = 1; i <= pairs; i++)); do
    bench default ""
    bench "$alternative" "$alternative"
done

# 3. peers.
if [ "$with_peers" = 1 ]; then
    log "peers: Benchmarks/peers/run.sh --skip-install --repeats 3 --events 200000 --batch 4000 --threads $threads"
    # A failed peers run is reported and the epochs still run: nothing here is a test.
    if HRTRAIN="$hrtrain" HRTRAIN_CACHE_DIR="$work/empty-cache" Benchmarks/peers/run.sh --skip-install --repeats 3 \
        --events 200000 --batch 4000 --threads "$threads" >"$work/peers.log" 2>&1; then
        tail -n 12 "$work/peers.log" | tee -a "$out" >&2
        cat Benchmarks/peers/last-run.md >>"$out"
    else
        log "the peers failed (is there a venv? PEERS_VENV): $(tail -n 3 "$work/peers.log")"
        with_peers=0
    fi
fi

# 4. thesis-size epochs.
if [ "$epochs" -gt 0 ]; then
    if [ ! -s "$events_file" ]; then
        log "generating $events_file (2,275,902 events, seed 42)"
        "$hrtrain" generate --events 2275902 --seed 42 --output "$events_file" >&2
    fi
    for ((i = 1; i <= epochs; i++)); do
        setting=""
        if [ $((i % 2)) = 0 ]; then setting="$alternative"; fi
        if ! env ${setting:+"$setting"} "$hrtrain" train --backend cpu --threads "$threads" --data "$events_file" \
            --epochs 1 --model "$work/epoch.safetensors" >"$work/train.log" 2>&1; then
            log "hrtrain train failed: $(tail -n 3 "$work/train.log")"
            exit 1
        fi
        line=$(grep -E '^epoch 1/1' "$work/train.log" || true)
        if [ -z "$line" ]; then
            log "hrtrain train printed no epoch line: $(tail -n 3 "$work/train.log")"
            exit 1
        fi
        printf '%s\t%s\n' "${setting:-default}" "$line" >>"$work/epochs.tsv"
        log "epoch (${setting:-defaults}): $line"
    done
fi

# 5. summary.
python3 - "$work" "$with_peers" >>"$out" <<'EOF'
import json, os, re, statistics, sys
work, with_peers = sys.argv[1], sys.argv[2] == "1"
def lines(name):
    path = os.path.join(work, name)
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
print("\n## Summary against the targets")
bench = lines("bench.jsonl")
for setting in dict.fromkeys(b["setting"] for b in bench):
    runs = [b for b in bench if b["setting"] == setting]
    eps = statistics.median(b["events_per_second"] for b in runs)
    ratio = statistics.median(b["step_over_gemms"] for b in runs)
    print(f"- bench, {setting} ({runs[0]['library']}): median {eps:,.0f} events/s; "
          f"step / its GEMMs median {ratio:.2f}x "
          f"(target <= 1.4: {'met' if ratio <= 1.4 else 'missed'})")
if len(bench) >= 2:
    pairs = [bench[i + 1]["events_per_second"] / bench[i]["events_per_second"] for i in range(0, len(bench) - 1, 2)]
    print(f"- pairs ({bench[1]['setting']} / default): " + ", ".join(f"{p:.2f}" for p in pairs)
          + f"; median {statistics.median(pairs):.2f}")
epochs = os.path.join(work, "epochs.tsv")
for setting, epoch in (l.rstrip("\n").split("\t", 1) for l in (open(epochs) if os.path.exists(epochs) else [])):
    m = re.search(r"([0-9.]+) s ", epoch)
    seconds = float(m.group(1)) if m else float("nan")
    print(f"- thesis-size epoch, {setting}: {seconds} s (target < 12 s: "
          f"{'met' if seconds < 12 else 'missed'}): {epoch}")
if with_peers:
    table = open("Benchmarks/peers/last-run.md").read()
    medians = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.split("|")]
        if len(cells) > 4 and cells[3].replace(",", "").isdigit():
            medians[cells[1]] = float(cells[3].replace(",", ""))
    cpu, cl = medians.get("hrtrain (cpu)"), medians.get("hrtrain (opencl)")
    torch, keras = medians.get("pytorch (eager)"), medians.get("keras (fit)")
    if cpu and torch:
        print(f"- CPU / PyTorch eager: {cpu / torch:.2f}x (target >= 1.3: {'met' if cpu / torch >= 1.3 else 'missed'})")
    if cpu and keras:
        print(f"- CPU / Keras fit: {cpu / keras:.2f}x (target >= 2: {'met' if cpu / keras >= 2 else 'missed'})")
    if cl:
        print(f"- OpenCL untuned: {cl:,.0f} events/s = {cl / 18424:.2f}x the issue's 18,424 "
              f"(target >= 1.5: {'met' if cl / 18424 >= 1.5 else 'missed'})")
EOF
sed -n '/^## Summary/,$p' "$out" >&2
echo "[targets] written: $out" >&2
