"""The one way a transform replaces a BN-like layer: build the new class, adopt the old state.

``adopt`` moves the old layer's Parameter and buffer *objects* (not copies) into the new one, so
weights, statistics, device, dtype and requires_grad are kept and an optimizer built on the
model keeps working; a missing affine parameter (``affine=False``, or torch 2.13's
``bias=False``) stays missing. ``replace_children`` walks a model as timm's transforms do
(``named_children``, in place) and returns the model, or the new layer when the model itself is
replaced. ``settings_of`` reads the constructor arguments the new layer repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_AFFINE = ("weight", "bias")
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def settings_of(old: Any) -> dict[str, Any]:
    """The constructor arguments that torch.nn.BatchNorm* and bnlab's trainable layers share,
    read from ``old``: ``num_features``, ``eps``, ``momentum``, ``affine``,
    ``track_running_stats`` (keywords, for the new layer's constructor)."""
    names = ("num_features", "eps", "momentum", "affine", "track_running_stats")
    return {name: getattr(old, name) for name in names}


def adopt(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give ``new`` the weight, bias and running statistics of ``old`` (same objects) and its
    train/eval mode; returns ``new``.

    Each name keeps ``new``'s kind of slot (Parameter or buffer). ``new`` may have been built on
    the meta device: everything it takes from ``old`` replaces its placeholders. A buffer ``old``
    lacks (torchvision's FrozenBatchNorm2d has no num_batches_tracked) is created on ``old``'s
    device, zero.
    """
    for name in _AFFINE:
        value = getattr(old, name, None)
        if name in new._parameters:
            if value is None:
                new.register_parameter(name, None)
            elif isinstance(value, nn.Parameter):
                new.register_parameter(name, value)
            else:  # a buffer (frozen layers) becomes a trainable parameter
                new.register_parameter(name, nn.Parameter(value.detach().clone()))
        elif name in new._buffers:
            new.register_buffer(name, None if value is None else value.detach())
    device = _device_of(old)
    for name in _STATISTICS:
        if name not in new._buffers:
            continue
        value = getattr(old, name, None)
        current = new._buffers[name]
        if value is None and current is not None:  # a counter the old class does not keep
            value = torch.zeros_like(current, device=device)
        new.register_buffer(name, value)
    new.train(old.training)
    return new


def _device_of(module: nn.Module) -> torch.device:
    for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        return t.device
    return torch.device("cpu")


def replace_children(
    model: nn.Module, replacement: Callable[[nn.Module, str], nn.Module | None], path: str = ""
) -> nn.Module:
    """Replace every module for which ``replacement(module, path)`` returns a module (in place
    on the children); recurse into the others. Returns the model or its replacement."""
    new = replacement(model, path)
    if new is not None:
        return new
    for name, child in model.named_children():
        converted = replace_children(child, replacement, f"{path}.{name}" if path else name)
        if converted is not child:
            setattr(model, name, converted)
    return model
