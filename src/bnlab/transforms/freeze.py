"""``freeze`` / ``unfreeze``: swap BN layers for FrozenBatchNorm and back, keeping every value.

Freezing is what detection and segmentation fine-tuning does with small per-GPU batches: batch
statistics of 2 images are too noisy, so the pretrained statistics and affine are used as
constants. ``freeze`` copies weight, bias (ones/zeros for ``affine=False`` or ``bias=False``),
running statistics, ``num_batches_tracked``, eps and momentum; ``unfreeze`` gives back trainable
bnlab (or torch) BatchNorm layers with those same values, ``requires_grad=True`` and the frozen
layer's mode.

Norm+activation layers (timm's BatchNormAct2d, bnlab's BatchNormAct*) become
FrozenBatchNormAct* with the same ``drop`` and ``act`` children, as timm's
``freeze_batch_norm_2d`` does: the activation is never lost. Layers that are frozen already
(bnlab's, torchvision's, timm's) are left as they are; a BN-like class bnlab does not know is
left alone with a warning naming it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormAct1d, BatchNormAct2d
from bnlab.layers.frozen import (
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    FrozenBatchNorm3d,
    FrozenBatchNormAct1d,
    FrozenBatchNormAct2d,
    FrozenBatchNormBase,
)
from bnlab.transforms.layer_classes import bn_rank, role_of, warn_unknown
from bnlab.transforms.swap import replace_children

_FROZEN: dict[int, type[FrozenBatchNormBase]] = {
    1: FrozenBatchNorm1d,
    2: FrozenBatchNorm2d,
    3: FrozenBatchNorm3d,
}
_FROZEN_ACT: dict[int, type[FrozenBatchNormBase]] = {
    1: FrozenBatchNormAct1d,
    2: FrozenBatchNormAct2d,
}
_BNLAB: dict[int, type[nn.Module]] = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_BNLAB_ACT: dict[int, type[nn.Module]] = {1: BatchNormAct1d, 2: BatchNormAct2d}
_TORCH: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _like(cls: type[nn.Module], old: Any, with_act: bool, **kwargs: Any) -> Any:
    """A ``cls`` with ``old``'s num_features, eps and momentum, on the device and dtype of its
    running statistics, with its ``act`` and ``drop`` children if ``with_act``; ``kwargs``
    give the rest (affine, bias, ...)."""
    if with_act:
        kwargs.update(activation=old.act, drop=old.drop)
    rm = old.running_mean
    return cls(
        old.num_features, eps=old.eps, momentum=old.momentum, device=rm.device, dtype=rm.dtype,
        **kwargs,
    )  # fmt: skip


def _frozen_from(bn: Any, path: str) -> FrozenBatchNormBase:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"cannot freeze {path or 'the model'} ({type(bn).__name__}): it has no running "
            "statistics (track_running_stats=False), so it has nothing to freeze"
        )
    with_act = role_of(bn) == "bn_act"
    cls = (_FROZEN_ACT if with_act else _FROZEN)[bn_rank(bn)]
    frozen = _like(cls, bn, with_act, affine=bn.weight is not None, bias=bn.bias is not None)
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
    """Replace every BN layer of ``model`` (torch's, timm's or bnlab's, any variant) by a
    FrozenBatchNorm1d/2d/3d (FrozenBatchNormAct1d/2d for norm+activation layers) holding copies
    of its values.

    Works in place on the children and returns the model (or the frozen layer, if ``model`` is
    itself a BN layer). A BN layer without running statistics raises ValueError, naming it.
    SyncBatchNorm and other rank-agnostic layers become FrozenBatchNorm2d.
    """
    unknown: list[tuple[str, nn.Module]] = []

    def replacement(module: nn.Module, path: str) -> nn.Module | None:
        role = role_of(module)
        if role in ("bn", "bn_act"):
            return _frozen_from(module, path)
        if role == "unknown":
            unknown.append((path, module))
        return None if role is None else module

    result = replace_children(model, replacement)
    warn_unknown("freeze", unknown)
    return result


def unfreeze(model: nn.Module, to: Literal["bnlab", "torch"] = "bnlab") -> nn.Module:
    """Replace every bnlab FrozenBatchNorm layer of ``model`` by a trainable BatchNorm1d/2d/3d
    (bnlab's, or torch's with ``to="torch"``) with the same values, eps, momentum and mode;
    FrozenBatchNormAct* become BatchNormAct* (timm's BatchNormAct2d with ``to="torch"``)."""
    if to not in ("bnlab", "torch"):
        raise ValueError(f"to must be 'bnlab' or 'torch', got {to!r}")
    table = _BNLAB if to == "bnlab" else _TORCH

    def replacement(module: nn.Module, path: str) -> nn.Module | None:
        return _unfrozen_from(module, table) if isinstance(module, FrozenBatchNormBase) else None

    return replace_children(model, replacement)


def _unfrozen_from(frozen: FrozenBatchNormBase, table: dict[int, type[nn.Module]]) -> nn.Module:
    with_act = isinstance(frozen, FrozenBatchNormAct1d | FrozenBatchNormAct2d)
    cls = _BNLAB_ACT[bn_rank(frozen)] if with_act else table[bn_rank(frozen)]
    bn = _like(cls, frozen, with_act, affine=frozen.affine, bias=frozen.use_bias)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(frozen.weight)
        if bn.bias is not None:
            bn.bias.copy_(frozen.bias)
        bn.running_mean.copy_(frozen.running_mean)
        bn.running_var.copy_(frozen.running_var)
        bn.num_batches_tracked.copy_(frozen.num_batches_tracked)
    bn.train(frozen.training)
    if with_act and table is _TORCH:
        from bnlab.transforms.convert import convert

        return convert(bn, to="torch")
    return bn
