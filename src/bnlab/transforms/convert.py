"""``convert``: swap every batch-norm layer of a model between the torch ecosystem's classes and
bnlab's.

The new layer takes over the old one's Parameter and buffer objects themselves (not copies;
``transforms.swap.adopt``), so weights, statistics, device, dtype and requires_grad are kept,
and an optimizer built on the model's parameters keeps working. The train/eval mode of each
layer is kept too, and so are the ``drop``/``act`` children of norm+activation layers.

=========================================  ======================================
torch ecosystem (``to="torch"``)           bnlab (``to="bnlab"``)
=========================================  ======================================
torch.nn.BatchNorm1d / 2d / 3d             bnlab.BatchNorm1d / 2d / 3d
timm BatchNormAct2d (drop, act kept)       bnlab.BatchNormAct2d (fused when act is ReLU)
torchvision (and timm) FrozenBatchNorm2d   bnlab.FrozenBatchNorm2d
timm FrozenBatchNormAct2d                  bnlab.FrozenBatchNormAct2d
=========================================  ======================================

Converting to torch builds timm's and torchvision's classes only when they can be imported; a
layer whose counterpart is missing stays bnlab's, with a warning. torch's SyncBatchNorm is left
to ``bnlab.convert_sync_batchnorm``. A BN-like class bnlab does not know (a subclass with a
forward of its own) is left alone with one warning naming it (``layer_classes.role_of``).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from bnlab.layers import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchNormAct2d,
    FrozenBatchNorm2d,
    FrozenBatchNormAct2d,
)
from bnlab.transforms.layer_classes import (
    num_channels,
    role_of,
    third_party_class,
    warn_unknown,
)
from bnlab.transforms.swap import adopt, replace_children, settings_of

_TORCH_TO_BNLAB: dict[type[nn.Module], type[nn.Module]] = {
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.BatchNorm3d: BatchNorm3d,
}
_BNLAB_TO_TORCH: dict[type[nn.Module], type[nn.Module]] = {v: k for k, v in _TORCH_TO_BNLAB.items()}
#: bnlab class -> (module, class) of its third-party counterpart.
_BNLAB_TO_THIRD_PARTY: dict[type[nn.Module], tuple[str, str]] = {
    BatchNormAct2d: ("timm.layers.norm_act", "BatchNormAct2d"),
    FrozenBatchNorm2d: ("torchvision.ops.misc", "FrozenBatchNorm2d"),
    FrozenBatchNormAct2d: ("timm.layers.norm_act", "FrozenBatchNormAct2d"),
}


def convert(
    model: nn.Module,
    to: Literal["bnlab", "torch"] = "bnlab",
    kind: str = "bn",
    fuse: bool = False,
) -> nn.Module:
    """Replace every batch-norm layer of ``model`` by the other side's class (table above).

    Works in place on the children and returns the model (or the new layer, if ``model`` is
    itself a batch-norm layer).

    ``kind`` (with ``to="bnlab"``): ``"bn"`` (plain BatchNorm), or a BN-family variant that
    every plain BatchNorm1d/2d/3d becomes: ``"renorm"``, ``"ghost"``, ``"masked"`` (1d), or
    ``"frozen"`` (same as ``bnlab.freeze``).

    ``fuse=True`` (with ``to="bnlab"``, ``kind="bn"``): then every BatchNorm1d/2d whose output
    only feeds a ReLU, SiLU, Hardswish or GELU becomes one ``BatchNormAct1d``/``2d`` with that
    activation, found through the modules' forwards (``torch.fx``) or nn.Sequential's order
    (``bnlab.transforms.fuse``). A module whose forward had to be rewritten for it becomes a
    ``torch.fx.GraphModule`` with the same parameters and state_dict keys.

    Example::

        model = bnlab.convert(torchvision.models.resnet18(), to="bnlab")
    """
    if to not in ("bnlab", "torch"):
        raise ValueError(f"to must be 'bnlab' or 'torch', got {to!r}")
    if fuse and (to, kind) != ("bnlab", "bn"):
        raise ValueError(f"fuse=True needs to='bnlab' and kind='bn', got to={to!r}, kind={kind!r}")
    if kind != "bn":
        if to != "bnlab":
            raise ValueError(f"kind={kind!r} needs to='bnlab' (torch has no such layer)")
        from bnlab.transforms._bn_kinds import convert_kind

        return convert_kind(model, kind)
    unknown: list[tuple[str, nn.Module]] = []
    missing: list[str] = []

    def replacement(module: nn.Module, path: str) -> nn.Module | None:
        role = role_of(module)
        if role is None:
            return None
        if role == "unknown":
            unknown.append((path, module))
            return module
        build = _to_bnlab(module) if to == "bnlab" else _to_torch(module, missing)
        return module if build is None else adopt(module, build(module))

    result = replace_children(model, replacement)
    warn_unknown("convert", unknown)
    if missing:
        warnings.warn(
            f"bnlab.convert(to='torch') kept {len(missing)} bnlab layer(s) whose counterpart "
            f"could not be imported: {', '.join(sorted(set(missing)))}",
            UserWarning,
            stacklevel=2,
        )
    if fuse:
        from bnlab.transforms.fuse import fuse_activations

        return fuse_activations(result)
    return result


Builder = Callable[[Any], nn.Module]


def _to_bnlab(old: Any) -> Builder | None:
    cls = type(old)
    if cls in _TORCH_TO_BNLAB:
        return lambda m: _TORCH_TO_BNLAB[cls](**_bn_config(m))
    for bnlab_cls, (module_name, class_name) in _BNLAB_TO_THIRD_PARTY.items():
        if cls is third_party_class(module_name, class_name):
            return _builder_for(bnlab_cls)
    return None


def _to_torch(old: Any, missing: list[str]) -> Builder | None:
    cls = type(old)
    if cls in _BNLAB_TO_TORCH:
        return lambda m: _BNLAB_TO_TORCH[cls](**_bn_config(m))
    if cls not in _BNLAB_TO_THIRD_PARTY:
        return None
    module_name, class_name = _BNLAB_TO_THIRD_PARTY[cls]
    try:
        target = getattr(importlib.import_module(module_name), class_name)
    except Exception:  # not installed, or its import fails: keep the bnlab layer
        missing.append(f"{module_name}.{class_name}")
        return None
    return _builder_for(target)


def _builder_for(cls: type[nn.Module]) -> Builder:
    """Build ``cls`` (bnlab's or the third party's) with the old layer's settings."""
    name = cls.__name__
    if name == "BatchNormAct2d":
        return lambda m: _with_children(cls(**_bn_config(m), **_act_none(cls)), m)
    if name == "FrozenBatchNormAct2d":
        return lambda m: _with_children(cls(num_channels(m), eps=m.eps, **_act_none(cls)), m)
    return lambda m: cls(num_channels(m), eps=m.eps)


def _bn_config(m: Any) -> dict[str, Any]:
    return {**settings_of(m), "device": "meta"}


def _act_none(cls: type[nn.Module]) -> dict[str, Any]:
    """Build without an activation (the old layer's ``act`` is moved in after)."""
    return (
        {"activation": "identity"} if cls.__module__.startswith("bnlab.") else {"apply_act": False}
    )


def _with_children(new: nn.Module, old: nn.Module) -> nn.Module:
    new.drop = old.drop
    new.act = old.act
    return new
