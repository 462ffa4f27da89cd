"""Worker side of the SyncBatchNorm exactness tests, run in spawned gloo processes.

Every rank builds the same full batch from a seed, keeps its shard, runs SyncBatchNorm on it and
compares with torch's single-process BatchNorm (float64 reference) on the whole batch. Each rank
writes ``{case: {quantity: [max_abs_diff, tolerance]}}`` (or an error string) to a JSON file;
the pytest process asserts on them. Many cases share one spawn: a spawn costs seconds.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import bnlab
import bnlab.kernels

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@dataclass(frozen=True)
class Case:
    """One exactness check: a full batch split in shards, one shard per rank of the group."""

    name: str
    shape: tuple[int, ...]  # full batch, (N_total, C, *spatial)
    shards: tuple[int, ...]  # rows per rank, sums to N_total
    dtype: torch.dtype = torch.float32
    affine: bool = True
    track_running_stats: bool = True
    momentum: float | None = 0.1
    channels_last: bool = False
    offset: float = 0.0  # added to every value: tests the combine's numerical stability
    steps: int = 2  # training steps (fresh data each) before comparing running stats


CASES_2 = [
    Case("2d_even", (8, 3), (4, 4)),
    Case("2d_uneven_f64", (7, 3), (5, 2), dtype=torch.float64),
    Case("3d_uneven", (5, 4, 6), (1, 4)),
    Case("4d_even", (6, 5, 4, 3), (3, 3)),
    Case("4d_channels_last", (6, 5, 4, 3), (2, 4), channels_last=True),
    Case("4d_empty_rank", (5, 3, 2, 2), (5, 0)),
    Case("4d_empty_rank_f64", (5, 3, 2, 2), (0, 5), dtype=torch.float64),
    Case("5d_uneven_f64", (5, 2, 3, 2, 2), (3, 2), dtype=torch.float64),
    Case("no_affine", (6, 4, 3), (2, 4), affine=False),
    Case("no_running_stats", (6, 4, 3), (4, 2), track_running_stats=False),
    Case("momentum_none_f64", (6, 4, 3), (4, 2), dtype=torch.float64, momentum=None, steps=3),
    Case("offset_1e4_f64", (9, 3, 5), (6, 3), dtype=torch.float64, offset=1e4),
]

CASES_3 = [
    Case("3r_uneven", (9, 4, 5), (2, 3, 4)),
    Case("3r_uneven_f64", (9, 4, 5), (5, 1, 3), dtype=torch.float64),
    Case("3r_one_each_2d", (3, 6), (1, 1, 1)),
    Case("3r_empty_middle", (6, 3, 2, 2), (3, 0, 3)),
    Case("3r_two_empty_f64", (4, 3, 5), (0, 4, 0), dtype=torch.float64),
    Case("3r_channels_last_f64", (7, 3, 3, 4), (3, 2, 2), dtype=torch.float64, channels_last=True),
]

# Checked in the 3-process run: a subgroup of ranks 0 and 2 (rank 1 sits it out).
SUBGROUP_CASE = Case("subgroup_0_2", (7, 3, 4), (3, 4))
# Extra named checks written by the workers besides the Case list.
EXTRA_2 = [
    "ddp_convert_step",
    "global_count_one_raises",
    "eval_and_world1_are_local",
    "one_collective_per_direction",
]
EXTRA_3 = [SUBGROUP_CASE.name]


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn: Callable[..., None], world: int, outdir: Path) -> dict[int, dict[str, Any]]:
    """Run ``fn(rank, world, port, outdir)`` in ``world`` gloo processes; return each rank's JSON."""
    bnlab.kernels.warm_up((torch.float32, torch.float64))  # see warm_up: empty-cache races
    port = free_port()
    mp.spawn(fn, args=(world, port, str(outdir)), nprocs=world, join=True)
    return {r: json.loads((outdir / f"rank{r}.json").read_text()) for r in range(world)}


def _init(rank: int, world: int, port: int) -> None:
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )


def _full_batch(case: Case, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + sum(map(ord, case.name)))
    x = torch.randn(case.shape, generator=g, dtype=torch.float64) * 2.0 + 0.5 + case.offset
    dy = torch.randn(case.shape, generator=g, dtype=torch.float64)
    return x, dy


def _shard(t: torch.Tensor, shards: tuple[int, ...], index: int) -> torch.Tensor:
    start = sum(shards[:index])
    return t[start : start + shards[index]]


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.detach().double() - b.detach().double()).abs().max())


