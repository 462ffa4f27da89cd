"""Portable kernels written with plain torch tensor ops: any device, any float dtype, any layout.

Statistics are computed in two passes (mean first, then the mean of squared deviations), never as
E[x^2] - E[x]^2, so a channel like 1e4 + N(0, 1) keeps its variance. Low-precision inputs are
promoted to float32 for every reduction; results are cast back to the input dtype at the end.
"""

from __future__ import annotations

import torch

from bnlab.kernels.common import acc_dtype, channel_view, like, reduce_dims


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, *), in float32 or float64."""
    dims = reduce_dims(x)
    xa = x.to(acc_dtype(x.dtype))
    mean = xa.mean(dims)
    centered = xa - channel_view(mean, x)
    var = (centered * centered).mean(dims)
    return mean, var


def normalize(
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``(x - mean) * invstd * weight + bias`` as one scale and one shift per channel."""
    scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.to(scale.dtype)
    xa = x.to(scale.dtype)
    y = torch.addcmul(channel_view(shift, x), xa, channel_view(scale, x))
    return like(y.to(x.dtype), x)


def forward_train(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, var = batch_stats(x)
    invstd = torch.rsqrt(var + eps)
    return normalize(x, mean, invstd, weight, bias), mean, var


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    batch_stats: bool,
    need_input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Closed-form gradients of batch norm (Ioffe & Szegedy 2015, section 3).

    With M values per channel and xhat = (x - mean) * invstd:
      dbeta = sum(dy), dgamma = sum(dy * xhat),
      training: dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
      eval:     dx = gamma * invstd * dy   (the statistics are constants)
    """
    dims = reduce_dims(x)
    acc = mean.dtype
    dya = dy.to(acc)
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

