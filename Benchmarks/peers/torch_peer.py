#!/usr/bin/env python3
"""PyTorch peer of `hrtrain bench`: the same MLP, trained on the CPU or a CUDA GPU, steady-state throughput.

38 inputs -> [Linear(256) -> Tanh -> BatchNorm1d] x3 -> Linear(2); MSE (mean over all
elements); Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8); PyTorch defaults for init and
BatchNorm (momentum 0.1, eps 1e-5). Eager by default; --compile wraps the model in
torch.compile (inductor: C++ codegen on the CPU, Triton on CUDA). --device cuda runs it on
the GPU, Float32 (TF32 matmuls off, as hrtrain computes in full Float32), with the whole
shuffled set resident on the GPU; the timed loop then ends with torch.cuda.synchronize().

Timed: --steps full batches of forward, loss, backward, optimizer.step (after
--warmup-steps untimed ones); batches are views into a resident, once-shuffled tensor,
so no data movement is timed. Prints one JSON line.
"""

from peer_common import pin_threads_from_argv

pin_threads_from_argv()

import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import peer_common as pc  # noqa: E402


def build(inputs, hidden, outputs, layout):
    layers = []
    width = inputs
    for h in hidden:
        if layout == "dense-tanh-bn":
            layers += [nn.Linear(width, h), nn.Tanh(), nn.BatchNorm1d(h)]
        else:  # dense-bn-tanh
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def main():
    p = pc.parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (default: eager)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def sync():
        if cuda:
            torch.cuda.synchronize()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)

    x_np, y_np = pc.load_data(args)
    total = args.warmup_steps + args.steps
    order = pc.batch_order(len(x_np), args.batch, total, args.seed)
    x = torch.from_numpy(x_np[order]).to(device)  # (total*batch, F), contiguous: each batch is a view
    y = torch.from_numpy(y_np[order]).to(device)

    model = build(x.shape[1], pc.parse_hidden(args.hidden), y.shape[1], args.layout).to(device)
    model.train()
    forward = torch.compile(model) if args.compile else model
    loss_fn = nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    def step(i):
        xb = x[i * args.batch:(i + 1) * args.batch]
        yb = y[i * args.batch:(i + 1) * args.batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(xb), yb)
        loss.backward()
        opt.step()
        return loss

    t_warm = time.perf_counter()
    for i in range(args.warmup_steps):
        step(i)
    sync()
    warmup_s = time.perf_counter() - t_warm

    per_step = []
    loss = None
    t0 = time.perf_counter()
    for i in range(args.warmup_steps, total):
        s = time.perf_counter()
        loss = step(i)
        if not cuda:  # on CUDA a step's wall time is only its launch time: timed as a whole below
            per_step.append(time.perf_counter() - s)
    sync()
    elapsed = time.perf_counter() - t0
    final_loss = float(loss.item()) if loss is not None else None

    pc.emit({
        "framework": "pytorch",
        "version": torch.__version__,
        "events_per_second": args.batch * args.steps / elapsed,
        "ms_per_step": 1e3 * elapsed / args.steps,
        "batch": args.batch,
        "steps": args.steps,
        "threads": args.threads,
        "layout": args.layout,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "final_loss": final_loss,
        "mode": ("compile" if args.compile else "eager")
        + (", OMP_WAIT_POLICY=" + os.environ["OMP_WAIT_POLICY"].upper() if os.environ.get("OMP_WAIT_POLICY") else ""),
        "hidden": args.hidden,
        "ms_per_step_median": 1e3 * float(np.median(per_step)) if per_step else None,
        "warmup_steps": args.warmup_steps,
        "warmup_s": warmup_s,
        "data": pc.data_label(args),
    })


if __name__ == "__main__":
    main()
