"""Compiled CPU kernel family (Numba): fused, parallel over batch and channels, float32/float64.

Same interface as ``bnlab.kernels.portable`` (see ``bnlab.kernels``); the loops live in
``bnlab.kernels.cpu_numba``. Traffic per call, for an input of B bytes:

- ``forward_train``: reads x twice (statistics, then normalize) and writes y once;
- ``normalize`` (eval): reads x once, writes y once;
- ``backward``: one pass reading (dy, x) for sum(dz), sum(dz * xhat); one pass writing dx.

The activation (ReLU/SiLU) is fused into those same passes: its derivative is recomputed from x
inside them, so it costs no extra full-size pass and no extra saved tensor.

Layouts: contiguous (N, C, *spatial) is seen as (N, C, S); (N, C) and channels_last as rows of
C channels. Any other strides (transposed, expanded, sliced) are first copied to a contiguous
tensor, so a strided input is never read wrongly; the output is then contiguous, as in the
portable family. Numba's thread count follows ``torch.get_num_threads()`` (checked on every
call), so torch and bnlab never run more threads than torch is told to use.

This module imports Numba, but compiles nothing at import: each kernel is compiled on its first
call for a dtype/layout and cached on disk (``cache=True``), so later processes only load it.
"""

from __future__ import annotations

import ctypes
import sys

import numba
import numpy as np
import torch

from bnlab.kernels import cpu_numba as nk
from bnlab.kernels import portable
from bnlab.kernels.common import memory_format_of

__all__ = ["ACTIVATIONS", "backward", "batch_stats", "forward_train", "normalize"]

ACTIVATIONS = {"identity": 0, "relu": 1, "silu": 2}

#: values of one channel per task (ncs layout) or per row block (rows layout): about 64 KiB of
#: float32, small enough that the second statistics pass over a task reads from cache.
BLOCK = 16384

#: below this many elements a kernel runs on the calling thread only: waking and joining a
#: second thread costs more than it saves there (and is at the mercy of a busy machine).
SERIAL_NUMEL = 1 << 18

#: rows layout: at most this many tasks of whole row blocks, each with private (C,) sums. Fixed
#: (not the thread count) so that results do not depend on the number of threads.
ROW_TASKS = 16

_threads = -1

#: outputs at least this large get transparent huge pages (Linux madvise), see ``_empty_like``.
HUGE_BYTES = 4 << 20
_MADV_HUGEPAGE = 14
_HUGE = 2 << 20
_madvise = None
if sys.platform.startswith("linux"):
    try:
        _madvise = ctypes.CDLL(None, use_errno=True).madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):  # pragma: no cover - libc without madvise
        _madvise = None


def _empty_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(t)``, with large buffers backed by transparent huge pages.

    A fresh large output is mmap-ed memory; touching it page by page costs one page fault per
    4 KiB, which on a (256, 64, 28, 28) float32 output takes longer than the normalization
    itself. Asking for huge pages before the first write (what torch's own
    ``THP_MEM_ALLOC_ENABLE=1`` does) makes that 512 times fewer faults. Best effort only.
    """
    out = torch.empty_like(t)
    nbytes = out.numel() * out.element_size()
    if _madvise is not None and nbytes >= HUGE_BYTES:
        start = (out.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
        end = (out.data_ptr() + nbytes) & ~(_HUGE - 1)
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)
    return out


_MAX_THREADS: int = getattr(numba.config, "NUMBA_NUM_THREADS", 1)


def _sync_threads(numel: int) -> None:
    """Run Numba with torch's thread count (so the two never oversubscribe the cores)."""
    n = torch.get_num_threads() if numel >= SERIAL_NUMEL else 1
    n = max(1, min(n, _MAX_THREADS))
    if numba.get_num_threads() != n:  # a per-thread setting in Numba, hence no cache here
        numba.set_num_threads(n)


def _dense(x: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format]:
    """``x`` itself if contiguous or channels_last, else a contiguous copy; and its format."""
    fmt = memory_format_of(x)
    if fmt == torch.contiguous_format and not x.is_contiguous():
        x = x.contiguous()
    return x, fmt


def _view(t: torch.Tensor, fmt: torch.memory_format) -> tuple[bool, np.ndarray]:
    """(is_rows, NumPy view): rows (R, C) for (N, C) and channels_last, else (N, C, S)."""
    c = t.shape[1]
    if fmt != torch.contiguous_format:
        perm = (0, 2, 3, 1) if t.dim() == 4 else (0, 2, 3, 4, 1)
        return True, t.detach().permute(perm).reshape(-1, c).numpy()
    a = t.detach().numpy()  # contiguous here: a NumPy reshape is a view, and cheaper than torch's
    s = a.size // (t.shape[0] * c)
    if s == 1:
        return True, a.reshape(-1, c)
    return False, a.reshape(t.shape[0], c, s)


