"""Portable kernels written with plain torch tensor ops: any device, any float dtype, any layout.

An optional activation (``"identity"``, ``"relu"``, ``"silu"``, ``"hardswish"``) is applied to the normalized
output; its derivative is taken from the pre-activation recomputed from x in ``backward``.

Statistics are computed in two passes (mean first, then the mean of squared deviations), never as
E[x^2] - E[x]^2, so a channel like 1e4 + N(0, 1) keeps its variance. Low-precision inputs are
promoted to float32 for every reduction; results are cast back to the input dtype at the end.
"""

from __future__ import annotations

import torch

from bnlab.kernels.common import (
    RunningStats,
    TrainOutput,
    acc_dtype,
    channel_view,
    like,
    reduce_dims,
)


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, *), in float32 or float64."""
    dims = reduce_dims(x)
    xa = x.to(acc_dtype(x.dtype))
    mean = xa.mean(dims)
    centered = xa - channel_view(mean, x)
    var = (centered * centered).mean(dims)
    return mean, var


ACTIVATIONS = ("identity", "relu", "silu", "hardswish")


def _pre_activation(
    x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """z = (x - mean) * invstd * weight + bias, in the statistics' dtype."""
    scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.to(scale.dtype)
    xa = x.to(scale.dtype)
    return torch.addcmul(channel_view(shift, x), xa, channel_view(scale, x))


def normalize(
    x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None, activation: str = "identity",
) -> torch.Tensor:  # fmt: skip
    """``act((x - mean) * invstd * weight + bias)`` as one scale and one shift per channel."""
    y = _pre_activation(x, mean, invstd, weight, bias)
    if activation == "relu":
        y = torch.relu(y)
    elif activation == "silu":
        y = torch.nn.functional.silu(y)
    elif activation == "hardswish":
        y = torch.nn.functional.hardswish(y)
    return like(y.to(x.dtype), x)


def forward_train(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
    activation: str = "identity", running: RunningStats | None = None,
) -> TrainOutput:  # fmt: skip
    """Batch statistics, then normalize with them; ``running`` is left to the caller."""
    mean, var = batch_stats(x)
    invstd = torch.rsqrt(var + eps)
    y = normalize(x, mean, invstd, weight, bias, activation)
    return TrainOutput(y, mean, var, invstd)


def eval_forward(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None, eps: float, activation: str = "identity",
) -> torch.Tensor:  # fmt: skip
    """Normalize with given statistics (the running ones in eval): invstd = 1 / sqrt(var + eps)."""
    acc = acc_dtype(x.dtype)
    invstd = torch.rsqrt(var.to(acc) + eps)
    return normalize(x, mean.to(acc), invstd, weight, bias, activation)


def backward(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
    weight: torch.Tensor | None, batch_stats: bool, need_input_grad: bool,
    bias: torch.Tensor | None = None, activation: str = "identity",
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Closed-form gradients of batch norm (Ioffe & Szegedy 2015, section 3).

    With an activation, dy below is first replaced by dz = dy * act'(z), z the pre-activation
    recomputed from x (``bias`` is only needed for that). Returns (dx, sum(dy*xhat), sum(dy)).
    With M values per channel and xhat = (x - mean) * invstd:
      dbeta = sum(dy), dgamma = sum(dy * xhat),
      training: dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
      eval:     dx = gamma * invstd * dy   (the statistics are constants)
    """
    dims = reduce_dims(x)
    acc = mean.dtype
    dya = dy.to(acc)
    if activation != "identity":
        z = _pre_activation(x, mean, invstd, weight, bias)
        if activation == "relu":
            dya = torch.where(z > 0, dya, torch.zeros_like(dya))
        elif activation == "silu":
            sig = torch.sigmoid(z)
            dya = dya * sig * (1 + z * (1 - sig))
        else:  # hardswish, torch's hardswish_backward
            slope = torch.where(z <= 3, z / 3 + 0.5, torch.ones_like(z))
            dya = dya * torch.where(z < -3, torch.zeros_like(z), slope)
    xhat = (x.to(acc) - channel_view(mean, x)) * channel_view(invstd, x)
    sum_dy = dya.sum(dims)
    sum_dy_xhat = (dya * xhat).sum(dims)
    dx = None
    if need_input_grad:
        gain = invstd if weight is None else invstd * weight.to(acc)
        if batch_stats:
            m = x.numel() // x.shape[1]
            dx = (dya - channel_view(sum_dy / m, x) - xhat * channel_view(sum_dy_xhat / m, x)) * (
                channel_view(gain, x)
            )
        else:
            dx = dya * channel_view(gain, x)
        dx = like(dx.to(x.dtype), x)
    return dx, sum_dy_xhat, sum_dy
