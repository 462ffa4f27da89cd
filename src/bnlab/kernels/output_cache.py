"""A cache of freed large output buffers for the CPU family, so outputs skip the page faults.

A fresh large tensor is memory the kernel hands out untouched (glibc serves large blocks
with mmap, and returns them on free); the first write to every 4 KiB page then traps into the
kernel, which zeroes the page. On a (256, 64, 28, 28) float32 output that costs more than the
normalization itself (measured: eval forward 5.2 ms into a fresh output, 2.1 ms into a reused
one). GPU frameworks solve this with a caching allocator; this module is a small one for the
outputs of bnlab's CPU kernels (y, dx) only.

How it stays safe: a buffer is a NumPy byte array kept by this module. Each output tensor is
a base tensor (``set_``, not an autograd view) over the storage of ``torch.from_numpy`` of a
fresh *view* of that buffer; every tensor that shares the output's storage keeps that view
alive, and the buffer returns to the cache only when the view is garbage (a weak reference's
callback), i.e. when no tensor can reach the memory.

Policy: only outputs of at least ``MIN_BYTES``; exact-size reuse (a training loop asks for the
same sizes every step); at most ``limit`` bytes of *idle* buffers are kept, beyond that freed
buffers go back to the system. ``set_output_cache(0)`` (or ``BNLAB_OUTPUT_CACHE_MB=0``) turns it
off. Tensors from the cache behave like any CPU tensor, except that ``resize_`` cannot grow
them (as for any ``torch.from_numpy`` tensor), and in-place ops on them are recorded by autograd
as on any other tensor.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np
import torch

__all__ = ["MIN_BYTES", "cached_bytes", "empty_like", "set_output_cache"]

#: outputs below this size come from torch's allocator (malloc serves small blocks from its
#: heap, without faults once warm). Above it, whether malloc returns a freed block to the system
#: depends on its history (glibc's mmap threshold moves), which made the same call vary 2x.
MIN_BYTES = 1 << 20

_MB = 1 << 20


def _limit_from_environment() -> int:
    text = os.environ.get("BNLAB_OUTPUT_CACHE_MB", "1024")
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes >= 0:
        raise ValueError(f"BNLAB_OUTPUT_CACHE_MB must be a number of megabytes >= 0, got {text!r}")
    return int(megabytes * _MB)


_limit = _limit_from_environment()
_idle: dict[int, list[np.ndarray]] = {}
_idle_bytes = 0
_in_use: dict[int, tuple[weakref.ref[np.ndarray], np.ndarray]] = {}
_lock = threading.RLock()


def _new_lock_after_fork() -> None:
    """A forked child gets a fresh lock (another thread may have held it at the fork)."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def set_output_cache(megabytes: float) -> float:
    """Keep at most ``megabytes`` of idle output buffers (0 disables); returns the old limit."""
    global _limit
    if not megabytes >= 0:
        raise ValueError(f"megabytes must be >= 0, got {megabytes!r}")
    previous = _limit / _MB
    with _lock:
        _limit = int(megabytes * _MB)
        _trim()
    return previous


def cached_bytes() -> int:
    """Bytes of idle buffers held right now."""
    return _idle_bytes


def _trim() -> None:
    global _idle_bytes
    while _idle_bytes > _limit and _idle:
        nbytes = next(iter(_idle))
        bucket = _idle[nbytes]
        bucket.pop()
        _idle_bytes -= nbytes
        if not bucket:
            del _idle[nbytes]


def _give_back(ref: weakref.ref[np.ndarray]) -> None:
    global _idle_bytes
    _, buffer = _in_use.pop(id(ref))
    with _lock:
        if _idle_bytes + buffer.nbytes <= _limit:
            _idle.setdefault(buffer.nbytes, []).append(buffer)
            _idle_bytes += buffer.nbytes


def _take(nbytes: int) -> np.ndarray:
    global _idle_bytes
    with _lock:
        bucket = _idle.get(nbytes)
        if bucket:
            _idle_bytes -= nbytes
            return bucket.pop()
    buffer = np.empty(nbytes, dtype=np.uint8)
    return buffer


def empty_like(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """An uninitialized CPU tensor shaped like ``t``, dense in ``memory_format``.

    ``t`` must be dense in ``memory_format`` (contiguous or channels_last)."""
    nbytes = t.numel() * t.element_size()
    if nbytes < MIN_BYTES or _limit == 0:  # t is dense: its own format is memory_format
        return torch.empty_like(t)
    buffer = _take(nbytes)
    view = buffer.view()
    ref = weakref.ref(view, _give_back)
    _in_use[id(ref)] = (ref, buffer)
    storage = torch.from_numpy(view).untyped_storage()
    # ``set_`` makes a base tensor over the buffer's storage, not a view of another tensor:
    # autograd lets a custom Function's output be modified in place (ReLU(inplace=True) after
    # BN) only if it is not a view created inside that Function.
    out = torch.empty(0, dtype=t.dtype)
    return out.set_(storage, 0, t.shape, _dense_strides(t.shape, memory_format))


def _dense_strides(shape: torch.Size, memory_format: torch.memory_format) -> tuple[int, ...]:
    """Strides of a dense tensor of ``shape`` in ``memory_format`` (contiguous or channels_last)."""
    if memory_format == torch.contiguous_format:
        order = list(range(len(shape)))  # outermost first
    else:
        order = [0, *range(2, len(shape)), 1]  # N, spatial..., C innermost
    strides = [0] * len(shape)
    step = 1
    for dim in reversed(order):
        strides[dim] = step
        step *= shape[dim]
    return tuple(strides)
