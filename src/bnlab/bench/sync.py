"""SyncBatchNorm's overhead against local BatchNorm, on N processes of one machine (gloo, CPU).

For each layer shape (the per-rank batch), every rank times a training step (forward +
backward) of ``bnlab.BatchNorm*`` and of ``bnlab.SyncBatchNorm`` on its own shard, the two
interleaved repeat by repeat (``bnlab.bench.timing``). A step's time is the slowest rank's (the
ranks wait for each other in SyncBN anyway); the report gives the medians, their ratio and the
difference.

    python -m bnlab.bench.sync --nproc 2 --shape 32x64x16x16 --shape 256x512
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

import bnlab
from bnlab.bench.timing import Runner, interleave, medians, ratio_of_medians
from bnlab.lab.files import atomic_write_text
from bnlab.lab.launch import init_process_group, spawn_local

DEFAULT_SHAPES = ("256x512", "32x64x32x32", "16x256x8x8", "8x32x8x16x16")

_LOCAL = {2: bnlab.BatchNorm1d, 3: bnlab.BatchNorm1d, 4: bnlab.BatchNorm2d, 5: bnlab.BatchNorm3d}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"32x64x16x16"`` -> (32, 64, 16, 16): a per-rank (N, C, *spatial) shape, 2 to 5 dims."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must look like 32x64x16x16, got {text!r}"
        ) from None
    if not 2 <= len(shape) <= 5 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"shape must have 2 to 5 positive sizes (N, C, *spatial), got {text!r}"
        )
    return shape


def _step_time(layer: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor) -> float:
    dist.barrier()  # start together: the clock measures this step, not a late peer
    t0 = time.perf_counter()
    y = layer(x)
    y.backward(dy)
    elapsed = time.perf_counter() - t0
    x.grad = None
    return elapsed


def _slowest_rank(layer: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Runner:
    """A runner: one training step on every rank; its duration is the slowest rank's."""

    def run(_round: int) -> float:
        t = torch.tensor(_step_time(layer, x, dy), dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    return run


def _worker(
    rank: int,
    nproc: int,
    init_method: str,
    shapes: list[tuple[int, ...]],
    repeats: int,
    warmup: int,
    threads: int,
    out: str | None,
    kernels: str = "auto",
) -> None:
    torch.set_num_threads(threads)
    bnlab.kernels.set_backend(kernels)
    init_process_group(rank, nproc, init_method, timeout_s=120)
    rows = []
    for shape in shapes:
        torch.manual_seed(rank)
        x = torch.randn(shape, requires_grad=True)
        dy = torch.randn(shape)
        local = _LOCAL[len(shape)](shape[1])
        sync = bnlab.SyncBatchNorm(shape[1])
        runners = {"local": _slowest_rank(local, x, dy), "sync": _slowest_rank(sync, x, dy)}
        times = interleave(runners, repeats, warmup)  # warm-up: JIT compilation, allocator
        med = medians(times)
        rows.append(
            {
                "shape": "x".join(map(str, shape)),
                "local_ms": med["local"] * 1e3,
                "sync_ms": med["sync"] * 1e3,
                "ratio": ratio_of_medians(times["sync"], times["local"]),
                "overhead_ms": (med["sync"] - med["local"]) * 1e3,
            }
        )
    if rank == 0:
        header = (
            f"{'per-rank shape':>16} {'local BN ms':>12} {'SyncBN ms':>10} {'ratio':>6} {'+ms':>7}"
        )
        print(
            f"SyncBatchNorm vs local BatchNorm, forward+backward, {kernels} kernels, "
            f"{nproc} processes (gloo), "
            f"{threads} thread(s) each, median of {repeats}"
        )
        print(header)
        for r in rows:
            print(
                f"{r['shape']:>16} {r['local_ms']:>12.3f} {r['sync_ms']:>10.3f} "
                f"{r['ratio']:>6.2f} {r['overhead_ms']:>7.3f}"
            )
        if out:
            meta = {
                "nproc": nproc,
                "threads": threads,
                "repeats": repeats,
                "warmup": warmup,
                "kernels": kernels,
                "backend": "gloo",
            }
            atomic_write_text(Path(out), json.dumps({"config": meta, "rows": rows}, indent=2))
    dist.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bnlab.bench.sync",
        description="SyncBatchNorm overhead against local BatchNorm on N local processes.",
    )
    p.add_argument("--nproc", type=int, default=2, help="processes (default 2)")
    p.add_argument(
        "--shape",
        type=parse_shape,
        action="append",
        help=f"per-rank input shape, repeatable (default {' '.join(DEFAULT_SHAPES)})",
    )
    p.add_argument("--repeats", type=int, default=30, help="timed steps per layer (default 30)")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (default 15)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument(
        "--kernels",
        choices=("auto", "cpu", "portable"),
        default="auto",
        help="kernel family for both layers (bnlab.kernels.set_backend; default auto)",
    )
    p.add_argument("--json", dest="out", help="also write the rows to this JSON file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnlab.bench.sync``."""
    args = build_parser().parse_args(argv)
    if args.nproc < 2:
        raise SystemExit(f"--nproc must be at least 2 to measure synchronization, got {args.nproc}")
    if args.repeats < 1 or args.threads < 1 or args.warmup < 0:
        raise SystemExit("--repeats and --threads must be positive, --warmup >= 0")
    shapes = args.shape or [parse_shape(s) for s in DEFAULT_SHAPES]
    spawn_local(
        _worker, args.nproc, shapes, args.repeats, args.warmup, args.threads, args.out, args.kernels
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
