"""``SyncBatchNorm``: a batch-norm layer whose training statistics span a process group."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from bnlab.distributed.sync_batch_norm import sync_batch_norm
from bnlab.layers import BatchNormBase


class SyncBatchNorm(BatchNormBase):
    r"""Batch normalization synchronized over ``torch.distributed``, on CPU (gloo) and GPU (NCCL).

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    In training, mean and variance are per channel over the batch (and spatial positions) of
    *every* rank in ``process_group``: the result equals BatchNorm on the concatenation of the
    ranks' batches. Ranks may hold different batch sizes, or none. The group's statistics are
    combined with Chan's parallel-variance formula in one collective per forward and one per
    backward (see ``bnlab.distributed.sync_batch_norm``). The running statistics follow
    PyTorch's conventions (``running = (1 - momentum) * running + momentum * batch``, unbiased
    variance with the group's count) and stay identical on every rank.

    Without an initialized process group, with a group of one rank, or in eval mode, it is
    plain ``bnlab.BatchNorm*`` (eval uses the running statistics; no communication).

    Every rank of the group must run the layer's forward (and its backward) the same number of
    times: the collectives pair up across ranks. The weight and bias gradients are local, as in
    ``torch.nn.SyncBatchNorm``; DistributedDataParallel reduces them.

    Args:
        num_features: C, the number of channels.
        eps, momentum, affine, track_running_stats, device, dtype: as in ``bnlab.BatchNorm2d``.
        process_group: the group to synchronize over; None is the default (world) group.
        bias: keyword only, as in ``torch.nn.SyncBatchNorm``: False gives a learnable weight
            and no additive bias (``self.bias`` is None).

    Shape:
        Input: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W), contiguous or channels_last.
        Output: the same shape, dtype and memory format.

    Examples::

        >>> model = bnlab.convert_sync_batchnorm(model)  # then wrap in DistributedDataParallel
    """

    expected_dims = (2, 3, 4, 5)

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
        affine: bool = True, track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None, device: Any = None, dtype: Any = None, *,
        bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
            bias=bias,
        )
        self.process_group = process_group

    def _synchronized(self) -> bool:
        """True when this forward must combine statistics with other ranks."""
        if not self.training:
            return False
        if not (dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group) > 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self._synchronized():
            return super().forward(input)
        self._check_input_dim(input)
        update = self.track_running_stats
        return sync_batch_norm(
            input,
            self.running_mean if update else None,
            self.running_var if update else None,
            self.weight,
            self.bias,
            momentum=self.momentum,
            eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if update else None,
            process_group=self.process_group,
        )
