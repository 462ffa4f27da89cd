"""Kernel families behind bnlab's functional ops, and the one place that picks between them.

Every family exposes the same five functions, all on a channel axis of 1 (input laid out as
(N, C, *spatial); any strides, though a family may copy odd ones to a dense layout first):

``batch_stats(x) -> (mean, var)``
    per-channel mean and *biased* variance, accumulated in ``acc_dtype(x.dtype)``;
``normalize(x, mean, invstd, weight, bias, activation="identity") -> y``
    ``y = act((x - mean) * invstd * weight + bias)``; ``y`` has x's dtype, and x's memory
    format when x is contiguous or channels_last (contiguous otherwise);
``eval_forward(x, mean, var, weight, bias, eps, activation="identity") -> y``
    ``normalize`` with invstd = 1 / sqrt(var + eps) (eval mode, running statistics);
``forward_train(x, weight, bias, eps, activation="identity", running=None) -> TrainOutput``
    (y, mean, var, invstd, folded): the two above in one go (a fused family may read x fewer
    times), and the batch folded into ``running`` (a ``RunningStats``) if the family can
    (``folded`` True, or False when the statistics were not finite); ``folded`` None leaves
    the running update to the caller;
``backward(dy, x, mean, invstd, weight, batch_stats, need_input_grad, bias=None,
activation="identity") -> (dx, sum(dz * xhat), sum(dz))``
    closed-form gradients, dz = dy * act'(z) with z the pre-activation recomputed from x (so
    ``bias`` matters only with an activation); with ``batch_stats`` False (eval mode) mean and
    invstd are constants; dx is None when ``need_input_grad`` is False.

``weight``/``bias`` may be None (affine=False). Statistics tensors are 1-D of length C.
``activation`` is one of ``"identity"``, ``"relu"``, ``"silu"``, ``"hardswish"``.

Families: ``portable`` (torch ops: any device and dtype) and ``cpu`` (Numba, compiled on first
use: CPU float32/float64). ``select`` is the only place that chooses; ``cpu`` is imported on
the first CPU call, so importing bnlab neither imports Numba nor compiles anything.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from bnlab.kernels import portable
from bnlab.kernels.common import RunningStats, TrainOutput, acc_dtype

__all__ = [
    "CPU_MIN_NUMEL",
    "RunningStats",
    "TrainOutput",
    "acc_dtype",
    "portable",
    "select",
    "set_backend",
    "warm_up",
]

#: below this many elements ``portable`` runs instead of ``cpu``. 0: measured on (8, 4) up to
#: (4096, 1024), the portable family (several torch ops per call) was never clearly faster than
#: the compiled one, whose small-input cost is the same Python overhead plus one kernel call.
CPU_MIN_NUMEL = 0

_CPU_DTYPES = (torch.float32, torch.float64)
_backend = "auto"
_cpu: ModuleType | None = None


def set_backend(name: str) -> str:
    """Force ``"portable"`` or ``"cpu"``, or restore ``"auto"``; returns the previous setting.

    Meant for tests and benchmarks that compare the families; ``"cpu"`` still falls back to
    ``portable`` where the compiled family does not apply (other devices, other dtypes).
    """
    global _backend
    if name not in ("auto", "cpu", "portable"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'portable', got {name!r}")
    previous, _backend = _backend, name
    return previous


def _cpu_family() -> ModuleType:
    global _cpu
    if _cpu is None:
        from bnlab.kernels import cpu

        _cpu = cpu
    return _cpu


def select(x: torch.Tensor) -> ModuleType:
    """Choose the kernel family for ``x`` by device, dtype and size (the only dispatch point).

    ``cpu`` for CPU float32/float64 tensors with at least ``CPU_MIN_NUMEL`` elements (any
    layout: it copies odd strides to a dense tensor itself), ``portable`` for everything else
    (GPU and other devices, float16/bfloat16, tiny inputs).
    """
    if (
        _backend != "portable"
        and x.is_cpu
        and x.dtype in _CPU_DTYPES
        and (_backend == "cpu" or x.numel() >= CPU_MIN_NUMEL)
    ):
        return _cpu_family()
    return portable


def warm_up(dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> None:
    """Compile (or load from the disk cache) the plain-BN CPU kernels for ``dtypes``, now.

    Call it in a parent process before starting several processes that use bnlab on one
    machine: with an empty Numba cache they would otherwise all compile and write the same
    cache files at once, which Numba does not guard against (numba/numba#4807; seen here as a
    worker's C++ abort in a fresh clone). Covers every layout and work split the CPU family
    distinguishes (rows, cols, ncs in tasks, ncs one task per channel), serial and parallel.
    """
    for dtype in dtypes:
        done: set[tuple[tuple[int, ...], torch.memory_format]] = set()
        for shape, fmt in (
            ((4, 3), torch.contiguous_format),
            ((4, 3, 5), torch.contiguous_format),  # the cols view
            ((4, 3, 128), torch.contiguous_format),
            ((4, 4, 128), torch.contiguous_format),
            ((4, 3, 2, 2), torch.channels_last),
        ) * 2:  # small (the serial twins), then as many samples as make the parallel entries run
            if (shape, fmt) in done:
                numel = math.prod(shape)
                shape = (-(-_cpu_family().SERIAL_NUMEL // numel) * shape[0], *shape[1:])
            done.add((shape, fmt))
            x = torch.randn(shape, dtype=dtype).contiguous(memory_format=fmt)
            kern = select(x)
            c = shape[1]
            weight, bias = torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype)
            running = RunningStats(
                torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype), None, 0.1
            )
            y, mean, var, invstd, _ = kern.forward_train(x, weight, bias, 1e-5, running=running)
            kern.batch_stats(x)
            kern.normalize(x, mean, invstd, weight, bias)
            kern.eval_forward(x, mean, var, weight, bias, 1e-5)
            for batch_stats in (True, False):
                kern.backward(torch.ones_like(y), x, mean, invstd, weight, batch_stats, True, bias)
