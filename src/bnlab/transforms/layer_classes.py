"""Which BN-like classes bnlab's transforms understand (torch's, torchvision's, timm's, bnlab's).

Every transform (convert, freeze, fold_batchnorm, recalibrate) asks ``role_of(module)``:

- ``"bn"``: batch norm and nothing else. torch's BatchNorm1d/2d/3d and SyncBatchNorm (exact
  classes), and bnlab's BatchNormBase layers (BatchNorm*, renorm, ghost, masked, sync).
- ``"bn_act"``: batch norm, then the ``drop`` and ``act`` child modules: timm's BatchNormAct2d and
  SyncBatchNormAct, bnlab's BatchNormAct1d/2d.
- ``"frozen"``: a fixed per-channel affine map from buffers (weight, bias, running_mean,
  running_var, eps): bnlab's FrozenBatchNorm*, torchvision's FrozenBatchNorm2d (which timm uses).
- ``"frozen_act"``: frozen, then ``drop`` and ``act``: timm's and bnlab's FrozenBatchNormAct*.
- ``"unknown"``: looks like batch norm but is none of the above: a subclass of torch's
  ``_BatchNorm`` (or of a bnlab layer) with a forward of its own, or a class named *BatchNorm*
  with running statistics. Its forward may do anything (timm's BatchNormAct2d applies an
  activation), so the transforms leave it alone and ``warn_unknown`` says so, naming it.
- None: not batch norm.

Third-party classes are matched by exact class, found in ``sys.modules``: bnlab never imports
timm or torchvision to recognize them (a model built from them has imported them already).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.layers import BatchNormBase
from bnlab.layers.batchnorm_act import _BatchNormAct
from bnlab.layers.frozen import FrozenBatchNormBase, _FrozenBatchNormAct

Role = Literal["bn", "bn_act", "frozen", "frozen_act", "unknown"]

_TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

#: (module, class name) -> role, for the third-party classes bnlab knows by their forward.
THIRD_PARTY: dict[tuple[str, str], Role] = {
    ("timm.layers.norm_act", "BatchNormAct2d"): "bn_act",
    ("timm.layers.norm_act", "SyncBatchNormAct"): "bn_act",
    ("timm.layers.norm_act", "FrozenBatchNormAct2d"): "frozen_act",
    ("torchvision.ops.misc", "FrozenBatchNorm2d"): "frozen",
}


def third_party_class(module_name: str, class_name: str) -> type[nn.Module] | None:
    """The class if its module is imported already, else None (nothing is imported here)."""
    return getattr(sys.modules.get(module_name), class_name, None)


def _is_bnlab_forward(cls: type[nn.Module]) -> bool:
    return getattr(cls.forward, "__module__", "").startswith("bnlab.")


def role_of(module: nn.Module) -> Role | None:
    """What ``module`` is to the transforms; see the module docstring."""
    cls = type(module)
    if cls in _TORCH_BN:
        return "bn"
    if isinstance(module, BatchNormBase | FrozenBatchNormBase):
        if not _is_bnlab_forward(cls):
            return "unknown"
        if isinstance(module, _BatchNormAct):
            return "bn_act"
        if isinstance(module, _FrozenBatchNormAct):
            return "frozen_act"
        return "bn" if isinstance(module, BatchNormBase) else "frozen"
    for (module_name, class_name), role in THIRD_PARTY.items():
        if cls is third_party_class(module_name, class_name):
            return role
    if isinstance(module, _BatchNorm):
        return "unknown"
    if "BatchNorm" in cls.__name__ and isinstance(
        getattr(module, "running_mean", None), torch.Tensor
    ):
        return "unknown"
    return None


def is_trainable_bn(module: nn.Module) -> bool:
    """Batch norm with batch statistics in training (roles ``bn`` and ``bn_act``)."""
    return role_of(module) in ("bn", "bn_act")


def is_bn_like(module: nn.Module) -> bool:
    """Any role but None: the transforms treat the module as one unit (never look inside)."""
    return role_of(module) is not None


def post_modules(module: nn.Module) -> nn.Module:
    """What runs after the normalization of a ``*_act`` layer: ``act``, or ``drop`` then
    ``act`` when ``drop`` is not the identity (used when folding keeps the activation)."""
    drop, act = module.drop, module.act
    if not isinstance(drop, nn.Module) or not isinstance(act, nn.Module):
        raise TypeError(f"{type(module).__name__} has no drop/act modules")
    return act if type(drop) is nn.Identity else nn.Sequential(drop, act)


def num_channels(module: nn.Module) -> int | None:
    """C of a BN-like layer (torchvision's FrozenBatchNorm2d keeps no ``num_features``)."""
    count = getattr(module, "num_features", None)
    if isinstance(count, int):
        return count
    mean = getattr(module, "running_mean", None)
    return mean.numel() if isinstance(mean, torch.Tensor) else None


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
    """Per-channel (scale, shift) in float64 such that the normalization of the layer in eval is
    ``x * scale + shift`` (before ``drop``/``act`` for ``*_act`` roles), or None if it is not a
    fixed affine map (no running statistics, or a class not understood)."""
    role = role_of(module)
    if role is None or role == "unknown":
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


def warn_unknown(
    transform: str, found: Iterable[tuple[str, nn.Module]], reason: str | None = None
) -> None:
    """One warning naming every BN-like layer ``transform`` left alone (``found``: (path,
    module) pairs); by default because it could not know what the layer's forward does."""
    found = list(found)
    if not found:
        return
    classes = ", ".join(sorted({f"{type(m).__module__}.{type(m).__qualname__}" for _, m in found}))
    paths = ", ".join(path or "<model>" for path, _ in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    why = reason or (
        "has a forward of its own, which bnlab does not know, so changing it could change the "
        "model's outputs silently"
    )
    warnings.warn(
        f"bnlab.{transform} left {len(found)} batch-norm layer(s) unchanged ({paths}{more}): "
        f"{classes} {why}",
        UserWarning,
        stacklevel=3,
    )
