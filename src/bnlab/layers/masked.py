"""MaskedBatchNorm1d: batch norm for padded sequences, statistics over the real positions only.

See ``bnlab.functional.masked_batch_norm``. ``forward(x, mask)`` with x (N, C, L) and a bool
mask (N, L), True at real positions; without a mask it is ``BatchNorm1d``.
"""

from __future__ import annotations

import torch

from bnlab.functional.masked_batch_norm import masked_batch_norm
from bnlab.layers._base import BatchNormBase


class MaskedBatchNorm1d(BatchNormBase):
    """Batch norm over (N, C) or (N, C, L) whose statistics skip masked-out positions.

    Training: per-channel mean and biased variance over the positions where ``mask`` is True
    (as in Keras's and Flax's masked BatchNormalization); every position is normalized with
    them. The running variance is updated with the unbiased variance of the selected values.
    Eval: the running statistics, everywhere. Arguments as in ``bnlab.BatchNorm1d``.

    Shape: input (N, C) or (N, C, L); mask (N,) or (N, L), dtype bool; output like the input.

    Example::

        >>> bn = bnlab.MaskedBatchNorm1d(16)
        >>> y = bn(x, mask=lengths[:, None] > torch.arange(x.shape[2]))
    """

    expected_dims = (2, 3)

    def forward(self, input: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input_dim(input)
        return masked_batch_norm(input, mask, **self._op_kwargs())
