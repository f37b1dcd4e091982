#!/usr/bin/env python3
"""Scaling model of hrtrain's synchronous data-parallel training on 1-64 GPUs (paper model, no GPU measured).

step(N) = compute(B/N) + exchange(N), exchange(1) = 0.
compute(b) = fixed + flops(b) / (rate * b / (b + b_half))   one GPU on b rows: the launch/synchronisation cost
             plus the GEMM work at an efficiency that falls for small shares (half the rate at b_half rows).
exchange   = hrtrain's path (host-staged): device->host copy, MPI_Allreduce on host buffers, host->device copy;
             MPI_Allreduce of S bytes over N ranks (Rabenseifner / ring): 2 (N-1)/N S/BW + 2 log2(N) alpha;
             on one node (N <= 8) through shared memory; across nodes hierarchically: within each node (8 ranks,
             shared memory), then between the N/8 nodes over InfiniBand (one full gradient per node).
             For comparison, a device-side all-reduce over NVLink (what NCCL would do; hrtrain does not).
Run: python3 Benchmarks/mpi/scaling_model.py
"""
import math

GRADIENT_BYTES = 143_618 * 4          # the thesis network's parameters, Float32: 0.57 MB
FLOP_PER_EVENT = 0.83e6               # forward + backward + Adam, per event and step (hrtrain bench)
RATE = 10e12                          # FLOP/s reached on large shares (A100-class FP32, ~half of peak)
B_HALF = 1000                         # rows per GPU at which the GEMMs reach half of RATE
FIXED = 0.20e-3                       # s per step: ~40 kernel launches and the per-step host synchronisation
PCIE = (12e9, 10e-6)                  # bytes/s, s: one pageable copy each way (hrtrain's buffers are not pinned)
SHM = (8e9, 1e-6)                     # MPI within a node, through host memory
IB = (25e9, 3e-6)                     # InfiniBand HDR 200 Gb/s between nodes
NVLINK = (200e9, 8e-6)                # device-side all-reduce bus bandwidth and latency (NCCL-like), for comparison
GPUS_PER_NODE = 8


def compute(rows):
    efficiency = rows / (rows + B_HALF)
    return FIXED + FLOP_PER_EVENT * rows / (RATE * efficiency)


def allreduce(n, link):
    bandwidth, alpha = link
    return 2 * (n - 1) / n * GRADIENT_BYTES / bandwidth + 2 * math.log2(n) * alpha


def host_staged(n):
    if n == 1:
        return 0.0
    copies = 2 * (GRADIENT_BYTES / PCIE[0] + PCIE[1])
    if n <= GPUS_PER_NODE:
        return copies + allreduce(n, SHM)
    return copies + allreduce(GPUS_PER_NODE, SHM) + allreduce(n // GPUS_PER_NODE, IB)


def device_side(n):
    if n == 1:
        return 0.0
    if n <= GPUS_PER_NODE:
        return allreduce(n, NVLINK)
    return allreduce(GPUS_PER_NODE, NVLINK) + allreduce(n // GPUS_PER_NODE, IB)


def table(batch):
    print(f"\nglobal batch {batch}: step time in ms, speed-up over one GPU, events/s of the job")
    print("| GPUs | rows/GPU | compute | all-reduce (hrtrain, host-staged) | step | speed-up | events/s "
          "| device-side all-reduce (NVLink/IB) | step | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    one = compute(batch)
    for n in [1, 2, 4, 8, 16, 32, 64]:
        rows = math.ceil(batch / n)
        c = compute(rows)
        h = host_staged(n)
        d = device_side(n)
        print(f"| {n} | {rows} | {c * 1e3:.3f} | {h * 1e3:.3f} | {(c + h) * 1e3:.3f} | {one / (c + h):.2f} "
              f"| {batch / (c + h):,.0f} | {d * 1e3:.3f} | {(c + d) * 1e3:.3f} | {one / (c + d):.2f} |")


if __name__ == "__main__":
    for batch in [4000, 32000, 256000]:
        table(batch)
