"""``convert``: swap every batch-norm layer of a model between torch's and bnlab's classes.

The new layer takes over the old one's Parameter and buffer objects themselves (not copies), so
weights, statistics, device, dtype and requires_grad are kept, and an optimizer built on the
model's parameters keeps working. The train/eval mode of each layer is kept too.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase

_TO_BNLAB: dict[type[nn.Module], type[BatchNormBase]] = {
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.BatchNorm3d: BatchNorm3d,
}
_TO_TORCH: dict[type[nn.Module], type[nn.Module]] = {v: k for k, v in _TO_BNLAB.items()}


def convert(
    model: nn.Module, to: Literal["bnlab", "torch"] = "bnlab", kind: str = "bn"
) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d of ``model`` by the other library's class.

    Works in place on the children and returns the model (or the new layer, if ``model`` is
    itself a batch-norm layer). Subclasses of the BN classes are left alone: they may carry
    behaviour that a plain swap would lose.

    ``kind`` (with ``to="bnlab"``): ``"bn"`` (plain BatchNorm), or a BN-family variant that
    every plain BatchNorm1d/2d/3d becomes: ``"renorm"``, ``"ghost"``, ``"masked"`` (1d), or
    ``"frozen"`` (same as ``bnlab.freeze``).

    Example::

        model = bnlab.convert(torchvision_like_model, to="bnlab")
    """
    if to not in ("bnlab", "torch"):
        raise ValueError(f"to must be 'bnlab' or 'torch', got {to!r}")
    if kind != "bn":
        if to != "bnlab":
            raise ValueError(f"kind={kind!r} needs to='bnlab' (torch has no such layer)")
        from bnlab.transforms._bn_kinds import convert_kind

        return convert_kind(model, kind)
    table: dict[type[nn.Module], type[nn.Module]] = dict(_TO_BNLAB) if to == "bnlab" else _TO_TORCH
    new_cls = table.get(type(model))
    if new_cls is not None:
        return _swap(model, new_cls)
    for name, child in model.named_children():
        converted = convert(child, to)
        if converted is not child:
            setattr(model, name, converted)
    return model


def _swap(old: nn.Module, new_cls: type[nn.Module]) -> nn.Module:
    new = new_cls(
        old.num_features,
        eps=old.eps,
        momentum=old.momentum,
        affine=old.affine,
        track_running_stats=old.track_running_stats,
        device="meta",
    )
    for name in ("weight", "bias"):
        if getattr(old, name) is not None:
            setattr(new, name, getattr(old, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        new.register_buffer(name, getattr(old, name))
    new.train(old.training)
    return new
