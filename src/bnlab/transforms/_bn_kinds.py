"""The BN family's kinds for ``convert(kind=...)`` and ``insert_batchnorm(kind=...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

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
from bnlab.transforms.layer_classes import bn_rank
from bnlab.transforms.swap import adopt, replace_children, settings_of

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
    def replacement(old: Any, path: str) -> nn.Module | None:
        if type(old) not in _PLAIN:
            return None
        new_cls = classes.get(bn_rank(old))
        if new_cls is None:
            raise ValueError(
                f"kind {kind!r} has no {bn_rank(old)}d layer (got {type(old).__name__} at "
                f"{path or '<model>'})"
            )
        if kind == "renorm" and not old.track_running_stats:
            raise ValueError("kind 'renorm' needs BN layers with running statistics")
        settings = settings_of(old)
        if kind == "renorm":  # always tracks: its corrections need the running statistics
            del settings["track_running_stats"]
        return adopt(old, new_cls(**settings, device="meta"))

    return replace_children(model, replacement)


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
