"""Shared pieces of torch_peer.py and keras_peer.py: options, thread setup, data.

Import order matters: call `pin_threads_from_argv()` before numpy / torch /
tensorflow are imported, so that OpenMP, MKL and oneDNN see the thread count.
"""

import argparse
import json
import os
import sys

TARGETS = ("truth_hr_x", "truth_hr_y")
LAYOUTS = ("dense-tanh-bn", "dense-bn-tanh")


def pin_threads_from_argv(default=2):
    """Reads --threads from sys.argv (before argparse runs) and exports it to the
    thread-pool environment variables that the native libraries read at load time."""
    threads = default
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = int(argv[i + 1])
        elif arg.startswith("--threads="):
            threads = int(arg.split("=", 1)[1])
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's banners off stderr noise
    return threads


def parser(description):
    p = argparse.ArgumentParser(description=description)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="CSV with a header, or .npy with a <file>.columns sidecar (from `hrtrain generate`)")
    src.add_argument("--synthetic", type=int, metavar="N", help="N rows of standard-normal features and targets")
    p.add_argument("--batch", type=int, default=4000)
    p.add_argument("--hidden", default="256,256,256", help="hidden layer widths, comma separated")
    p.add_argument("--layout", choices=LAYOUTS, default="dense-tanh-bn")
    p.add_argument("--steps", type=int, default=100, help="timed training steps")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed steps first (tracing/compilation, allocator warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--features", type=int, default=38, help="feature count for --synthetic")
    p.add_argument("--seed", type=int, default=1234)
    return p


def parse_hidden(text):
    widths = [int(w) for w in text.split(",") if w.strip()]
    if not widths or min(widths) <= 0:
        raise SystemExit(f"--hidden: expected positive widths, got {text!r}")
    return widths


def load_data(args):
    """Returns (x, y) as C-contiguous float32 arrays, x standardised (StandardScaler:
    mean 0, population std 1; constant columns are left centred)."""
    import numpy as np

    if args.synthetic is not None:
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal((args.synthetic, args.features), dtype=np.float32)
        y = rng.standard_normal((args.synthetic, len(TARGETS)), dtype=np.float32)
    else:
        path = args.data
        if path.endswith(".npy"):
            table = np.load(path, mmap_mode="r")
            sidecar = path + ".columns"
            if os.path.exists(sidecar):
                with open(sidecar, encoding="utf-8") as f:
                    names = [line.strip() for line in f if line.strip()]
            else:
                names = [f"c{i}" for i in range(table.shape[1])]
        else:
            with open(path, encoding="utf-8") as f:
                names = [n.strip() for n in f.readline().strip().split(",")]
            table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
        missing = [t for t in TARGETS if t not in names]
        if missing:
            raise SystemExit(f"{path}: no column(s) {missing}; columns are {names}")
        target_idx = [names.index(t) for t in TARGETS]
        feature_idx = [i for i in range(len(names)) if i not in target_idx]
        x = np.asarray(table[:, feature_idx], dtype=np.float32)
        y = np.asarray(table[:, target_idx], dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    x = ((x - mean) / std).astype(np.float32)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def batch_order(rows, batch, count, seed):
    """Row indices for `count` full batches: one random permutation of the rows,
    cycled (so fewer rows than count*batch still give full batches)."""
    import numpy as np

    if rows < batch:
        raise SystemExit(f"need at least one full batch: {rows} rows < batch {batch}")
    per_pass = rows // batch * batch
    perm = np.random.default_rng(seed).permutation(rows)[:per_pass]
    reps = -(-count * batch // per_pass)
    return np.tile(perm, reps)[: count * batch]


def data_label(args):
    return f"synthetic:{args.synthetic}" if args.synthetic is not None else args.data


def emit(record):
    record["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
