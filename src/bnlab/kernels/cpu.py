"""Compiled CPU kernel family (Numba): fused, parallel over batch and channels, float32/float64.

Same interface as ``bnlab.kernels.portable`` (see ``bnlab.kernels``); the loops live in
``bnlab.kernels.cpu_numba``, called through the one-call entries of
``bnlab.kernels.cpu_entries``. Traffic per call:

- ``forward_train``: reads x twice (statistics, then normalize) and writes y once; with one
  task per channel (``_by_channel``) the second read comes from cache;
- ``normalize`` / ``eval_forward``: reads x once, writes y once;
- ``backward``: one pass reading (dy, x) for sum(dz), sum(dz * xhat); one pass writing dx.

The activation (ReLU, SiLU, Hardswish) is fused into those same passes: its derivative is recomputed from x
inside them, so it costs no extra full-size pass and no extra saved tensor.

Layouts: contiguous (N, C, *spatial) is seen as (N, C, S); (N, C) and channels_last as rows of
C channels. Any other strides (transposed, expanded, sliced) are first copied to a contiguous
tensor, so a strided input is never read wrongly; the output is then contiguous, as in the
portable family. Numba's thread count follows ``torch.get_num_threads()`` (checked on every
call), so torch and bnlab never run more threads than torch is told to use; calls on fewer
than ``SERIAL_NUMEL`` values run the serial twins of the entries (``bnlab.kernels.serial``).
Large outputs of training steps and gradients come from ``bnlab.kernels.output_cache``
(reused buffers: no page faults); under no_grad, from torch's allocator (``_forward_output``).

This module imports Numba, but compiles nothing at import: each kernel is compiled on its first
call for a dtype/layout and cached on disk (``cache=True``), so later processes only load it.
"""

from __future__ import annotations

import threading
from typing import Any

import numba
import numpy as np
import torch

from bnlab.kernels import cpu_entries as entries
from bnlab.kernels import output_cache, portable, serial
from bnlab.kernels.common import RunningStats, TrainOutput, memory_format_of

__all__ = [
    "ACTIVATIONS",
    "backward",
    "batch_stats",
    "eval_forward",
    "forward_train",
    "normalize",
]

ACTIVATIONS = {"identity": 0, "relu": 1, "silu": 2, "hardswish": 3}

#: below this many elements a kernel runs its serial twin (``bnlab.kernels.serial``), on the
#: calling thread, with no OpenMP region: sharing so little out costs more than it saves.
#: Measured on (64, 6, 12, 12) float32 (55K values), isolated: backward 15.6 -> 10.6 us and
#: eval 5.4 -> 3.9 us on one thread instead of two.
SERIAL_NUMEL = 1 << 14

#: contiguous input with at most this many values per (sample, channel) runs in the ``cols``
#: view, rows (N, C * S) (``cpu_entries._rows_view``): a loop over a channel's S values is too
#: short to vectorize well there, and a loop that writes pays LLVM's overlap check per row.
#: Measured on float32 at batch 8-32, C = 40-576, 1 thread (ncs -> cols): eval (16, 576, 4, 4)
#: 89 -> 32 us, (16, 240, 7, 7) 62 -> 42, (16, 72, 10, 10) 29 -> 25, (16, 72, 14, 14) 52 -> 52;
#: training forward (16, 576, 4, 4) 132 -> 85, (16, 240, 7, 7) 110 -> 110; backward
#: (16, 576, 4, 4) 169 -> 129, (16, 240, 7, 7) 134 -> 172, (8, 512, 7, 7) 143 -> 252. Since
#: ``cpu_numba.normalize_ncs`` loops over whole-row views, eval needs the cols view only up to
#: 4x4: (32, 240, 7, 7) ncs 116 us, cols 109, torch 115; (32, 576, 4, 4) ncs 162, cols 74.
COLS_MAX_SPATIAL_NORMALIZE = 16
COLS_MAX_SPATIAL_TRAIN = 16
COLS_MAX_SPATIAL_BACKWARD = 16

