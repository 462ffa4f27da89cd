"""GhostBatchNorm1d/2d/3d: batch norm over virtual batches of ``virtual_batch_size`` samples.

See ``bnlab.functional.ghost_batch_norm`` for the definition, the running statistics (average of
the virtual batches' means and unbiased variances, one update per call) and the refusal of a
batch size that is not a multiple of ``virtual_batch_size``. Eval mode is plain batch norm.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab.functional.ghost_batch_norm import check_virtual_batch_size, ghost_batch_norm
from bnlab.layers._base import BatchNormBase


class _GhostBatchNormBase(BatchNormBase):
    def __init__(
        self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
        momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
        device: Any = None, dtype: Any = None, *, bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.virtual_batch_size = check_virtual_batch_size(virtual_batch_size)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return ghost_batch_norm(
            input, **self._op_kwargs(), virtual_batch_size=self.virtual_batch_size
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"


_DOC = """Ghost (virtual) batch norm over a {rank} input (Hoffer et al. 2017, arXiv 1705.08741).

    Training normalizes each consecutive group of ``virtual_batch_size`` samples with its own
    statistics, exactly like ``BatchNorm{suffix}`` applied to each chunk; the batch size must be
    a multiple of it. Eval normalizes with the running statistics.

    Args:
        num_features: C.
        virtual_batch_size: samples per virtual batch (k). Default 32.
        eps, momentum, affine, track_running_stats, device, dtype, bias (keyword only): as in
            ``BatchNorm{suffix}``.

    Shape: {shape}, output of the same shape.
    """


class GhostBatchNorm1d(_GhostBatchNormBase):
    __doc__ = _DOC.format(rank="2D or 3D", suffix="1d", shape="(N, C) or (N, C, L)")
    expected_dims = (2, 3)


class GhostBatchNorm2d(_GhostBatchNormBase):
    __doc__ = _DOC.format(rank="4D", suffix="2d", shape="(N, C, H, W)")
    expected_dims = (4,)


class GhostBatchNorm3d(_GhostBatchNormBase):
    __doc__ = _DOC.format(rank="5D", suffix="3d", shape="(N, C, D, H, W)")
    expected_dims = (5,)
