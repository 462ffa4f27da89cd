"""Finding the layer a probe watches, by module name or by ``Type#k``.

A probe names its layer either by its name in ``model.named_modules()`` (``"3"``, ``"fc2"``,
``"features.conv1"``) or as ``"Type#k"``: the k-th (0-based) module of class ``Type`` in
registration order, e.g. ``"Linear#1"`` for the second Linear layer. The second form names
the same place in a network with and without BN even though Sequential indices differ
(tutorial 001's network1 / network2), so one probe spec serves both networks of a comparison.
"""

from __future__ import annotations

from torch import nn

from bnlab.lab.errors import UsageError


def layer_names(model: nn.Module) -> list[str]:
    """Every selectable layer of ``model``: its named submodules (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def _describe(model: nn.Module) -> str:
    counts: dict[str, int] = {}
    parts = []
    for name, module in model.named_modules():
        if not name:
            continue
        kind = type(module).__name__
        k = counts.get(kind, 0)
        counts[kind] = k + 1
        parts.append(f"{name} ({kind}#{k})")
    return ", ".join(parts) if parts else "(none: the model has no submodules)"


def find_layer(model: nn.Module, spec: str) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for ``spec``; UsageError listing the layers that exist otherwise."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"layer must be a non-empty str, got {spec!r}")
    modules = dict(model.named_modules())
    if spec in modules and spec:
        return spec, modules[spec]
    if "#" in spec:
        kind, _, index = spec.partition("#")
        if index.isdigit():
            matches = [
                (name, m) for name, m in model.named_modules() if name and type(m).__name__ == kind
            ]
            if int(index) < len(matches):
                return matches[int(index)]
    raise UsageError(
        f"model {type(model).__name__} has no layer {spec!r}; layers that exist "
        f"(name (Type#k)): {_describe(model)}"
    )


def parameters_before(model: nn.Module, module: nn.Module) -> list[nn.Parameter]:
    """Parameters registered before ``module``'s own (the earlier layers, in forward order).

    Registration order is forward order for Sequential models and for the usual
    ``__init__``-then-``forward`` style; a model that calls its layers in another order would
    need its own list.
    """
    own = {id(p) for p in module.parameters()}
    before: list[nn.Parameter] = []
    for p in model.parameters():
        if id(p) in own:
            return before
        before.append(p)
    raise ValueError(f"layer {type(module).__name__} has no parameters inside the model")
