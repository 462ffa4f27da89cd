"""``freeze`` / ``unfreeze``: swap BN layers for FrozenBatchNorm and back, keeping every value.

Freezing is what detection and segmentation fine-tuning does with small per-GPU batches: batch
statistics of 2 images are too noisy, so the pretrained statistics and affine are used as
constants. ``freeze`` copies weight, bias (ones/zeros for ``affine=False``), running statistics,
``num_batches_tracked``, eps and momentum; ``unfreeze`` gives back trainable bnlab (or torch)
BatchNorm layers with those same values, ``requires_grad=True`` and the frozen layer's mode.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d
from bnlab.layers.frozen import (
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    FrozenBatchNorm3d,
    FrozenBatchNormBase,
)
from bnlab.transforms._bn_kinds import bn_rank, is_trainable_bn

_FROZEN: dict[int, type[FrozenBatchNormBase]] = {
    1: FrozenBatchNorm1d,
    2: FrozenBatchNorm2d,
    3: FrozenBatchNorm3d,
}
_BNLAB: dict[int, type[nn.Module]] = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_TORCH: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _frozen_from(bn: Any, path: str) -> FrozenBatchNormBase:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"cannot freeze {path or 'the model'} ({type(bn).__name__}): it has no running "
            "statistics (track_running_stats=False), so it has nothing to freeze"
        )
    rm = bn.running_mean
    frozen = _FROZEN[bn_rank(bn)](
        bn.num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.weight is not None,
        device=rm.device,
        dtype=rm.dtype,
    )
    with torch.no_grad():
        if bn.weight is not None:
            frozen.weight = _copy(bn.weight)
        if bn.bias is not None:
            frozen.bias = _copy(bn.bias)
        frozen.running_mean = _copy(bn.running_mean)
        frozen.running_var = _copy(bn.running_var)
        if getattr(bn, "num_batches_tracked", None) is not None:
            frozen.num_batches_tracked = _copy(bn.num_batches_tracked)
    frozen.train(bn.training)
    return frozen


def freeze(model: nn.Module) -> nn.Module:
    """Replace every BN layer of ``model`` (torch's or bnlab's, any variant) by a
    FrozenBatchNorm1d/2d/3d holding copies of its values.

    Works in place on the children and returns the model (or the frozen layer, if ``model`` is
    itself a BN layer). A BN layer without running statistics raises ValueError, naming it.
    SyncBatchNorm and other rank-agnostic layers become FrozenBatchNorm2d.
    """
    return _freeze(model, "")


def _freeze(model: nn.Module, path: str) -> nn.Module:
    if is_trainable_bn(model):
        return _frozen_from(model, path)
    for name, child in model.named_children():
        new = _freeze(child, f"{path}.{name}" if path else name)
        if new is not child:
            setattr(model, name, new)
    return model


def unfreeze(model: nn.Module, to: Literal["bnlab", "torch"] = "bnlab") -> nn.Module:
    """Replace every FrozenBatchNorm layer of ``model`` by a trainable BatchNorm1d/2d/3d
    (bnlab's, or torch's with ``to="torch"``) with the same values, eps, momentum and mode."""
    if to not in ("bnlab", "torch"):
        raise ValueError(f"to must be 'bnlab' or 'torch', got {to!r}")
    if isinstance(model, FrozenBatchNormBase):
        return _unfrozen_from(model, _BNLAB if to == "bnlab" else _TORCH)
    for name, child in model.named_children():
        new = unfreeze(child, to)
        if new is not child:
            setattr(model, name, new)
    return model


def _unfrozen_from(frozen: FrozenBatchNormBase, table: dict[int, type[nn.Module]]) -> nn.Module:
    rm = frozen.running_mean
    bn: Any = table[bn_rank(frozen)](
        frozen.num_features,
        eps=frozen.eps,
        momentum=frozen.momentum,
        affine=frozen.affine,
        track_running_stats=True,
        device=rm.device,
        dtype=rm.dtype,
    )
    with torch.no_grad():
        if frozen.affine:
            bn.weight.copy_(frozen.weight)
            bn.bias.copy_(frozen.bias)
        bn.running_mean.copy_(frozen.running_mean)
        bn.running_var.copy_(frozen.running_var)
        bn.num_batches_tracked.copy_(frozen.num_batches_tracked)
    bn.train(frozen.training)
    return bn
