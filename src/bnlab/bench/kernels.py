"""``bnlab bench``: bnlab's batch norm against torch's native one, side by side in one process.

For every case (shape, memory format, float32) and operation it times, interleaved rep by rep so
that a busy machine slows all peers alike:

- ``train_fwd``  training forward, running statistics updated (no autograd graph);
- ``eval_fwd``   eval forward with the running statistics;
- ``bwd``        backward only (x, weight, bias gradients) through a retained graph;
- ``fwd_bwd``    training forward + backward;
- ``bn_relu``    fused ``batch_norm_act(relu)`` forward + backward, against bnlab batch norm
  followed by ``torch.relu`` (and torch's batch norm + ReLU).

Peers: ``torch`` (``torch.nn.functional.batch_norm``), ``bnlab``, and ``compiled`` (a plain
torch-ops batch norm through ``torch.compile``, for train_fwd and fwd_bwd; its compile time is
reported apart). bnlab runs as users get it: its output cache on (after warm-up, large outputs
reuse freed buffers, see ``bnlab.kernels.output_cache``). Reported per row: median time over ``--reps`` repetitions after warm-up,
speedup (torch median / bnlab median; the ratio of minimum times is shown too, the
least disturbed figure on a shared machine), the bandwidth roofline (minimal bytes moved divided by
the machine's measured copy bandwidth) as ``roofline_x`` = bnlab time / roofline time, and the
peak extra resident memory of one call (sampled from /proc, Linux only; bnlab's output cache is
emptied and off for that call, so reused buffers do not hide the output).

Minimal bytes: forward 2 tensors (read x, write y), backward 3 (read dy and x, write dx),
forward + backward 5. The bandwidth is measured in the same run (copy: bytes read + written per
second; read: a sum over a large buffer).

Usage::

    bnlab bench                      # all cases, table + JSON (bench.json); also `make bench`
    bnlab bench --quick              # tiny cases, few reps: a smoke run
    python -m bnlab.bench.kernels --cases 256x64x28x28 --reps 30 --json out.json

Peers are timed with ``bnlab.bench.timing`` (interleaved rounds); the JSON is written
atomically (``bnlab.lab.files.atomic_write_text``).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import bnlab
from bnlab.bench.command import main_of, save_and_show
from bnlab.bench.timing import interleave, medians, timed
from bnlab.functional import batch_norm, batch_norm_act
from bnlab.kernels import output_cache

__all__ = ["CASES", "Case", "add_arguments", "main", "run", "run_from_args"]


@dataclass(frozen=True)
class Case:
    """One benchmark input: its shape and whether it is channels_last."""

    shape: tuple[int, ...]
    channels_last: bool = False

    @property
    def name(self) -> str:
        return "x".join(map(str, self.shape)) + ("_cl" if self.channels_last else "")

    def make(self, dtype: torch.dtype) -> torch.Tensor:
        x = torch.randn(self.shape, dtype=dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


CASES = [
    Case((256, 64, 28, 28)),
    Case((256, 64, 28, 28), channels_last=True),
    Case((32, 256, 56, 56)),
    Case((1000, 6, 12, 12)),
    Case((64, 6, 12, 12)),
    Case((4096, 1024)),
    Case((1000, 120)),
]
QUICK_CASES = [Case((8, 6, 5, 5)), Case((8, 6, 5, 5), channels_last=True), Case((16, 10))]
OPS = ("train_fwd", "eval_fwd", "bwd", "fwd_bwd", "bn_relu")
#: tensors of the input's size that the op must move at least (see the module docstring).
MIN_TENSORS = {"train_fwd": 2, "eval_fwd": 2, "bwd": 3, "fwd_bwd": 5, "bn_relu": 5}


@dataclass
class Row:
    case: str
    op: str
    times_ms: dict[str, float] = field(default_factory=dict)
    min_times_ms: dict[str, float] = field(default_factory=dict)
    peak_extra_mb: dict[str, float] = field(default_factory=dict)
    speedup: float = float("nan")
    roofline_ms: float = float("nan")
    roofline_x: float = float("nan")


# ------------------------------------------------------------------------------ measurement


def _times_ms(
    fns: dict[str, Callable[[], Any]], reps: int, warmup: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(median, min) wall time of each function in ms, interleaved rep by rep after warm-up."""
    times = interleave({name: timed(fn) for name, fn in fns.items()}, reps, warmup)
    return (
        {k: v * 1e3 for k, v in medians(times).items()},
        {k: min(v) * 1e3 for k, v in times.items()},
    )


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_mb(fn: Callable[[], Any]) -> float:
    """Peak resident memory above the starting level during one call of ``fn``, in MB.

    A sampling thread reads /proc/self/statm while ``fn`` runs (torch ops and bnlab's kernels
    release the GIL), so short peaks can be missed; NaN where /proc is not available.
    """
    if not os.path.exists("/proc/self/statm"):
        return float("nan")
    gc.collect()
    base = _rss_bytes()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = fn()
        peak = max(peak, _rss_bytes())
    finally:
        done.set()
        thread.join()
    del out
    return (peak - base) / 1e6