_CONTIGUOUS = torch.contiguous_format

_MAX_THREADS: int = getattr(numba.config, "NUMBA_NUM_THREADS", 1)
_ONE = {torch.float32: np.float32(1), torch.float64: np.float64(1)}


_numba_threads = threading.local()


def _entries_for(numel: int) -> Any:
    """The compiled entries for a call on ``numel`` values: the serial twins below
    ``SERIAL_NUMEL``; else the parallel ones, with Numba's thread count made torch's.

    Never a parallel region of one thread between torch's regions: see
    ``bnlab.kernels.serial``. Numba's setting is per calling thread; the last value set is
    remembered per thread, since asking Numba costs about a microsecond.
    """
    if numel < SERIAL_NUMEL:
        return serial.entries
    torch_threads = torch.get_num_threads()
    n = max(1, min(torch_threads, _MAX_THREADS))
    if getattr(_numba_threads, "n", 0) != n:
        numba.set_num_threads(n)
        _numba_threads.n = n
        if torch.get_num_threads() != torch_threads:
            # Starting Numba's OpenMP pool sets the process-wide OpenMP thread count, which
            # torch shares (one libgomp): give torch back the count its user chose.
            torch.set_num_threads(torch_threads)
    return entries


def _dense(x: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format]:
    """``x`` itself if contiguous or channels_last, else a contiguous copy; and its format."""
    if x.is_contiguous():  # the common case first: this runs at every call
        return x, _CONTIGUOUS
    fmt = memory_format_of(x)
    return (x.contiguous() if fmt == _CONTIGUOUS else x), fmt


def _geometry(
    x: torch.Tensor, fmt: torch.memory_format, cols_max: int = 0
) -> tuple[int, int, int, bool, bool]:
    """(N, C, S, rows, cols) of a dense x: the rows view (``cpu_entries._rows_view``) for
    (N, C) and channels_last (rows (N * S, C)) and for contiguous x with at most ``cols_max``
    values per (sample, channel) (``cols``: rows (N, C * S)), else (N, C, S)."""
    shape = x.shape
    n, c = shape[0], shape[1]
    s = x.numel() // (n * c)
    rows = fmt != _CONTIGUOUS or s == 1
    cols = not rows and s <= cols_max
    return n, c, s, rows or cols, cols


def _by_channel(x: torch.Tensor, n: int, c: int, s: int, tensors: int) -> bool:
    """One task per channel (ncs layout, ``cpu_entries``): at least 4 channels to share out,
    rows short enough to sum in x's dtype, and the channel's ``tensors`` inputs within
    CHANNEL_BYTES. Depends on the shape only, never on the thread count, so results do not."""
    return (
        c >= 4
        and s <= entries.NCS_BLOCK
        and n * s * x.element_size() * tensors <= entries.CHANNEL_BYTES
    )


