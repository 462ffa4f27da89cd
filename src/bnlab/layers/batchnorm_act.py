"""BatchNormAct1d/2d: batch norm followed by an activation, fused into one op.

``BatchNormAct2d(C, activation="relu")`` computes ``relu(BatchNorm2d(C)(x))`` with the
parameters, buffers and state_dict keys of ``BatchNorm2d`` (so weights move between the two),
through ``bnlab.functional.batch_norm_act``.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab.functional.batch_norm_act import batch_norm_act, check_activation
from bnlab.layers._base import BatchNormBase

__all__ = ["BatchNormAct1d", "BatchNormAct2d"]


class _BatchNormAct(BatchNormBase):
    """BatchNormBase plus an ``activation`` ("relu", "silu" or "identity")."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "relu",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.activation = check_activation(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return batch_norm_act(input, **self._op_kwargs(), activation=self.activation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"


class BatchNormAct1d(_BatchNormAct):
    """``act(BatchNorm1d(x))`` fused; input (N, C) or (N, C, L). See ``BatchNorm1d``.

    Examples::

        >>> layer = bnlab.BatchNormAct1d(100, activation="relu")
        >>> y = layer(torch.randn(20, 100))
    """

    expected_dims = (2, 3)


class BatchNormAct2d(_BatchNormAct):
    """``act(BatchNorm2d(x))`` fused; input (N, C, H, W), contiguous or channels_last.

    Examples::

        >>> layer = bnlab.BatchNormAct2d(16, activation="silu")
        >>> y = layer(torch.randn(8, 16, 32, 32))
    """

    expected_dims = (4,)
