"""``convert_sync_batchnorm``: make every batch-norm layer of a model a ``bnlab.SyncBatchNorm``."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn

from bnlab.distributed.layer import SyncBatchNorm
from bnlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d

# Exact classes only: subclasses (renorm, ghost, frozen, ...) carry behaviour a swap would lose.
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
    if type(module) in _CONVERTIBLE:
        return _swap(module, process_group)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, process_group)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _swap(old: Any, process_group: dist.ProcessGroup | None) -> SyncBatchNorm:
    new = SyncBatchNorm(
        old.num_features,
        eps=old.eps,
        momentum=old.momentum,
        affine=old.affine,
        track_running_stats=old.track_running_stats,
        process_group=process_group,
        device="meta",
        bias=old.bias is not None,
    )
    for name in ("weight", "bias"):
        if getattr(old, name) is not None:
            setattr(new, name, getattr(old, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        new.register_buffer(name, getattr(old, name))
    new.train(old.training)
    return new
