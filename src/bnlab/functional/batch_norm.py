"""``batch_norm``: bnlab's batch normalization op, with its hand-derived backward.

y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (dimension 1), where in training
mean and var are the batch's (biased variance) and in eval the running statistics. See
``bnlab.functional.running_stats`` for the running-statistics conventions. Statistics are
accumulated in float32 (float64 for float64 input), whatever the input dtype.

The forward and backward call bnlab's own kernels (``bnlab.kernels.select``), never torch's
batch_norm.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab import kernels
from bnlab.functional._checks import (
    check_batch_size,
    check_channel_vector,
    check_eps,
    check_input,
    check_momentum,
)
from bnlab.functional.running_stats import update_running_stats


class BatchNormFunction(torch.autograd.Function):
    """Autograd node: forward returns (y, mean, var); mean and var are not differentiable.

    Saves x (not xhat), the per-channel mean and invstd, and the weight: what backward needs.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        stats_mean: torch.Tensor | None,
        stats_var: torch.Tensor | None,
        eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kern = kernels.select(x)
        acc = kernels.acc_dtype(x.dtype)
        use_batch_stats = stats_mean is None
        if stats_mean is None or stats_var is None:
            y, mean, var = kern.forward_train(x, weight, bias, eps)
            invstd = torch.rsqrt(var + eps)
        else:
            mean, var = stats_mean.to(acc), stats_var.to(acc)
            invstd = torch.rsqrt(var + eps)
            y = kern.normalize(x, mean, invstd, weight, bias)
        ctx.use_batch_stats = use_batch_stats
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, _dmean: Any, _dvar: Any) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            raise NotImplementedError(
                "bnlab batch_norm has no double backward (create_graph=True); "
                "use torch.nn.functional.batch_norm for higher-order gradients"
            )
        x, weight, mean, invstd = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        if x.numel() == 0:
            dx = torch.zeros_like(x) if need_dx else None
            dw = torch.zeros_like(weight) if need_dw else None
            db = torch.zeros_like(weight) if need_db else None
            return dx, dw, db, None, None, None
        dx, sum_dy_xhat, sum_dy = kernels.select(x).backward(
            dy, x, mean, invstd, weight, ctx.use_batch_stats, need_dx
        )
        dw = sum_dy_xhat.to(weight.dtype) if need_dw else None
        db = sum_dy.to(weight.dtype) if need_db else None
        return dx, dw, db, None, None, None


def batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    *,
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch normalization with the semantics of ``torch.nn.functional.batch_norm``.

    Args:
        input: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); contiguous or channels_last
            (the output keeps the input's memory format and dtype).
        running_mean, running_var: per-channel buffers (C,), updated in place when ``training``;
            may be None in training (then only batch statistics are used).
        weight, bias: affine parameters gamma and beta (C,), or None.
        training: normalize with the batch statistics and update the running ones; otherwise
            normalize with the running statistics.
        momentum: ``running = (1 - momentum) * running + momentum * batch``; None for the
            cumulative average (needs ``num_batches_tracked``).
        eps: added to the variance before the square root; must be > 0.
        num_batches_tracked: optional counter, incremented with each running-statistics update
            (bnlab extension; a batch with non-finite statistics is skipped, counter included).
    """
    check_input(input)
    num_channels = input.shape[1]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        check_channel_vector(t, name, num_channels)
    eps = check_eps(eps)
    momentum = check_momentum(momentum)
    if training:
        check_batch_size(input)
        y, mean, var = BatchNormFunction.apply(input, weight, bias, None, None, eps)
        count = input.numel() // num_channels if num_channels else 0
        update_running_stats(
            running_mean, running_var, mean, var, count, momentum, num_batches_tracked
        )
        return y
    if running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var must be given in evaluation mode (training=False)"
        )
    y, _, _ = BatchNormFunction.apply(input, weight, bias, running_mean, running_var, eps)
    return y
