"""``convert_sync_batchnorm``: make every batch-norm layer of a model a ``bnlab.SyncBatchNorm``."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn

from bnlab.distributed.layer import SyncBatchNorm
from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d
from bnlab.transforms.layer_classes import role_of, warn_unknown
from bnlab.transforms.swap import adopt, replace_children, settings_of

# Exact classes only: subclasses (renorm, ghost, norm+act, ...) carry behaviour a swap would lose;
# they are left as they are, with one warning naming them (frozen layers need no statistics).
_CONVERTIBLE: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
)


def convert_sync_batchnorm(
    module: nn.Module, process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Replace every torch or bnlab BatchNorm1d/2d/3d (and torch SyncBatchNorm) by SyncBatchNorm.

    Like ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, but for CPU and GPU. The new layer
    takes over the old one's Parameter and buffer objects (not copies), so weights, statistics,
    device, dtype and requires_grad are kept and an existing optimizer keeps working; the
    train/eval mode is kept too, and so is a missing bias (``bias=False``: the new layer's
    ``bias`` is None as well). Works in place on the children and returns the model (or the
    new layer if ``module`` is itself a batch-norm layer). Convert *before* wrapping the model
    in DistributedDataParallel.

    Example::

        model = bnlab.convert_sync_batchnorm(model)
        model = torch.nn.parallel.DistributedDataParallel(model)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
    left: list[tuple[str, nn.Module]] = []

    def replacement(old: nn.Module, path: str) -> nn.Module | None:
        if type(old) in _CONVERTIBLE:
            return adopt(old, _synchronized_like(old, process_group))
        if role_of(old) is not None:  # norm+act, frozen, variants, unknown subclasses
            if role_of(old) not in ("frozen", "frozen_act") and type(old) is not SyncBatchNorm:
                left.append((path, old))
            return old
        return None

    result = replace_children(module, replacement)
    warn_unknown("convert_sync_batchnorm", left, "has no synchronized counterpart in bnlab")
    return result


def _synchronized_like(old: Any, process_group: dist.ProcessGroup | None) -> SyncBatchNorm:
    return SyncBatchNorm(
        **settings_of(old), process_group=process_group, device="meta", bias=old.bias is not None
    )
