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
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    count: int,
    momentum: float | None,
    num_batches_tracked: torch.Tensor | None = None,
) -> bool:
    """Fold one batch's ``mean`` and biased ``var`` (over ``count`` values) into the buffers.

    Increments ``num_batches_tracked`` when given. Returns False if the update was skipped
    because the batch statistics were not finite. CPU float32/float64 tensors are updated in
    place through NumPy views (same formulas), other devices and dtypes with torch ops.
    """
    if running_mean is None and running_var is None:
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return True
    if count == 0:  # empty batch: nothing to learn from, as in PyTorch
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return True
    views = _numpy_views(running_mean, running_var, mean, var)
    if views is not None:
        rm, rv, m, v = views
        assert m is not None and v is not None
        if not (np.isfinite(m).all() and np.isfinite(v).all()):
            warn_non_finite()
            return False
        tracked = 0
        if num_batches_tracked is not None:
            if num_batches_tracked.device.type == "cpu":
                counter = num_batches_tracked.detach().numpy()
                counter += 1
                tracked = int(counter)
            else:
                num_batches_tracked.add_(1)
                tracked = int(num_batches_tracked.item())
        if momentum is None:
            if num_batches_tracked is None:
                raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
            factor = 1.0 / tracked
        else:
            factor = momentum
        # in float64, then rounded once: in float32, r + f * (v - r) with f = 1 (the first
        # cumulative step) would lose v's low digits when v is far below r
        if rm is not None:
            r = rm.astype(np.float64)
            rm[...] = r + factor * (m.astype(np.float64) - r)
        if rv is not None:
            r = rv.astype(np.float64)
            correction = count / (count - 1) if count > 1 else 1.0
            rv[...] = r + factor * (v.astype(np.float64) * correction - r)
        return True
    if not bool(torch.isfinite(mean).all() and torch.isfinite(var).all()):
        warn_non_finite()
        return False
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
    if momentum is None:
        if num_batches_tracked is None:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
        factor = 1.0 / float(num_batches_tracked.item())
    else:
        factor = momentum
    with torch.no_grad():
        if running_mean is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), factor)
        if running_var is not None:
            unbiased = var * (count / (count - 1)) if count > 1 else var
            running_var.lerp_(unbiased.to(running_var.dtype), factor)
    return True
