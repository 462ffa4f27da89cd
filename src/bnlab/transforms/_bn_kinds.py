"""Which modules the BN-family transforms treat as batch norm (rank, eval affine), and the
family's kinds for ``convert(kind=...)`` and ``insert_batchnorm(kind=...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.layers import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchNormBase,
    BatchRenorm1d,
    BatchRenorm2d,
    BatchRenorm3d,
    GhostBatchNorm1d,
    GhostBatchNorm2d,
    GhostBatchNorm3d,
    MaskedBatchNorm1d,
)
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


# The BN-family kinds for ``convert(model, kind=...)`` and ``insert_batchnorm(model, kind=...)``.
_KIND_CLASSES: dict[str, dict[int, type[BatchNormBase]]] = {
    "renorm": {1: BatchRenorm1d, 2: BatchRenorm2d, 3: BatchRenorm3d},
    "ghost": {1: GhostBatchNorm1d, 2: GhostBatchNorm2d, 3: GhostBatchNorm3d},
    "masked": {1: MaskedBatchNorm1d},
}
CONVERT_KINDS = ("renorm", "ghost", "masked", "frozen")


def convert_kind(model: nn.Module, kind: str) -> nn.Module:
    """Replace every plain BatchNorm1d/2d/3d (torch's or bnlab's) by the ``kind`` variant of the
    same rank, which takes over its Parameter and buffer objects (as ``convert`` does); default
    variant options (renorm: rmax 3, dmax 5; ghost: virtual_batch_size 32). ``"frozen"`` is
    ``freeze(model)`` (copies). In place on the children; returns the model or the new layer."""
    if kind not in CONVERT_KINDS:
        raise ValueError(f"kind must be 'bn' or one of {', '.join(CONVERT_KINDS)}, got {kind!r}")
    if kind == "frozen":
        from bnlab.transforms.freeze import freeze

        return freeze(model)
    return _convert_kind(model, _KIND_CLASSES[kind], kind)


_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNorm1d, BatchNorm2d, BatchNorm3d)


def _convert_kind(
    model: nn.Module, classes: dict[int, type[BatchNormBase]], kind: str
) -> nn.Module:
    if type(model) in _PLAIN:
        old: Any = model
        new_cls = classes.get(bn_rank(old))
        if new_cls is None:
            raise ValueError(
                f"kind {kind!r} has no {bn_rank(old)}d layer (got {type(old).__name__})"
            )
        if kind == "renorm" and not old.track_running_stats:
            raise ValueError("kind 'renorm' needs BN layers with running statistics")
        kwargs: dict[str, Any] = {"eps": old.eps, "momentum": old.momentum, "affine": old.affine}
        if kind != "renorm":
            kwargs["track_running_stats"] = old.track_running_stats
        new = new_cls(old.num_features, device="meta", **kwargs)
        for name in ("weight", "bias"):
            if getattr(old, name) is not None:
                setattr(new, name, getattr(old, name))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            new.register_buffer(name, getattr(old, name))
        new.train(old.training)
        return new
    for name, child in model.named_children():
        converted = _convert_kind(child, classes, kind)
        if converted is not child:
            setattr(model, name, converted)
    return model


def _family_factory(kind: str) -> Callable[[int, int, nn.Module], nn.Module]:
    """``insert_batchnorm`` factory ``(spatial_dims, num_features, like) -> layer``."""

    def factory(dims: int, num_features: int, like: nn.Module) -> nn.Module:
        weight: Any = like.weight
        factory_kwargs = {"device": weight.device, "dtype": weight.dtype}
        if kind == "keras":
            from bnlab.keras_conventions import KerasBatchNorm

            return KerasBatchNorm(num_features, axis=1, **factory_kwargs)
        cls = _KIND_CLASSES[kind].get(dims)
        if cls is None:
            raise ValueError(f"kind {kind!r} has no {dims}d layer")
        return cls(num_features, **factory_kwargs)

    return factory


# Entries for insert_batchnorm's BN_KINDS table: the PyTorch-convention variants, and "keras"
# (Keras's momentum 0.99, epsilon 1e-3 and biased moving variance, channel axis 1).
INSERT_KINDS: dict[str, Callable[[int, int, nn.Module], nn.Module]] = {
    kind: _family_factory(kind) for kind in ("renorm", "ghost", "keras")
}