def _forward_output(x: torch.Tensor, xd: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """The forward's y, shaped as ``xd`` (x made dense): from the output cache for training
    (x requires grad, as inside the autograd Function's forward, where grad mode is off; or
    grad mode is on), from torch's allocator for inference (no_grad on an input that does not
    require grad: the cache's idle buffers would add to the peak memory what torch's allocator
    returns to the system; measured on efficientnet_b0, batch 32, 112 px: 227-251 MB peak with
    the cache, 146 MB for torch). Gradients (dx) always use the cache."""
    if x.requires_grad or torch.is_grad_enabled():
        return output_cache.empty_like(xd, fmt)
    return torch.empty_like(xd)


def _address(t: torch.Tensor | None, dtype: torch.dtype, keep: list[torch.Tensor]) -> int:
    """Address of a per-channel vector as C contiguous values of ``dtype`` (0 for None).

    A vector of another dtype, device or stride is converted first; the copy is appended to
    ``keep``, which the caller holds until the compiled call has returned.
    """
    if t is None:
        return 0
    if t.dtype is dtype and t.is_contiguous() and t.is_cpu:
        return t.data_ptr()
    copy = t.detach().to(device="cpu", dtype=dtype).contiguous()
    keep.append(copy)
    return copy.data_ptr()


def _in_place_address(t: torch.Tensor | None, dtype: torch.dtype) -> int | None:
    """Address of a buffer the kernel may update in place: 0 for None, None if it cannot."""
    if t is None:
        return 0
    if t.dtype is not dtype or not t.is_cpu or not t.is_contiguous():
        return None
    return t.data_ptr()


def _running_addresses(
    running: RunningStats | None, dtype: torch.dtype
) -> tuple[int, int, int, float] | None:
    """(running_mean, running_var, counter) addresses and momentum (-1 for None) for the kernel;
    None if some buffer cannot be updated in place (then the caller updates it)."""
    if running is None:
        return 0, 0, 0, 0.0
    rm = _in_place_address(running.running_mean, dtype)
    rv = _in_place_address(running.running_var, dtype)
    nbt = _in_place_address(running.num_batches_tracked, torch.int64)
    if rm is None or rv is None or nbt is None:
        return None
    momentum = -1.0 if running.momentum is None else running.momentum
    return rm, rv, nbt, momentum


def _stat_vectors(x: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.empty(x.shape[1], dtype=x.dtype) for _ in range(count))


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance (float64 sums, Chan merge), in acc_dtype."""
    if x.numel() == 0:
        return portable.batch_stats(x)
    xd, fmt = _dense(x)
    n, c, s, rows, cols = _geometry(xd, fmt, COLS_MAX_SPATIAL_TRAIN)  # as forward_train
    mean, var = _stat_vectors(x, 2)
    compiled = _entries_for(x.numel())
    args = entries.TrainForwardArgs(
        x=xd.data_ptr(), y=0, n=n, c=c, spatial=s, weight=0, bias=0, eps=1.0, act=0,
        mean_out=mean.data_ptr(), var_out=var.data_ptr(), invstd_out=0, running_mean=0,
        running_var=0, num_batches_tracked=0, momentum=0.0, proto=_ONE[x.dtype],
    )  # fmt: skip
    if rows:
        compiled.train_forward_rows(*args, cols)
    else:
        compiled.train_forward_ncs(*args, False)
    return mean, var


def _affine(
    x: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor, spread_is_var: bool, eps: float,
    weight: torch.Tensor | None, bias: torch.Tensor | None, activation: str,
) -> torch.Tensor:  # fmt: skip
    xd, fmt = _dense(x)
    n, c, s, rows, cols = _geometry(xd, fmt, COLS_MAX_SPATIAL_NORMALIZE)
    y = _forward_output(x, xd, fmt)
    dtype = x.dtype
    keep: list[torch.Tensor] = []
    compiled = _entries_for(x.numel())
    # positional, in AffineForwardArgs's order (keywords cost ~0.6 us more per call)
    args = entries.AffineForwardArgs(
        xd.data_ptr(), y.data_ptr(), n, c, s, _address(weight, dtype, keep),
        _address(bias, dtype, keep), _address(mean, dtype, keep), _address(spread, dtype, keep),
        spread_is_var, eps, ACTIVATIONS[activation], _ONE[dtype],
    )  # fmt: skip
    if rows:
        compiled.affine_forward_rows(*args, cols)
    else:
        compiled.affine_forward_ncs(*args)
    return y


def normalize(
    x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None, activation: str = "identity",
) -> torch.Tensor:  # fmt: skip
    """``act((x - mean) * invstd * weight + bias)`` in one pass; y keeps x's memory format."""
    if x.numel() == 0:
        return portable.normalize(x, mean, invstd, weight, bias, activation)
    return _affine(x, mean, invstd, False, 0.0, weight, bias, activation)


def eval_forward(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None, eps: float, activation: str = "identity",
) -> torch.Tensor:  # fmt: skip
    """Normalize with given statistics: invstd = 1 / sqrt(var + eps), computed in the kernel."""
    if x.numel() == 0:
        return portable.eval_forward(x, mean, var, weight, bias, eps, activation)
    return _affine(x, mean, var, True, eps, weight, bias, activation)


def forward_train(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
    activation: str = "identity", running: RunningStats | None = None,
) -> TrainOutput:  # fmt: skip
    """Batch statistics then normalize (x read twice, y written once), in one compiled call.

    Folds the batch into ``running`` in the same call when its buffers are CPU tensors of x's
    dtype (``folded`` True, or False for non-finite statistics); otherwise leaves it to the
    caller (``folded`` None).
    """
    if x.numel() == 0:
        return portable.forward_train(x, weight, bias, eps, activation)
    dtype = x.dtype
    xd, fmt = _dense(x)
    n, c, s, rows, cols = _geometry(xd, fmt, COLS_MAX_SPATIAL_TRAIN)
    y = _forward_output(x, xd, fmt)
    mean, var, invstd = _stat_vectors(x, 3)
    fold = _running_addresses(running, dtype)
    rm, rv, nbt, momentum = (0, 0, 0, 0.0) if fold is None else fold
    keep: list[torch.Tensor] = []
    compiled = _entries_for(x.numel())
    args = entries.TrainForwardArgs(  # positional, in its order (see _affine)
        xd.data_ptr(), y.data_ptr(), n, c, s, _address(weight, dtype, keep),
        _address(bias, dtype, keep), eps, ACTIVATIONS[activation], mean.data_ptr(),
        var.data_ptr(), invstd.data_ptr(), rm, rv, nbt, momentum, _ONE[dtype],
    )  # fmt: skip
    if rows:
        finite = compiled.train_forward_rows(*args, cols)
    else:
        finite = compiled.train_forward_ncs(*args, _by_channel(xd, n, c, s, 1))
    folded = None if running is None or fold is None else bool(finite)
    return TrainOutput(y, mean, var, invstd, folded)


def backward(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
    weight: torch.Tensor | None, batch_stats: bool, need_input_grad: bool,
    bias: torch.Tensor | None = None, activation: str = "identity",
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Closed-form gradients (see ``portable.backward``) in two passes over (dy, x).

    With z the pre-activation and dz = dy * act'(z) (recomputed from x in both passes):
    pass 1 sums dz and dz * (x - mean) per channel in float64; pass 2 writes
    dx = gain * (dz - sum(dz)/M - (x - mean) * invstd^2 * sum(dz * (x - mean))/M) in training,
    dx = gain * dz in eval. Returns (dx or None, sum(dz * xhat), sum(dz)).
    """
    if x.numel() == 0:
        return portable.backward(
            dy, x, mean, invstd, weight, batch_stats, need_input_grad, bias, activation
        )
    dtype = x.dtype
    xd, fmt = _dense(x)
    n, c, s, rows, cols = _geometry(xd, fmt, COLS_MAX_SPATIAL_BACKWARD)
    dyd = dy if dy.dtype == dtype else dy.to(dtype)
    if not dyd.is_contiguous(memory_format=fmt):
        dyd = dyd.contiguous(memory_format=fmt)
    dx = output_cache.empty_like(xd, fmt) if need_input_grad else None
    sum_dz_xhat, sum_dz = _stat_vectors(x, 2)
    keep: list[torch.Tensor] = []
    compiled = _entries_for(x.numel())
    args = entries.BackwardArgs(  # positional, in its order (see _affine)
        dyd.data_ptr(), xd.data_ptr(), 0 if dx is None else dx.data_ptr(), n, c, s,
        _address(weight, dtype, keep), _address(bias, dtype, keep), _address(mean, dtype, keep),
        _address(invstd, dtype, keep), batch_stats, ACTIVATIONS[activation],
        sum_dz_xhat.data_ptr(), sum_dz.data_ptr(), _ONE[dtype],
    )  # fmt: skip
    if rows:
        compiled.backward_rows(*args, cols)
    else:
        compiled.backward_ncs(*args, _by_channel(xd, n, c, s, 2))
    return dx, sum_dz_xhat, sum_dz
