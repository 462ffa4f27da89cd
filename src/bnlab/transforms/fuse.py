"""``fuse_activations``: bnlab batch norm followed by an activation becomes one BatchNormAct layer.

Used by ``bnlab.convert(model, fuse=True)``, after the conversion. A bnlab ``BatchNorm1d`` or
``BatchNorm2d`` whose output goes only to a ReLU, SiLU, Hardswish or GELU (``nn`` modules of
exactly those classes, ``inplace`` or not, or ``F.relu``/``torch.relu``/``F.silu``/
``F.hardswish``/``F.gelu`` calls), possibly through ``nn.Identity`` modules (timm's empty
``drop_block``), becomes ``BatchNormAct1d``/``2d`` with that activation as its ``act``: the
same function, computed by one fused op where the layer fuses that activation (ReLU today,
see ``bnlab.layers.batchnorm_act``), else by batch norm then the activation module.

Where it looks, each module's own forward only (its children are opaque), from the leaves up:

- a module whose forward is ``nn.Sequential``'s (torchvision's ``Conv2dNormActivation``
  included): a BN child followed by an activation child is a pair, read from the children's
  order, no tracing;
- any other module with a bnlab BN child: its forward traced by ``torch.fx`` with every child
  a leaf. A pair needs the BN child called once and its output used once, by the activation
  (possibly through Identity children): a BN output used twice (``act(bn(x)) + bn(x)``, or
  ``y = bn(x); return act(y), y``) is left unfused, since the fused layer has no
  pre-activation output. A forward fx cannot trace is left as it is (its Sequential children
  are still fused).

How a pair is rewritten: the BN child becomes the BatchNormAct layer (it adopts the BN's
Parameter and buffer objects, ``transforms.swap.adopt``). If the activation is a child called
once, that child becomes ``nn.Identity`` and the module keeps its class. If it is called more
than once (torchvision's ResNet blocks call one ``relu`` after bn1 and after the residual add)
or is a function call, the module is replaced by its fx ``GraphModule`` with that call
removed: same forward, Parameters, buffers, their order and state_dict keys, but the class
becomes ``torch.fx.GraphModule`` (named after the old one) and other methods, attributes and
hooks of that module are not carried over.

Exact by construction: the fused layer computes ``act(batch_norm(x))`` with the same
parameters and statistics, in training and in eval.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNormAct1d, BatchNormAct2d
from bnlab.transforms.swap import adopt, settings_of

__all__ = ["ACTIVATION_MODULES", "fuse_activations"]

#: bnlab BN class -> its BN+activation class (exact classes: subclasses may change forward)
_FUSED_CLASS: dict[type[nn.Module], type[nn.Module]] = {
    BatchNorm1d: BatchNormAct1d,
    BatchNorm2d: BatchNormAct2d,
}
#: activation modules that may follow a BN into a BatchNormAct layer (exact classes)
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.SiLU, nn.Hardswish, nn.GELU)


#: activation function -> the module computing it, from the call's keyword arguments
_ACTIVATION_FUNCTIONS: dict[Callable[..., Any], Callable[..., nn.Module]] = {
    F.relu: lambda inplace=False: nn.ReLU(inplace=inplace),
    torch.relu: nn.ReLU,
    F.silu: lambda inplace=False: nn.SiLU(inplace=inplace),
    F.hardswish: lambda inplace=False: nn.Hardswish(inplace=inplace),
    F.gelu: lambda approximate="none": nn.GELU(approximate=approximate),
}


def fuse_activations(model: nn.Module) -> nn.Module:
    """Fuse every bnlab BN followed by an activation into a BatchNormAct layer (module docstring).

    Works in place on the children and returns the model, which is a new ``GraphModule`` only
    if the model's own forward needed rewriting. Layers that are not bnlab's plain
    BatchNorm1d/2d (torch's, 3d, variants, frozen) are left alone: call it after ``convert``.
    """
    for name, child in list(model.named_children()):
        fused = fuse_activations(child)
        if fused is not child:
            setattr(model, name, fused)
    if not any(type(child) in _FUSED_CLASS for child in model.children()):
        return model
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        _fuse_sequential(model)
        return model
    return _fuse_traced(model)


def _fused_layer(bn: nn.Module, act: nn.Module) -> nn.Module:
    """The BatchNormAct layer for ``bn`` then ``act``, owning ``bn``'s parameters and buffers."""
    new = _FUSED_CLASS[type(bn)](**settings_of(bn), activation=act, device="meta")
    return adopt(bn, new)


# ------------------------------------------------------------------------------- Sequential


def _fuse_sequential(seq: nn.Sequential) -> None:
    """Children run in order, each output used once by the next: no tracing needed."""
    names = list(seq._modules)
    for i, name in enumerate(names):
        bn = seq._modules[name]
        if bn is None or type(bn) not in _FUSED_CLASS:
            continue
        j = i + 1
        while j < len(names) and type(seq._modules[names[j]]) is nn.Identity:
            j += 1
        if j < len(names):
            act = seq._modules[names[j]]
            if act is not None and type(act) in ACTIVATION_MODULES:
                setattr(seq, name, _fused_layer(bn, act))
                setattr(seq, names[j], nn.Identity())


# ---------------------------------------------------------------------------------- fx path


class _ChildrenAsLeaves(fx.Tracer):
    """Traces one module's own forward: every submodule call stays one node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


@dataclass
class _Pair:
    bn: str  # the BN child's name
    act: fx.Node  # the activation's node
    module: nn.Module  # the activation module (a child, or built for a function call)
    swap_child: bool  # the activation is a child called once: it becomes nn.Identity


def _trace(module: nn.Module) -> fx.Graph | None:
    """``module``'s own forward as a graph, or None where fx cannot trace it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _ChildrenAsLeaves().trace(module)
    except Exception:  # data-dependent control flow, unsupported signatures, ...: no fusion here
        return None


def _only_user(node: fx.Node) -> fx.Node | None:
    """The one node that uses ``node``'s output, as its first argument and nowhere else."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    uses = [*user.args[1:], *user.kwargs.values()]
    return user if user.args[:1] == (node,) and node not in uses else None


def _activation(
    node: fx.Node, module: nn.Module, calls: Counter[str]
) -> tuple[nn.Module, bool] | None:
    """(activation module, is a child called once) if ``node`` applies a fusable activation to
    its first argument and to nothing else."""
    if node.op == "call_module" and isinstance(node.target, str) and "." not in node.target:
        act = module.get_submodule(node.target)
        if type(act) in ACTIVATION_MODULES and len(node.args) == 1 and not node.kwargs:
            return act, calls[node.target] == 1
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS:
        extra = node.args[1:]
        kwargs = dict(node.kwargs)
        if extra:  # positional inplace / approximate
            key = "approximate" if node.target is F.gelu else "inplace"
            if len(extra) > 1 or key in kwargs:
                return None
            kwargs[key] = extra[0]
        try:
            built = _ACTIVATION_FUNCTIONS[node.target](**kwargs)  # type: ignore[index]
        except TypeError:  # an argument the module does not take
            return None
        return built, False
    return None


def _pairs(module: nn.Module, graph: fx.Graph) -> list[_Pair]:
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        target = node.target
        if node.op != "call_module" or not isinstance(target, str) or "." in target:
            continue
        if type(module.get_submodule(target)) not in _FUSED_CLASS or calls[target] != 1:
            continue
        user = _only_user(node)
        while (
            user is not None
            and user.op == "call_module"
            and type(module.get_submodule(str(user.target))) is nn.Identity
        ):
            user = _only_user(user)
        found = None if user is None else _activation(user, module, calls)
        if user is not None and found is not None:
            pairs.append(_Pair(target, user, *found))
    return pairs


def _fuse_traced(module: nn.Module) -> nn.Module:
    graph = _trace(module)
    if graph is None:
        return module
    pairs = _pairs(module, graph)
    rewritten = False
    for pair in pairs:
        bn = module.get_submodule(pair.bn)
        if pair.swap_child:
            setattr(module, pair.bn, _fused_layer(bn, pair.module))
            setattr(module, str(pair.act.target), nn.Identity())
            continue
        act = copy.deepcopy(pair.module) if pair.act.op == "call_module" else pair.module
        setattr(module, pair.bn, _fused_layer(bn, act))
        pair.act.replace_all_uses_with(pair.act.args[0])  # type: ignore[arg-type]
        graph.erase_node(pair.act)
        rewritten = True
    return _graph_module(module, graph) if rewritten else module


def _graph_module(module: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """``module`` as a GraphModule running ``graph``, with all of ``module``'s children,
    Parameters and buffers registered in ``module``'s order (``parameters()`` and state_dict
    keep their order, so optimizer state saved before still lines up)."""
    graph.lint()
    gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
    for name in list(gm._modules) + list(gm._parameters) + list(gm._buffers):
        delattr(gm, name)
    for name, p in module._parameters.items():
        gm.register_parameter(name, p)
    for name, b in module._buffers.items():
        gm.register_buffer(name, b, persistent=name not in module._non_persistent_buffers_set)
    for name, child in module._modules.items():
        gm.add_module(name, child)
    gm.training = module.training  # not train(): the children keep their own modes
    return gm
