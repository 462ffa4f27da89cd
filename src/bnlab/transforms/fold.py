"""``fold_batchnorm``: fold eval-mode BN layers into the Conv/Linear layer that feeds them.

In eval, BN is the per-channel affine map ``x * scale + shift`` with
``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``. When it
directly follows a layer ``z = W x + b`` whose output channel c is BN's channel c, the pair is
one layer with ``W' = W * scale[c]`` (per output channel) and ``b' = b * scale + shift``: at
inference a folded Conv+BN costs what the Conv alone costs.

Split as in torch.nn.utils.fusion: ``fold_weights`` works on tensors, ``fold_batchnorm`` on
models. The folded weights are computed in float64 and cast back to the layer's dtype.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import fx, nn

from bnlab.transforms.layer_classes import (
    eval_scale_shift,
    is_bn_like,
    is_trainable_bn,
    num_channels,
    post_modules,
    role_of,
    warn_unknown,
)

FOLDABLE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def fold_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    transposed: bool = False,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(W', b')`` for a layer (weight, bias) followed by ``y * scale + shift``.

    ``weight`` is (out, in/groups, *k) for Conv/Linear and (in, out/groups, *k) for ConvTranspose
    (``transposed=True``; output channel ``g * out/groups + j`` is column j of group g). Results
    have ``weight``'s dtype and device.
    """
    w = weight.detach().double()
    s = scale.double().to(w.device)
    if transposed:
        in_ch, out_per_group = w.shape[0], w.shape[1]
        kshape = w.shape[2:]
        w = w.reshape(groups, in_ch // groups, out_per_group, *kshape)
        w = w * s.reshape(groups, 1, out_per_group, *([1] * len(kshape)))
        w = w.reshape(in_ch, out_per_group, *kshape)
    else:
        w = w * s.reshape(-1, *([1] * (w.dim() - 1)))
    b = torch.zeros_like(s) if bias is None else bias.detach().double()
    b = b * s + shift.double().to(w.device)
    return w.to(weight.dtype), b.to(weight.dtype)


def _can_fold(layer: Any, bn: nn.Module) -> bool:
    if not isinstance(layer, FOLDABLE_LAYERS):
        return False
    weight = layer.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        return False
    out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return eval_scale_shift(bn) is not None and num_channels(bn) == out_features


def _fold_into(layer: Any, bn: nn.Module) -> None:
    scale_shift = eval_scale_shift(bn)
    assert scale_shift is not None
    transposed = isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d)
    w, b = fold_weights(
        layer.weight,
        layer.bias,
        *scale_shift,
        transposed=transposed,
        groups=getattr(layer, "groups", 1),
    )
    requires_grad = layer.weight.requires_grad
    layer.weight = nn.Parameter(w, requires_grad=requires_grad)
    layer.bias = nn.Parameter(b, requires_grad=requires_grad)


def _what_remains(bn: nn.Module) -> nn.Module:
    """After folding: nothing for plain BN, the ``drop``/``act`` children for norm+act layers."""
    return post_modules(bn) if role_of(bn) in ("bn_act", "frozen_act") else nn.Identity()


def _runs_in_order(module: nn.Module) -> bool:
    """nn.Sequential and subclasses that keep its forward (children run one after another)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _fold_sequential(module: nn.Module) -> int:
    folded = 0
    for child in module.children():
        folded += _fold_sequential(child)
    if _runs_in_order(module):
        names = list(module._modules)
        for prev, name in itertools.pairwise(names):
            layer, bn = module._modules[prev], module._modules[name]
            if layer is not None and bn is not None and _can_fold(layer, bn):
                _fold_into(layer, bn)
                module._modules[name] = _what_remains(bn)
                folded += 1
    return folded


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with every BN-like layer (bnlab's included) kept as one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_bn_like(m) or super().is_leaf_module(m, module_qualified_name)


def _fold_graph(model: nn.Module) -> fx.GraphModule | None:
    """Fold through a torch.fx trace; None if the model cannot be traced or nothing folds."""
    try:
        graph = _Tracer().trace(model)
        gm = fx.GraphModule(model, graph, type(model).__name__)
    except Exception:  # untraceable (data-dependent control flow, ...): leave it as it is
        return None
    modules = dict(gm.named_modules())
    calls: dict[Any, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not node.args:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer, bn = modules[src.target], modules[node.target]
        # A layer called from two places would change for both: fold only single-use layers.
        if calls[src.target] != 1 or calls[node.target] != 1 or not _can_fold(layer, bn):
            continue
        _fold_into(layer, bn)
        remains = _what_remains(bn)
        if isinstance(remains, nn.Identity):
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
        else:  # the call stays, now to the activation alone
            _set_submodule(gm, str(node.target), remains)
        folded += 1
    if not folded:
        return None
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def _has_bn(model: nn.Module) -> bool:
    return any(eval_scale_shift(m) is not None for m in model.modules())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` with every foldable BN folded into the layer before it.

    Foldable: an eval-mode BN with running statistics (torch's, bnlab's BatchNorm / renorm /
    ghost / masked, FrozenBatchNorm from bnlab or torchvision, and the norm+activation layers
    of timm and bnlab), directly after a Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear with as
    many output channels (for Linear, the input is assumed (N, features)). Pairs are found in
    nn.Sequential containers (the folded BN becomes nn.Identity, so indices and the module's
    type stay), then, if any BN remains, through a torch.fx trace of the model (the result is
    then an ``fx.GraphModule``). A norm+activation layer keeps its activation: it becomes its
    ``act`` module (``drop`` then ``act`` if ``drop`` does something). BN layers that cannot be
    folded are left as they are; a BN-like class bnlab does not know is left alone with a
    warning naming it. The copy keeps dtypes and devices; the input model is not modified.

    Raises:
        ValueError: if any BN layer is in training mode (its output depends on the batch, so
            no fixed weights reproduce it): call ``model.eval()`` first.
    """
    training = [
        name or "<model>" for name, m in model.named_modules() if is_trainable_bn(m) and m.training
    ]
    if training:
        raise ValueError(
            "fold_batchnorm needs the BN layers in eval mode (in training their output depends "
            f"on the batch); call model.eval() first. In training mode: {', '.join(training[:5])}"
            + (" ..." if len(training) > 5 else "")
        )
    warn_unknown(
        "fold_batchnorm",
        ((name, m) for name, m in model.named_modules() if role_of(m) == "unknown"),
    )
    folded_model = copy.deepcopy(model)
    _fold_sequential(folded_model)
    if _has_bn(folded_model):
        graph_model = _fold_graph(folded_model)
        if graph_model is not None:
            return graph_model
    return folded_model
