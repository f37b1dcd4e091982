#!/usr/bin/env bash
# Runs on the GPU machine, from inside the bundle made by build-bundle.sh (or from the repository with HRTRAIN
# set): finds the GPU's OpenCL driver, runs the PyTorch peer on CUDA (eager and torch.compile), checks hrtrain's
# numerics against the Double reference, benchmarks training and trains one full epoch of the thesis' sample
# size (both without any `tune`, as a new user runs them), benchmarks again after a bounded CLBlast tuning, and
# then, on the node's CPU, runs hrtrain's CPU backend alternately with PyTorch eager on the CPU. Every result
# lands in $OUT; each step is time-boxed and the whole run fits in TOTAL_SECONDS (a step that would not fit is
# skipped, and says so).
#
#   ./run-on-gpu.sh               # everything
#   ./run-on-gpu.sh --find-gpu    # only find (and if needed register) the GPU's OpenCL library; exit status 0
#                                 # when a GPU device is visible afterwards, 3 when not
#
# Finding the GPU: when `hrtrain devices` lists no GPU (the driver is mounted where the ICD loader does not
# look, e.g. a container with /usr/local/nvidia/lib64), the vendor library (libnvidia-opencl.so.1, AMD's
# libamdocl64.so, Intel's libigdrcl.so) is searched in GPU_LIBRARY_DIRS and `ldconfig -p`, registered in a
# private vendors folder next to the ones already registered (OCL_ICD_VENDORS), and the devices are listed again.
#
# Settings (environment, defaults in brackets): OUT [./results], DEVICE (hrtrain device index) [the first GPU],
# TUNE_SECONDS [60; 0: no tuning], EVENTS generated for the epoch [2275902: the thesis' training split; 80 % of
# it, 1,820,721 events, train], BATCH [4000], HIDDEN [256,256,256], BENCH_STEPS [100], PEER_STEPS [100],
# PEER_DEVICE [cuda], PYTHON [python3], CEILING_SIZE (n of the n×n×n SGEMM ceiling) [8192],
# TOTAL_SECONDS [450], GPU_LIBRARY_DIRS [the folders below], GPU_SEARCH_LDCONFIG [1], HRTRAIN [the bundle's hrtrain],
# CPU_THREADS (thread counts of the CPU comparison; empty: none) ["2 <all cores>"], CPU_ROUNDS [2],
# CPU_LIBRARIES (the CPU backend's BLAS libraries compared, HRTRAIN_BLAS) ["blis onednn"].
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hrtrain=${HRTRAIN:-$here/hrtrain}
[ -d "$here/lib" ] && export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=${OUT:-$here/results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TOTAL_SECONDS=${TOTAL_SECONDS:-450}
TUNE_SECONDS=${TUNE_SECONDS:-60}
EVENTS=${EVENTS:-2275902}
BATCH=${BATCH:-4000}
HIDDEN=${HIDDEN:-256,256,256}
BENCH_STEPS=${BENCH_STEPS:-100}
PEER_STEPS=${PEER_STEPS:-100}
PEER_DEVICE=${PEER_DEVICE:-cuda}
CEILING_SIZE=${CEILING_SIZE:-8192}
PYTHON=${PYTHON:-python3}
CPU_THREADS=${CPU_THREADS-2 $(nproc)}
CPU_ROUNDS=${CPU_ROUNDS:-2}
CPU_LIBRARIES=${CPU_LIBRARIES:-blis onednn}
default_dirs="/usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
/usr/lib/x86_64-linux-gnu/nvidia/current /usr/lib/nvidia /usr/local/cuda/lib64 /usr/local/cuda/compat \
/run/nvidia/driver/usr/lib/x86_64-linux-gnu /run/nvidia/driver/usr/lib64 /opt/rocm/lib /opt/amdgpu/lib64"
library_path=${LD_LIBRARY_PATH:-}
GPU_LIBRARY_DIRS=${GPU_LIBRARY_DIRS:-$default_dirs ${library_path//:/ }}
vendor_libraries="libnvidia-opencl.so.1 libnvidia-opencl.so libamdocl64.so libigdrcl.so"
# Results of one run only: a fresh cache folder, so "before tuning" really is before.
export HRTRAIN_CACHE_DIR="$OUT/cache"
device=()
[ -n "${DEVICE:-}" ] && device=(--device "$DEVICE")

log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$OUT/run.log"; }

gpu_listed() { "$hrtrain" devices --json 2> /dev/null | grep -q '"kind" : "gpu"'; }

# Makes a GPU visible to the ICD loader if it is not: see the header. Returns 0 when a GPU is listed.
find_gpu() {
  "$hrtrain" devices > "$OUT/devices-before.txt" 2>&1
  if gpu_listed; then
    log "GPU: the ICD loader lists one (${OCL_ICD_VENDORS:-/etc/OpenCL/vendors}):"
    tee -a "$OUT/run.log" < "$OUT/devices-before.txt"
    return 0
  fi
  log "GPU: none among the OpenCL devices the ICD loader finds (${OCL_ICD_VENDORS:-/etc/OpenCL/vendors}):"
  tee -a "$OUT/run.log" < "$OUT/devices-before.txt"
  log "GPU: searching for $vendor_libraries in: $GPU_LIBRARY_DIRS$([ "${GPU_SEARCH_LDCONFIG:-1}" != 0 ] && echo \
    ' and ldconfig -p')"
  local found=() seen=" " candidate real
  local candidates=()
  for dir in $GPU_LIBRARY_DIRS; do
    for name in $vendor_libraries; do [ -e "$dir/$name" ] && candidates+=("$dir/$name"); done
  done
  if [ "${GPU_SEARCH_LDCONFIG:-1}" != 0 ] && command -v ldconfig > /dev/null; then
    while read -r candidate; do candidates+=("$candidate"); done < <(ldconfig -p 2> /dev/null |
      awk '/libnvidia-opencl\.so|libamdocl64\.so|libigdrcl\.so/ { print $NF }')
  fi
  for candidate in "${candidates[@]}"; do
    real=$(readlink -f "$candidate" 2> /dev/null || echo "$candidate")
    case "$seen" in *" $real "*) continue ;; esac
    seen="$seen$real "
    found+=("$candidate")
  done
  if ((${#found[@]} == 0)); then
    log "GPU: found no vendor OpenCL library; continuing with the devices above"
    return 3
  fi
  local vendors="$OUT/icd-vendors" previous=${OCL_ICD_VENDORS:-/etc/OpenCL/vendors} n=0
  mkdir -p "$vendors"
  if [ -d "$previous" ]; then
    cp "$previous"/*.icd "$vendors/" 2> /dev/null
  elif [ -f "$previous" ]; then
    cp "$previous" "$vendors/"
  fi
  for candidate in "${found[@]}"; do
    n=$((n + 1))
    echo "$candidate" > "$vendors/found-$n-$(basename "$candidate").icd"
    log "GPU: found $candidate$([ "$(readlink -f "$candidate")" != "$candidate" ] && echo \
      " (-> $(readlink -f "$candidate"))"); registered as $vendors/found-$n-$(basename "$candidate").icd"
  done
  export OCL_ICD_VENDORS="$vendors"
  "$hrtrain" devices > "$OUT/devices-after-registering.txt" 2>&1
  tee -a "$OUT/run.log" < "$OUT/devices-after-registering.txt"
  if gpu_listed; then
    log "GPU: listed after registering (OCL_ICD_VENDORS=$vendors)"
    return 0
  fi
  log "GPU: still none after registering ${found[*]}: the library did not load or reported no GPU device"
  return 3
}

# Runs a step under `timeout`, unless it would end after TOTAL_SECONDS. Its output goes to $OUT/NAME.
step() {
  local name=$1 limit=$2
  shift 2
  if ((SECONDS + limit > TOTAL_SECONDS)); then
    log "SKIP $name: its $limit s limit would end after TOTAL_SECONDS=$TOTAL_SECONDS"
    echo "skipped: time budget" > "$OUT/$name"
    return 0
  fi
  log "RUN  $name (limit $limit s): $*"
  local began=$SECONDS status=0
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name" 2> "$OUT/$name.stderr" || status=$?
  [ -s "$OUT/$name.stderr" ] || rm -f "$OUT/$name.stderr"
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    log "TIME $name: stopped after its $limit s limit"
  elif [ "$status" != 0 ]; then
    log "FAIL $name: exit status $status (see $OUT/$name*)"
  else
    log "OK   $name ($((SECONDS - began)) s)"
  fi
  return 0
}

if [ "${1:-}" = "--find-gpu" ]; then
  find_gpu
  exit $?
fi

log "hrtrain GPU run: results in $OUT"
{
  date -u
  uname -a
  lscpu 2> /dev/null || head -30 /proc/cpuinfo
  nvidia-smi 2> /dev/null || echo "nvidia-smi: not available"
  command -v clinfo > /dev/null && clinfo -l
  "$hrtrain" --version 2> /dev/null
} > "$OUT/machine.txt" 2>&1
find_gpu
"$hrtrain" devices > "$OUT/devices.txt" 2>&1
"$hrtrain" devices --json > "$OUT/devices.json" 2>&1
echo "OCL_ICD_VENDORS=${OCL_ICD_VENDORS:-}" >> "$OUT/machine.txt"

# The PyTorch peer: the same network, batch, Float32, data resident on the device.
peers=$here/peers
[ -d "$peers" ] || peers=$here/../peers
if ! "$PYTHON" -c "import torch, numpy" 2> /dev/null; then
  log "SKIP PyTorch peer: $PYTHON cannot import torch and numpy"
elif [ "$PEER_DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  log "SKIP PyTorch peer: torch.cuda.is_available() is False"
else
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/machine.txt"
  peer=("$PYTHON" "$peers/torch_peer.py" --synthetic 200000 --batch "$BATCH" --hidden "$HIDDEN"
    --steps "$PEER_STEPS" --warmup-steps 20 --threads 8 --device "$PEER_DEVICE")
  step torch-eager.json 90 "${peer[@]}"
  step torch-compile.json 180 "${peer[@]}" --compile
fi

step verify.txt 90 "$hrtrain" verify "${device[@]}" --batch "$BATCH" --hidden "$HIDDEN"
bench=("$hrtrain" bench "${device[@]}" --batch "$BATCH" --hidden "$HIDDEN" --steps "$BENCH_STEPS"
  --ceiling-size "$CEILING_SIZE")
step bench-untuned.json 120 "${bench[@]}" --json
# One training epoch at the thesis' scale with CLBlast's defaults (what a new user gets), from a generated sample
# (kept out of $OUT: it is data, not a result).
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
step generate.txt 120 "$hrtrain" generate --events "$EVENTS" --seed 42 --output "$data/events.npy"
if [ -f "$data/events.npy" ]; then
  step train-epoch.txt 240 "$hrtrain" train "${device[@]}" --data "$data/events.npy" --model "$OUT/model.safetensors" \
    --epochs 1 --batch-size "$BATCH" --hidden "$HIDDEN" --seed 42 --verbose
fi

if [ "$TUNE_SECONDS" != 0 ]; then
  step tune.txt $((TUNE_SECONDS + 90)) "$hrtrain" tune "${device[@]}" --batch "$BATCH" --budget "$TUNE_SECONDS"
  step bench-tuned.json 120 "${bench[@]}" --json
  step bench-tuned.txt 120 "${bench[@]}"
fi

# The node's CPU: hrtrain's CPU backend on each of CPU_LIBRARIES and PyTorch eager on the CPU, alternately, at
# each of CPU_THREADS (oneDNN is hrtrain's default only on small AMD Zen 4 machines: this measures it on others).
if [ -n "$CPU_THREADS" ]; then
  for round in $(seq 1 "$CPU_ROUNDS"); do
    for t in $CPU_THREADS; do
      for library in $CPU_LIBRARIES; do
        step "cpu-bench-$library-t$t-r$round.json" 60 env HRTRAIN_BLAS="$library" "$hrtrain" bench --backend cpu \
          --threads "$t" --batch "$BATCH" --hidden "$HIDDEN" --steps 40 --json
      done
      if "$PYTHON" -c "import torch, numpy" 2> /dev/null; then
        step "cpu-torch-t$t-r$round.json" 60 "$PYTHON" "$peers/torch_peer.py" --synthetic 200000 --batch "$BATCH" \
          --hidden "$HIDDEN" --steps 40 --warmup-steps 5 --threads "$t" --device cpu
      fi
    done
  done
fi

# A summary of the figures, from the JSON results (needs Python; the raw files are there either way).
"$PYTHON" - "$OUT" << 'EOF' > "$OUT/summary.md" 2>&1 || log "no summary: $PYTHON failed (see $OUT/summary.md)"
import json, os, re, statistics, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1] if "torch" in name else f.read())
    except Exception:
        return None
rows = []
benches = [("bench-untuned.json", "hrtrain bench, CLBlast defaults"), ("bench-tuned.json", "hrtrain bench, tuned")]
for name, label in benches:
    b = load(name)
    if b:
        c = b.get("commands", {})
        rows.append((label, b["training"]["events_per_second"], b["training"]["ms_per_step"],
                     f"{c.get('perStep', float('nan')):.1f} commands/step, GEMMs {b['gemm']['gflops']:.0f} GFLOP/s, "
                     f"step {b['gemm']['stepOverGEMMAtCeiling']:.2f}x its GEMMs at the ceiling"))
for name, label in [("torch-eager.json", "PyTorch eager"), ("torch-compile.json", "PyTorch torch.compile")]:
    t = load(name)
    if t:
        rows.append((f"{label} ({t['device']}, torch {t['version']})", t["events_per_second"], t["ms_per_step"], ""))
cpu = {}
for name in sorted(os.listdir(out)):
    m = re.match(r"cpu-(bench-[a-z]+|torch)-t(\d+)-r(\d+)\.json$", name)
    r = load(name) if m else None
    if r:
        eps = r["training"]["events_per_second"] if m.group(1) != "torch" else r["events_per_second"]
        cpu.setdefault(int(m.group(2)), {}).setdefault(m.group(1), []).append(eps)
print("| run | training events/s | ms/step | notes |\n|---|---:|---:|---|")
for label, eps, ms, note in rows:
    print(f"| {label} | {eps:,.0f} | {ms:.3f} | {note} |")
best = max((r for r in rows if r[0].startswith("hrtrain")), key=lambda r: r[1], default=None)
for r in rows:
    if best and r[0].startswith("PyTorch"):
        print(f"\nhrtrain (best) / {r[0]}: {best[1] / r[1]:.2f}")
if cpu:
    print("\nOn the node's CPU (each round alternates them; events/s, median of the rounds; hrtrain / PyTorch):\n")
    libraries = sorted({k[len("bench-"):] for runs in cpu.values() for k in runs if k.startswith("bench-")})
    print("| threads | " + " | ".join(f"hrtrain, {l}" for l in libraries) + " | PyTorch eager (CPU) |")
    print("|---:|" + "---:|" * (len(libraries) + 1))
    median = lambda v: statistics.median(v) if v else float("nan")
    for t in sorted(cpu):
        p = median(cpu[t].get("torch", []))
        cells = [median(cpu[t].get(f"bench-{l}", [])) for l in libraries]
        print(f"| {t} | " + " | ".join(f"{h:,.0f} ({h / p:.2f})" for h in cells) + f" | {p:,.0f} |")
try:
    epoch = "".join(open(os.path.join(out, f)).read() for f in os.listdir(out) if f.startswith("train-epoch.txt"))
    print("\none epoch (train-epoch.txt):", *[l for l in epoch.splitlines() if re.match(r"epoch \d", l)], sep="\n")
except Exception:
    pass
try:
    print("\nverify:", open(os.path.join(out, "verify.txt")).read().strip().splitlines()[-1])
except Exception:
    pass
EOF
log "done: $OUT/summary.md"
cat "$OUT/summary.md"
