"""``insert_batchnorm``: add a BN layer after every Linear/Conv of a plain model.

The tutorials' pattern is Linear -> BN -> ReLU (``where="before_activation"``, the original paper's
placement); tutorial 001 puts BN after the activation (``where="after_activation"``). Both are
supported. The output layer (the model's last Linear/Conv) gets no BN: normalizing logits or a
regression output is not what any tutorial does.

``kind`` names the BN variant to insert; ``BN_KINDS`` maps a kind to a factory
``(spatial_dims, num_features, like) -> nn.Module``, so new variants are one table entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

from torch import nn

from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d
from bnlab.transforms._bn_kinds import INSERT_KINDS

# Layers after which BN is inserted, with the BN rank they need (Linear/Conv1d -> 1d, ...).
_LAYER_DIMS: dict[type[nn.Module], int] = {
    nn.Linear: 1,
    nn.Conv1d: 1,
    nn.Conv2d: 2,
    nn.Conv3d: 3,
}

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Softplus,
)

BNFactory = Callable[[int, int, nn.Module], nn.Module]


def _bn(dims: int, num_features: int, like: nn.Module) -> nn.Module:
    cls = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}[dims]
    weight = like.weight
    return cls(num_features, device=weight.device, dtype=weight.dtype)


BN_KINDS: dict[str, BNFactory] = {"bn": _bn, **INSERT_KINDS}


def _out_features(layer: nn.Module) -> int:
    features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return int(features)  # type: ignore[arg-type]


def _is_bn(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm) or "BatchNorm" in type(module).__name__
    )


def insert_batchnorm(
    model: nn.Module,
    where: Literal["before_activation", "after_activation"] = "before_activation",
    kind: str = "bn",
) -> nn.Module:
    """Insert a ``kind`` BN layer after every Linear/Conv1d/2d/3d of ``model`` but the last.

    Args:
        model: changed in place and returned. Inside an ``nn.Sequential`` the BN becomes a new
            element; elsewhere the layer is replaced by ``Sequential(layer, bn)``.
        where: ``"before_activation"``: right after the layer (Linear -> BN -> ReLU).
            ``"after_activation"``: after the activation that follows the layer in its
            Sequential (Linear -> ReLU -> BN); layers without a following activation module
            get BN right after them. Outside a Sequential the activation cannot be located, so
            such layers get BN right after them and a warning names them.
        kind: the BN variant, a key of ``BN_KINDS`` (``"bn"``: bnlab.BatchNorm1d/2d/3d).

    Layers already followed by a batch-norm layer are left alone, so calling it twice adds
    nothing. New layers take the device, dtype and train/eval mode of the model.
    """
    if where not in ("before_activation", "after_activation"):
        raise ValueError(f"where must be 'before_activation' or 'after_activation', got {where!r}")
    if kind not in BN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(sorted(BN_KINDS))}, got {kind!r}")
    if type(model) in _LAYER_DIMS:
        raise ValueError("insert_batchnorm needs a model that contains layers, not a single layer")
    layers = [m for m in model.modules() if type(m) in _LAYER_DIMS]
    if not layers:
        raise ValueError("model has no Linear or Conv1d/2d/3d layer to put batch norm after")
    last = layers[-1]
    factory = BN_KINDS[kind]
    unplaced: list[str] = []
    _insert(model, where, factory, last, unplaced, prefix="")
    if unplaced:
        warnings.warn(
            "insert_batchnorm(where='after_activation'): no activation module follows "
            f"{', '.join(unplaced)} in an nn.Sequential; BN was put right after the layer",
            stacklevel=2,
        )
    model.train(model.training)
    return model


def _insert(
    module: nn.Module,
    where: str,
    factory: BNFactory,
    last: nn.Module,
    unplaced: list[str],
    prefix: str,
) -> None:
    if isinstance(module, nn.Sequential):
        children = list(module.named_children())
        new: list[tuple[str, nn.Module]] = []
        i = 0
        while i < len(children):
            name, child = children[i]
            new.append((name, child))
            i += 1
            if type(child) not in _LAYER_DIMS:
                _insert(child, where, factory, last, unplaced, prefix + name + ".")
                continue
            if child is last:
                continue
            if where == "after_activation":
                if i < len(children) and isinstance(children[i][1], _ACTIVATIONS):
                    new.append(children[i])
                    i += 1
                else:
                    unplaced.append(prefix + name)
            if i < len(children) and _is_bn(children[i][1]):
                continue
            bn = factory(_LAYER_DIMS[type(child)], _out_features(child), child)
            new.append((f"{name}_{type(bn).__name__.lower()}", bn))
        if len(new) != len(children):
            # Rebuild in order; original names are kept, so state_dict keys of the old
            # layers do not change.
            for key in list(module._modules):
                del module._modules[key]
            for key, child in new:
                module.add_module(key, child)
        return
    for name, child in list(module.named_children()):
        if type(child) in _LAYER_DIMS:
            if child is last:
                continue
            if where == "after_activation":
                unplaced.append(prefix + name)
            bn = factory(_LAYER_DIMS[type(child)], _out_features(child), child)
            setattr(module, name, nn.Sequential(child, bn))
        else:
            _insert(child, where, factory, last, unplaced, prefix + name + ".")
