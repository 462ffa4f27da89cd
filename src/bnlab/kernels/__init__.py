"""Kernel families behind bnlab's functional ops, and the one place that picks between them.

Every family exposes the same four functions, all on a channel axis of 1 (input laid out as
(N, C, *spatial), contiguous or channels_last):

``batch_stats(x) -> (mean, var)``
    per-channel mean and *biased* variance, accumulated in ``acc_dtype(x.dtype)``;
``normalize(x, mean, invstd, weight, bias) -> y``
    ``y = (x - mean) * invstd * weight + bias``; ``y`` has x's dtype and memory format;
``forward_train(x, weight, bias, eps) -> (y, mean, var)``
    the two above in one go (a fused family may read x fewer times);
``backward(dy, x, mean, invstd, weight, batch_stats, need_input_grad) -> (dx, dweight, dbias)``
    closed-form gradients; with ``batch_stats`` False (eval mode) mean and invstd are constants.

``weight``/``bias`` may be None (affine=False). Statistics tensors are 1-D of length C.
"""

from __future__ import annotations

from types import ModuleType

import torch

from bnlab.kernels import portable
from bnlab.kernels.common import acc_dtype

__all__ = ["acc_dtype", "portable", "select"]


def select(x: torch.Tensor) -> ModuleType:
    """Choose the kernel family for ``x`` by device, dtype and layout (the only dispatch point)."""
    return portable
