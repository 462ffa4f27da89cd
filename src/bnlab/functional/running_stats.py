"""The running-statistics update shared by every BN variant.

Conventions (PyTorch's):
- ``running = (1 - momentum) * running + momentum * batch``; ``momentum=None`` means the
  cumulative average, ``momentum = 1 / num_batches_tracked``.
- The running variance is updated with the *unbiased* batch variance, ``var * n / (n - 1)``,
  while normalization itself uses the biased one.

Unlike PyTorch, a batch whose statistics are not finite (NaN or Inf in the input) does not
touch the running statistics: the update is skipped and a warning is issued once per process.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

_warned_non_finite = False

_NUMPY_DTYPES = (torch.float32, torch.float64)


def _numpy_views(*ts: torch.Tensor | None) -> list[np.ndarray | None] | None:
    """NumPy views sharing memory with ``ts`` (None stays None) if all are CPU float32/64.

    On small per-channel vectors a NumPy op costs about a microsecond, a torch op several; the
    update below is about eight of them per training step, so CPU tensors take this path.
    """
    views: list[np.ndarray | None] = []
    for t in ts:
        if t is None:
            views.append(None)
        elif t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES and type(t) is torch.Tensor:
            views.append(t.detach().numpy())
        else:
            return None
    return views


def warn_non_finite() -> None:
    """Warn (once per process) that a batch's statistics were not finite and were skipped."""
    global _warned_non_finite
    if not _warned_non_finite:
        warnings.warn(
            "bnlab: batch statistics are not finite (NaN or Inf in the input); the running "
            "statistics were left unchanged for this batch (warned once)",
            RuntimeWarning,
            stacklevel=4,
        )
        _warned_non_finite = True


def update_running_stats(
    running_mean: torch.Tensor | None, running_var: torch.Tensor | None, mean: torch.Tensor,
    var: torch.Tensor, count: int, momentum: float | None,
    num_batches_tracked: torch.Tensor | None = None,
) -> bool:  # fmt: skip
    """Fold one batch's ``mean`` and biased ``var`` (over ``count`` values) into the buffers.

    Increments ``num_batches_tracked`` when given. Returns False if the update was skipped
    because the batch statistics were not finite. The formula (``blend``) is computed in float64
    and rounded once to the buffer's dtype: in float32, ``r + f * (v - r)`` with f = 1 (the first
    cumulative step) would lose v's low digits when v is far below r. CPU float32/float64
    buffers are updated in place through NumPy views (a NumPy op costs about a microsecond on
    these small vectors, a torch op several), others with torch ops; the compiled CPU kernels
    keep a copy of this function (``kernels.cpu_entries._fold_running``), which
    tests/test_running_stats.py checks bit for bit against this one.
    """
    if (running_mean is None and running_var is None) or count == 0:
        # nothing to update, or an empty batch (nothing to learn from, as in PyTorch)
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return True
    views = _numpy_views(running_mean, running_var, mean, var)
    finite = (
        all(np.isfinite(a).all() for a in views[2:] if a is not None)
        if views is not None
        else bool(torch.isfinite(mean).all() and torch.isfinite(var).all())
    )
    if not finite:
        warn_non_finite()
        return False
    tracked = _count_batch(num_batches_tracked)
    if momentum is None:
        if num_batches_tracked is None:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
        factor = 1.0 / tracked
    else:
        factor = momentum
    correction = count / (count - 1) if count > 1 else 1.0
    if views is not None:
        rm, rv, m, v = views
        for running, batch, corr in ((rm, m, 1.0), (rv, v, correction)):
            if running is not None and batch is not None:
                running[...] = blend(
                    running.astype(np.float64), batch.astype(np.float64), factor, corr
                )
        return True
    with torch.no_grad():
        for buffer, stat, corr in ((running_mean, mean, 1.0), (running_var, var, correction)):
            if buffer is not None:
                wide = torch.float32 if buffer.device.type == "mps" else torch.float64
                buffer.copy_(blend(buffer.to(wide), stat.to(wide), factor, corr))
    return True


def blend(running: Any, batch: Any, factor: float, correction: float) -> Any:
    """``running + factor * (batch * correction - running)``: the one formula of the update, on
    float64 NumPy arrays or torch tensors alike (``correction`` is n / (n - 1) for the variance,
    1 for the mean)."""
    return running + factor * (batch * correction - running)


def _count_batch(num_batches_tracked: torch.Tensor | None) -> int:
    """Increment the counter (if any) and return its new value (0 without a counter)."""
    if num_batches_tracked is None:
        return 0
    if num_batches_tracked.device.type == "cpu":
        counter = num_batches_tracked.detach().numpy()
        counter += 1
        return int(counter)
    num_batches_tracked.add_(1)
    return int(num_batches_tracked.item())