def _rows_per_block(c: int) -> int:
    return max(1, BLOCK // c)


def _np(
    t: torch.Tensor | None, n: int, fill: float, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """A per-channel parameter as read-only-use NumPy of ``dtype`` (``fill`` when None).

    May share memory with ``t`` (no copy when the dtype already matches): callers never write it.
    """
    if t is None:
        return np.full(n, fill, dtype=dtype)
    t = t.detach()
    if t.dtype in (torch.float32, torch.float64) and t.device.type == "cpu":
        return t.numpy().astype(dtype, copy=False)  # NumPy is cheaper than a torch op at size C
    return t.to(torch.float64).numpy().astype(dtype, copy=False)


def _to_acc(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A float64 per-channel NumPy result as a torch tensor of ``acc_dtype(dtype)``."""
    return torch.from_numpy(a if dtype == torch.float64 else a.astype(np.float32))


def _stats(is_rows: bool, xa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if is_rows:
        return nk.stats_rows(  # type: ignore[no-any-return]
            xa, _rows_per_block(xa.shape[1]), ROW_TASKS
        )
    return nk.stats_ncs(xa, BLOCK)  # type: ignore[no-any-return]


def _normalize64(
    xd: torch.Tensor,
    fmt: torch.memory_format,
    mean64: np.ndarray,
    invstd64: np.ndarray,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    act: int,
) -> torch.Tensor:
    c = xd.shape[1]
    dt = np.dtype(np.float32) if xd.dtype == torch.float32 else np.dtype(np.float64)
    scale = invstd64 * _np(weight, c, 1.0)
    m = mean64.astype(dt)
    s = scale.astype(dt)
    b = _np(bias, c, 0.0, dt)
    y = _empty_like(xd)
    is_rows, xa = _view(xd, fmt)
    _, ya = _view(y, fmt)
    one = dt.type(1)
    if is_rows:
        nk.normalize_rows(xa, m, s, b, act, one, ya, _rows_per_block(c))
    else:
        nk.normalize_ncs(xa, m, s, b, act, one, ya, BLOCK)
    return y


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance (float64 sums, Chan merge), in acc_dtype."""
    if x.numel() == 0:
        return portable.batch_stats(x)
    _sync_threads(x.numel())
    xd, fmt = _dense(x)
    mean64, var64 = _stats(*_view(xd, fmt))
    return _to_acc(mean64, x.dtype), _to_acc(var64, x.dtype)


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    activation: str = "identity",
) -> torch.Tensor:
    """``act((x - mean) * invstd * weight + bias)`` in one pass; y keeps x's memory format."""
    if x.numel() == 0:
        return portable.normalize(x, mean, invstd, weight, bias, activation)
    _sync_threads(x.numel())
    xd, fmt = _dense(x)
    m64 = _np(mean, 0, 0.0)
    i64 = _np(invstd, 0, 1.0)
    return _normalize64(xd, fmt, m64, i64, weight, bias, ACTIVATIONS[activation])


def forward_train(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: str = "identity",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch statistics then normalize: x read twice, y written once. Returns (y, mean, var)."""
    if x.numel() == 0:
        return portable.forward_train(x, weight, bias, eps, activation)
    _sync_threads(x.numel())
    xd, fmt = _dense(x)
    mean64, var64 = _stats(*_view(xd, fmt))
    invstd64 = 1.0 / np.sqrt(var64 + eps)
    y = _normalize64(xd, fmt, mean64, invstd64, weight, bias, ACTIVATIONS[activation])
    return y, _to_acc(mean64, x.dtype), _to_acc(var64, x.dtype)


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    batch_stats: bool,
    need_input_grad: bool,
    bias: torch.Tensor | None = None,
    activation: str = "identity",
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
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
    _sync_threads(x.numel())
    act = ACTIVATIONS[activation]
    xd, fmt = _dense(x)
    dyd = dy.to(x.dtype).contiguous(memory_format=fmt)
    is_rows, xa = _view(xd, fmt)
    _, dya = _view(dyd, fmt)
    c = xd.shape[1]
    dt = xa.dtype
    i64 = _np(invstd, 0, 1.0)
    m = _np(mean, 0, 0.0, dt)
    s = (i64 * _np(weight, c, 1.0)).astype(dt)
    b = _np(bias, c, 0.0, dt)
    if is_rows:
        rb = _rows_per_block(c)
        sum_dz, sum_dzxc = nk.bwd_sums_rows(dya, xa, m, s, b, act, rb, ROW_TASKS)
    else:
        sum_dz, sum_dzxc = nk.bwd_sums_ncs(dya, xa, m, s, b, act, BLOCK)
    sum_dz_xhat = sum_dzxc * i64
    dx = None
    if need_input_grad:
        if batch_stats:
            count = xd.numel() // c
            k1 = (sum_dz / count).astype(dt)
            k2 = (i64 * sum_dz_xhat / count).astype(dt)
        else:
            k1 = np.zeros(c, dtype=dt)
            k2 = k1
        dx = _empty_like(xd)
        _, dxa = _view(dx, fmt)
        one = dt.type(1)
        if is_rows:
            nk.bwd_dx_rows(dya, xa, m, s, b, act, one, k1, k2, dxa, rb)
        else:
            nk.bwd_dx_ncs(dya, xa, m, s, b, act, one, k1, k2, dxa, BLOCK)
    return dx, _to_acc(sum_dz_xhat, x.dtype), _to_acc(sum_dz, x.dtype)