def run_case(case: Case, index: int, group: dist.ProcessGroup | None) -> dict[str, list[float]]:
    """SyncBN on shard ``index`` vs torch BN (float64) on the full batch; max diffs per quantity."""
    tol = TOL[case.dtype]
    dim = len(case.shape)
    c = case.shape[1]
    sync = bnlab.SyncBatchNorm(
        c,
        momentum=case.momentum,
        affine=case.affine,
        track_running_stats=case.track_running_stats,
        process_group=group,
        dtype=case.dtype,
    )
    ref_cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[dim]
    ref = ref_cls(
        c,
        momentum=case.momentum,
        affine=case.affine,
        track_running_stats=case.track_running_stats,
        dtype=torch.float64,
    )
    if case.affine:
        with torch.no_grad():
            w = torch.linspace(0.5, 1.5, c, dtype=torch.float64)
            b = torch.linspace(-0.3, 0.3, c, dtype=torch.float64)
            sync.weight.copy_(w)
            sync.bias.copy_(b)
            ref.weight.copy_(w)
            ref.bias.copy_(b)
    out: dict[str, list[float]] = {}
    for step in range(case.steps):
        x_full, dy_full = _full_batch(case, step)
        x = _shard(x_full, case.shards, index).to(case.dtype)
        dy = _shard(dy_full, case.shards, index).to(case.dtype)
        if case.channels_last:
            fmt = torch.channels_last if dim == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=fmt)
        x.requires_grad_(True)
        y = sync(x)
        (y * dy).sum().backward()
        xr = x_full.clone().requires_grad_(True)
        yr = ref(xr)
        (yr * dy_full).sum().backward()
        ys = _shard(yr, case.shards, index)
        out[f"step{step}.y"] = [_maxdiff(y, ys), tol]
        out[f"step{step}.dx"] = [_maxdiff(x.grad, _shard(xr.grad, case.shards, index)), tol]
        if case.channels_last and x.numel() > 0:
            ok = y.is_contiguous(memory_format=fmt) and x.grad.is_contiguous(memory_format=fmt)
            out[f"step{step}.memory_format"] = [0.0 if ok else 1.0, 0.0]
        if case.affine:
            # Weight/bias gradients are local sums (DDP reduces them): their sum is the reference.
            grads = torch.cat([sync.weight.grad, sync.bias.grad]).double()
            dist.all_reduce(grads, group=group)
            want = torch.cat([ref.weight.grad, ref.bias.grad])
            out[f"step{step}.dweight_dbias"] = [
                _maxdiff(grads, want),
                tol * max(1, x_full.shape[0]),
            ]
            sync.zero_grad()
            ref.zero_grad()
    if case.track_running_stats:
        out["running_mean"] = [_maxdiff(sync.running_mean, ref.running_mean), tol]
        out["running_var"] = [_maxdiff(sync.running_var, ref.running_var), tol]
        nbt = int(sync.num_batches_tracked) - int(ref.num_batches_tracked)
        out["num_batches_tracked"] = [float(abs(nbt)), 0.0]
        # Eval afterwards: running statistics, no communication, same as the reference.
        sync.eval()
        ref.eval()
        x_full, _ = _full_batch(case, 99)
        x = _shard(x_full, case.shards, index).to(case.dtype)
        with torch.no_grad():
            want = _shard(ref(x_full), case.shards, index)
            # Eval output is not normalized (running stats lag the data): relative tolerance.
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            out["eval.y"] = [_maxdiff(sync(x), want), tol * scale]
    return out


def _guarded(results: dict[str, Any], name: str, fn: Callable[[], dict[str, list[float]]]) -> None:
    try:
        results[name] = fn()
    except Exception:
        results[name] = "error: " + traceback.format_exc()


def _ddp_convert_step(rank: int, world: int) -> dict[str, list[float]]:
    """convert_sync_batchnorm + DDP, one SGD step on uneven shards == one step on the full batch."""
    torch.manual_seed(3)
    base = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=torch.float64),
        nn.BatchNorm2d(4, dtype=torch.float64),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3, dtype=torch.float64),
        nn.BatchNorm1d(3, dtype=torch.float64),
    )
    ref = copy.deepcopy(base)
    model = bnlab.convert_sync_batchnorm(copy.deepcopy(base))
    n_sync = sum(isinstance(m, bnlab.SyncBatchNorm) for m in model.modules())
    ddp = nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(5)
    x_full = torch.randn(9, 2, 5, 5, generator=g, dtype=torch.float64)
    t_full = torch.randn(9, 3, generator=g, dtype=torch.float64)
    shards = (4, 5)
    x, t = _shard(x_full, shards, rank), _shard(t_full, shards, rank)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    # DDP averages gradients over ranks: scale each rank's sum so the average is the full mean.
    (F.mse_loss(ddp(x), t, reduction="sum") * world / len(x_full)).backward()
    opt.step()
    (F.mse_loss(ref(x_full), t_full, reduction="sum") / len(x_full)).backward()
    opt_ref.step()
    out: dict[str, list[float]] = {"converted": [float(abs(n_sync - 2)), 0.0]}
    for (name, p), p_ref in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        out[name] = [_maxdiff(p, p_ref), 1e-10]
    return out


