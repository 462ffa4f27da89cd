"""``masked_batch_norm``: batch norm whose statistics skip masked-out positions (padding).

For padded sequences (N, C, L) with a boolean ``mask`` (N, L), True where a position is real:
the per-channel mean and biased variance are those of the selected positions only, so the
statistics equal batch norm's over ``x.movedim(1, -1)[mask]``. As in Keras and Flax, *every*
position is then normalized with those statistics (padded outputs are finite garbage that the
next masked op ignores); gradients flow into the statistics only from where they came.

The statistics are computed by the shared kernel (``batch_stats``) on the gathered (M, C)
selection; the backward is the kernel's eval backward (``dy * weight * invstd`` everywhere, and
the sums ``sum(dy)``, ``sum(dy * xhat)`` over all positions) plus the batch-statistics term on
the selected positions:

    dx[sel] -= weight * invstd / M * (sum(dy) + xhat[sel] * sum(dy * xhat))

which reduces to the BN backward over the selection when the padded ``dy`` are zero.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab import kernels
from bnlab.functional._checks import (
    check_bn_args,
    check_input,
)
from bnlab.functional._train_norm import refuse_double_backward
from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.running_stats import update_running_stats
from bnlab.kernels.common import channel_view


def check_mask(mask: object, x: torch.Tensor) -> torch.Tensor:
    """``mask`` must be a bool tensor shaped like ``x`` without its channel axis: (N, *)."""
    expected = (x.shape[0], *x.shape[2:])
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of dtype bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must have dtype torch.bool (True = use the position), got {mask.dtype}"
        )
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"mask must have the input's shape without the channel axis, (N, *) = {expected} "
            f"for input of shape {tuple(x.shape)}; got mask of shape {tuple(mask.shape)}"
        )
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but the input is on {x.device}")
    return mask


def select_positions(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The selected positions of ``x`` (N, C, *) as an (M, C) tensor, M = mask.sum()."""
    return x.movedim(1, -1)[mask]


class MaskedNormFunction(torch.autograd.Function):
    """Autograd node returning ``(y, mean, var)``; statistics over the masked selection."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None,
        bias: torch.Tensor | None, eps: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        kern = kernels.select(x)
        selected = select_positions(x, mask)
        mean, var = kern.batch_stats(selected)
        invstd = torch.rsqrt(var + eps)
        y = kern.normalize(x, mean, invstd, weight, bias)
        ctx.count = selected.shape[0]
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, mask, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, _dmean: Any, _dvar: Any) -> tuple[Any, ...]:
        refuse_double_backward("bnlab's masked_batch_norm")
        x, mask, weight, mean, invstd = ctx.saved_tensors
        need_dx, _, need_dw, need_db = ctx.needs_input_grad[:4]
        kern = kernels.select(x)
        dx, sum_dy_xhat, sum_dy = kern.backward(dy, x, mean, invstd, weight, False, need_dx)
        if need_dx and dx is not None:
            gain = invstd if weight is None else invstd * weight.to(invstd.dtype)
            m = ctx.count
            xhat = (x.to(mean.dtype) - channel_view(mean, x)) * channel_view(invstd, x)
            term = channel_view(gain * sum_dy / m, x) + xhat * channel_view(
                gain * sum_dy_xhat / m, x
            )
            keep = mask.unsqueeze(1).to(term.dtype)
            dx = (dx.to(term.dtype) - term * keep).to(x.dtype)
        dw = sum_dy_xhat.to(weight.dtype) if need_dw else None
        db = sum_dy.to(ctx.bias_dtype) if need_db else None
        return dx, None, dw, db, None


def masked_batch_norm(
    input: torch.Tensor, mask: torch.Tensor | None, running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None, training: bool = False, momentum: float | None = 0.1,
    eps: float = 1e-5, *, num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Batch norm with statistics over the positions where ``mask`` is True.

    Args:
        input: (N, C, *): (N, C, L) for sequences.
        mask: bool (N, *), True = a real position; None means all positions (plain BN).
        The others are ``bnlab.functional.batch_norm``'s. The running variance is updated
        with the unbiased variance of the M selected values, ``var * M / (M - 1)``.

    Eval mode normalizes every position with the running statistics (the mask is not needed).
    """
    check_input(input)
    if mask is None or not training:
        if mask is not None:
            check_mask(mask, input)
        return batch_norm(
            input, running_mean, running_var, weight, bias, training, momentum, eps,
            num_batches_tracked=num_batches_tracked,
        )  # fmt: skip
    check_mask(mask, input)
    eps, momentum = check_bn_args(input, running_mean, running_var, weight, bias, eps, momentum)
    count = int(mask.sum())
    if count < 2:
        raise ValueError(
            "masked_batch_norm needs at least 2 selected positions to compute a variance in "
            f"training, got {count} (mask of shape {tuple(mask.shape)})"
        )
    y, mean, var = MaskedNormFunction.apply(input, mask, weight, bias, eps)
    update_running_stats(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)
    return y