def _peak_without_cache(fn: Callable[[], Any]) -> float:
    """``peak_extra_mb`` with bnlab's output cache emptied and off: a cached buffer is memory
    already resident, so reusing one would hide the output's real footprint."""
    previous = output_cache.set_output_cache(0)
    try:
        return peak_extra_mb(fn)
    finally:
        output_cache.set_output_cache(previous)


def bandwidth_gbs(nbytes: int = 256 << 20, reps: int = 10) -> dict[str, float]:
    """Copy (read + write) and read bandwidth of this machine, GB/s, with torch's threads."""
    n = nbytes // 4
    src = torch.randn(n)
    dst = torch.empty_like(src)
    t, _ = _times_ms({"copy": lambda: dst.copy_(src), "read": lambda: src.sum()}, reps, 2)
    return {"copy": 2 * nbytes / t["copy"] / 1e6, "read": nbytes / t["read"] / 1e6}


# -------------------------------------------------------------------------------------- peers


def plain_batch_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> Any:
    """Training batch norm in plain torch ops: the input of the torch.compile peer."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return (x - mean) * torch.rsqrt(var + eps) * w.view(shape) + b.view(shape)


def _peers(
    case: Case, dtype: torch.dtype, compiled: Callable[..., Any] | None
) -> dict[str, dict[str, Callable[[], Any]]]:
    """For each op, the functions to time, keyed by peer name."""
    x = case.make(dtype)
    c = x.shape[1]
    w, b = torch.randn(c, dtype=dtype), torch.randn(c, dtype=dtype)
    rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    dy = torch.randn_like(x)
    xg, wg, bg = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    params = (xg, wg, bg)

    def torch_train(rm: torch.Tensor = rm, rv: torch.Tensor = rv) -> Any:
        return F.batch_norm(xg, rm, rv, wg, bg, True, 0.1, 1e-5)

    def bnlab_train(rm: torch.Tensor = rm, rv: torch.Tensor = rv) -> Any:
        return batch_norm(xg, rm, rv, wg, bg, True, 0.1, 1e-5)

    def bwd_of(forward: Callable[..., Any]) -> Callable[[], Any]:
        # own running buffers: torch saves them for its backward, later calls would bump them
        y = forward(rm.clone(), rv.clone())
        return lambda: torch.autograd.grad(y, params, dy, retain_graph=True)

    def fwd_bwd(forward: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: torch.autograd.grad(forward(), params, dy)

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()

        return run

    ops: dict[str, dict[str, Callable[[], Any]]] = {
        "train_fwd": {
            "torch": no_grad(torch_train),
            "bnlab": no_grad(bnlab_train),
        },
        "eval_fwd": {
            "torch": no_grad(lambda: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)),
            "bnlab": no_grad(lambda: batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)),
        },
        "bwd": {"torch": bwd_of(torch_train), "bnlab": bwd_of(bnlab_train)},
        "fwd_bwd": {"torch": fwd_bwd(torch_train), "bnlab": fwd_bwd(bnlab_train)},
        "bn_relu": {
            "torch": fwd_bwd(lambda: torch.relu(torch_train())),
            "bnlab": fwd_bwd(
                lambda: batch_norm_act(xg, rm, rv, wg, bg, True, 0.1, 1e-5, activation="relu")
            ),
            "bnlab_then_relu": fwd_bwd(lambda: torch.relu(bnlab_train())),
        },
    }
    if compiled is not None:
        ops["train_fwd"]["compiled"] = no_grad(lambda: compiled(xg, wg, bg, 1e-5))
        ops["fwd_bwd"]["compiled"] = fwd_bwd(lambda: compiled(xg, wg, bg, 1e-5))
    return ops


# ---------------------------------------------------------------------------------------- run


def run(
    cases: list[Case],
    reps: int,
    warmup: int,
    dtype: torch.dtype = torch.float32,
    with_compile: bool = True,
    ops: tuple[str, ...] = OPS,
    measure_memory: bool = True,
) -> dict[str, Any]:
    """Measure everything; returns the JSON-ready result."""
    bw = bandwidth_gbs()
    compile_s: dict[str, float] = {}
    rows: list[Row] = []
    for case in cases:
        compiled = None
        if with_compile:  # a fresh compilation per case: no recompile limit, clean timing
            torch._dynamo.reset()
            compiled = torch.compile(plain_batch_norm, dynamic=False)
        peers = _peers(case, dtype, compiled)
        if compiled is not None:  # compile (and autotune) outside the timed region
            t0 = time.perf_counter()
            peers["train_fwd"]["compiled"]()
            peers["fwd_bwd"]["compiled"]()
            compile_s[case.name] = time.perf_counter() - t0
        nbytes = torch.Size(case.shape).numel() * dtype.itemsize
        for op in ops:
            fns = peers[op]
            median, fastest = _times_ms(fns, reps, warmup)
            row = Row(case.name, op, median, fastest)
            row.speedup = row.times_ms["torch"] / row.times_ms["bnlab"]
            row.roofline_ms = MIN_TENSORS[op] * nbytes / bw["copy"] / 1e6
            row.roofline_x = row.times_ms["bnlab"] / row.roofline_ms
            if measure_memory:
                row.peak_extra_mb = {k: _peak_without_cache(fn) for k, fn in fns.items()}
            rows.append(row)
    return {
        "bnlab_version": bnlab.__version__,
        "torch_version": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "reps": reps,
        "warmup": warmup,
        "bandwidth_gbs": bw,
        "compile_seconds": compile_s,
        "rows": [asdict(r) for r in rows],
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    bw = result["bandwidth_gbs"]
    table = Table(
        title=(
            f"bnlab vs torch {result['torch_version']}, {result['dtype']}, "
            f"{result['threads']} threads, median of {result['reps']} "
            f"(copy {bw['copy']:.1f} GB/s, read {bw['read']:.1f} GB/s)"
        )
    )
    for col in (
        "case",
        "op",
        "torch ms",
        "bnlab ms",
        "speedup",
        "min-time speedup",
        "other peer ms",
    ):
        table.add_column(col, justify="left" if col in ("case", "op") else "right")
    for col in ("roofline x", "peak MB bnlab/torch"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        t, t_min = r["times_ms"], r["min_times_ms"]
        other = ", ".join(f"{k} {v:.3f}" for k, v in t.items() if k not in ("torch", "bnlab"))
        mem = r["peak_extra_mb"]
        mem_s = f"{mem['bnlab']:.0f}/{mem['torch']:.0f}" if mem else "-"
        table.add_row(
            r["case"],
            r["op"],
            f"{t['torch']:.3f}",
            f"{t['bnlab']:.3f}",
            f"{r['speedup']:.2f}x",
            f"{t_min['torch'] / t_min['bnlab']:.2f}x",
            other,
            f"{r['roofline_x']:.2f}",
            mem_s,
        )
    Console(width=max(Console().width, 150)).print(table)
    if result["compile_seconds"]:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in result["compile_seconds"].items())
        Console().print(f"torch.compile peer, compile time (train_fwd + fwd_bwd): {parts}")


def _parse_case(text: str) -> Case:
    cl = text.endswith("_cl")
    dims = text.removesuffix("_cl").split("x")
    try:
        shape = tuple(int(d) for d in dims)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a case is like 256x64x28x28 or 256x64x28x28_cl, got {text!r}"
        ) from None
    if not 2 <= len(shape) <= 5 or (cl and len(shape) != 4):
        raise argparse.ArgumentTypeError(f"expected 2 to 5 sizes (channels_last: 4), got {text!r}")
    return Case(shape, cl)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options, on its own parser or on the ``bnlab bench`` subcommand."""
    parser.add_argument("--quick", action="store_true", help="tiny cases, 5 reps, no compile")
    parser.add_argument("--cases", nargs="+", type=_parse_case, help="e.g. 256x64x28x28_cl")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 30)")
    parser.add_argument(  # default None: --models has its own (bnlab.bench.models)
        "--warmup", type=int, default=None, help="untimed calls per peer first (default 10)"
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory sampling")
    parser.add_argument("--json", default=None, help="output path (default bench.json)")


def run_from_args(args: argparse.Namespace) -> int:
    """Measure as the options say, write the JSON, print the table."""
    reps = args.reps if args.reps is not None else (5 if args.quick else 30)
    if reps < 1:
        raise SystemExit(f"--reps must be >= 1, got {reps}")
    cases = args.cases or (QUICK_CASES if args.quick else CASES)
    result = run(
        cases,
        reps,
        max(1, 10 if args.warmup is None else args.warmup),
        getattr(torch, args.dtype),
        with_compile=not (args.no_compile or args.quick),
        ops=tuple(args.ops),
        measure_memory=not args.no_memory,
    )
    return save_and_show(result, Path(args.json or "bench.json"), print_table)


def main(argv: list[str] | None = None) -> int:
    """``python -m bnlab.bench.kernels`` (``bnlab bench`` and ``make bench`` run the same)."""
    return main_of("python -m bnlab.bench.kernels", __doc__, add_arguments, run_from_args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
