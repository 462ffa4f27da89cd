"""Which modules the BN-family transforms treat as batch norm, and their rank and eval affine."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.layers._base import BatchNormBase
from bnlab.layers.frozen import FrozenBatchNormBase


def is_trainable_bn(module: nn.Module) -> bool:
    """torch's BatchNorm*/SyncBatchNorm (and subclasses) and every bnlab BatchNormBase layer."""
    return isinstance(module, _BatchNorm | BatchNormBase)


def is_bn_like(module: nn.Module) -> bool:
    """A trainable BN layer or a FrozenBatchNorm."""
    return is_trainable_bn(module) or isinstance(module, FrozenBatchNormBase)


def bn_rank(module: nn.Module) -> int:
    """1, 2 or 3 for a BN layer of that kind (a layer accepting any rank counts as 2d)."""
    for torch_cls, rank in ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3)):
        if isinstance(module, torch_cls):
            return rank
    dims = getattr(module, "expected_dims", ())
    if 4 in dims or not dims:
        return 2
    return 3 if 5 in dims else 1


def eval_scale_shift(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel (scale, shift) in float64 such that the layer's eval output is
    ``x * scale + shift``, or None if its eval output is not a fixed affine map (no running
    statistics: eval then normalizes with batch statistics)."""
    if not is_bn_like(module):
        return None
    mean = getattr(module, "running_mean", None)
    var = getattr(module, "running_var", None)
    if mean is None or var is None:
        return None
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    scale = torch.rsqrt(var.detach().double() + float(module.eps))  # type: ignore[arg-type]
    if weight is not None:
        scale = scale * weight.detach().double()
    shift = -mean.detach().double() * scale
    if bias is not None:
        shift = shift + bias.detach().double()
    return scale, shift