def _global_count_one_raises() -> dict[str, list[float]]:
    """A group total of one value per channel raises on every rank (no rank left waiting)."""
    sync = bnlab.SyncBatchNorm(3)
    x = torch.randn(1 if dist.get_rank() == 0 else 0, 3)
    try:
        sync(x)
    except ValueError as e:
        return {"raised": [0.0 if "more than 1 value per channel" in str(e) else 1.0, 0.0]}
    return {"raised": [1.0, 0.0]}


def _eval_and_world1_are_local(rank: int, world: int) -> dict[str, list[float]]:
    """Eval mode and a one-rank group use plain local BN (equal to bnlab.BatchNorm1d)."""
    out: dict[str, list[float]] = {}
    solo = dist.new_group([0])  # every rank must create every group
    x = torch.randn(4 + rank, 3, 5, dtype=torch.float64) + rank
    plain = bnlab.BatchNorm1d(3, dtype=torch.float64)
    if rank == 0:
        sync = bnlab.SyncBatchNorm(3, process_group=solo, dtype=torch.float64)
        out["world1.y"] = [_maxdiff(sync(x), plain(x)), 1e-12]
        out["world1.running_var"] = [_maxdiff(sync.running_var, plain.running_var), 1e-12]
    sync = bnlab.SyncBatchNorm(3, dtype=torch.float64).eval()
    plain.reset_running_stats()
    out["eval.y"] = [_maxdiff(sync(x), plain.eval()(x)), 1e-12]
    return out


def _one_collective_per_direction() -> dict[str, list[float]]:
    """Forward: exactly one all-gather; backward: exactly one all-reduce (per layer)."""
    module = importlib.import_module("bnlab.distributed.sync_batch_norm")

    calls: list[str] = []
    gather, reduce = module._all_gather_single, dist.all_reduce

    def counted_gather(*args: Any, **kwargs: Any) -> Any:
        calls.append("gather")
        return gather(*args, **kwargs)

    def counted_reduce(*args: Any, **kwargs: Any) -> Any:
        calls.append("reduce")
        return reduce(*args, **kwargs)

    sync = bnlab.SyncBatchNorm(4)
    x = torch.randn(3, 4, 5, requires_grad=True)
    module._all_gather_single = counted_gather
    dist.all_reduce = counted_reduce
    try:
        y = sync(x)
        forward_calls = list(calls)
        y.square().sum().backward()
    finally:
        module._all_gather_single, dist.all_reduce = gather, reduce
    return {
        "forward_one_gather": [0.0 if forward_calls == ["gather"] else 1.0, 0.0],
        "backward_one_reduce": [0.0 if calls == ["gather", "reduce"] else 1.0, 0.0],
    }


def worker_2(rank: int, world: int, port: int, outdir: str) -> None:
    _init(rank, world, port)
    results: dict[str, Any] = {}
    for case in CASES_2:
        _guarded(results, case.name, lambda case=case: run_case(case, rank, None))
    _guarded(results, "ddp_convert_step", lambda: _ddp_convert_step(rank, world))
    _guarded(results, "global_count_one_raises", lambda: _global_count_one_raises())
    _guarded(results, "one_collective_per_direction", _one_collective_per_direction)
    _guarded(results, "eval_and_world1_are_local", lambda: _eval_and_world1_are_local(rank, world))
    Path(outdir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def worker_3(rank: int, world: int, port: int, outdir: str) -> None:
    _init(rank, world, port)
    results: dict[str, Any] = {}
    for case in CASES_3:
        _guarded(results, case.name, lambda case=case: run_case(case, rank, None))
    sub = dist.new_group([0, 2])
    if rank in (0, 2):
        _guarded(results, SUBGROUP_CASE.name, lambda: run_case(SUBGROUP_CASE, rank // 2, sub))
    Path(outdir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()
