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

import torch

_warned_non_finite = False


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
    because the batch statistics were not finite.
    """
    global _warned_non_finite
    if running_mean is None and running_var is None:
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return True
    if count == 0:  # empty batch: nothing to learn from, as in PyTorch
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        return True
    if not bool(torch.isfinite(mean).all() and torch.isfinite(var).all()):
        if not _warned_non_finite:
            warnings.warn(
                "bnlab: batch statistics are not finite (NaN or Inf in the input); the running "
                "statistics were left unchanged for this batch (warned once)",
                RuntimeWarning,
                stacklevel=3,
            )
            _warned_non_finite = True
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
