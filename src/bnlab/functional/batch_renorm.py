"""``batch_renorm``: batch renormalization (Ioffe 2017, arXiv 1702.03275), PyTorch conventions.

In training, with the batch's mean ``mu_B`` and ``sigma_B = sqrt(var_B + eps)`` (biased variance)
and the running ``mu`` and ``sigma = sqrt(running_var + eps)`` *before* this batch's update:

    r = clip(sigma_B / sigma, 1 / rmax, rmax)        d = clip((mu_B - mu) / sigma, -dmax, dmax)
    y = ((x - mu_B) / sigma_B * r + d) * weight + bias

r and d are constants for the backward pass (the paper's stop_gradient). With ``rmax=1`` and
``dmax=0`` (the start of the paper's schedule) r = 1 and d = 0: this is exactly batch norm, in
the output, the gradients and the running statistics. As they relax, training sees the same
normalization as inference, which fixes small and non-i.i.d. batches.

The running statistics follow bnlab's one convention (``update_running_stats``: momentum as in
PyTorch, unbiased running variance), and in eval renorm *is* batch norm with them. The paper
(and Keras) track an average of ``sigma_B`` instead of the variance; ``bnlab.keras_conventions``
reproduces Keras's bookkeeping exactly when that is wanted.
"""

from __future__ import annotations

import math

import torch

from bnlab.functional._checks import (
    check_batch_size,
    check_bn_args,
    check_input,
)
from bnlab.functional._train_norm import train_norm
from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.running_stats import update_running_stats


def check_renorm_limits(rmax: float, dmax: float) -> tuple[float, float]:
    """``rmax >= 1`` (r is clipped to [1/rmax, rmax]) and ``dmax >= 0``; both finite or inf."""
    if not isinstance(rmax, int | float) or math.isnan(rmax) or rmax < 1.0:
        raise ValueError(f"rmax must be >= 1 (r is clipped to [1/rmax, rmax]), got {rmax!r}")
    if not isinstance(dmax, int | float) or math.isnan(dmax) or dmax < 0.0:
        raise ValueError(f"dmax must be >= 0 (d is clipped to [-dmax, dmax]), got {dmax!r}")
    return float(rmax), float(dmax)


def renorm_correction(
    mean: torch.Tensor,
    var: torch.Tensor,
    ref_mean: torch.Tensor,
    ref_std: torch.Tensor,
    eps: float,
    rmin: float | None,
    rmax: float | None,
    dmax: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``r = sqrt(var + eps) / ref_std`` clipped to [rmin, rmax], ``d = (mean - ref_mean) /
    ref_std`` clipped to [-dmax, dmax] (None: no clipping on that side). Detached."""
    ref_mean = ref_mean.detach().to(mean.dtype)
    ref_std = ref_std.detach().to(mean.dtype)
    r = torch.sqrt(var + eps) / ref_std
    d = (mean - ref_mean) / ref_std
    if rmin is not None or rmax is not None:
        r = r.clamp(min=rmin, max=rmax)
    if dmax is not None:
        d = d.clamp(min=-dmax, max=dmax)
    return r, d


def batch_renorm(
    input: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
    momentum: float | None = 0.1, eps: float = 1e-5, rmax: float = 3.0, dmax: float = 5.0, *,
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Batch renormalization; the arguments are ``bnlab.functional.batch_norm``'s plus:

    Args:
        running_mean, running_var: required (the corrections are measured against them).
        rmax: r is clipped to [1/rmax, rmax]; must be >= 1. Default 3 (the paper's final value).
        dmax: d is clipped to [-dmax, dmax]; must be >= 0. Default 5 (the paper's final value).

    Eval mode (``training=False``) is plain batch norm with the running statistics.
    """
    check_input(input)
    rmax, dmax = check_renorm_limits(rmax, dmax)
    if running_mean is None or running_var is None:
        raise ValueError(
            "batch_renorm needs running_mean and running_var (r and d are measured against them)"
        )
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    num_channels = input.shape[1]
    eps, momentum = check_bn_args(input, running_mean, running_var, weight, bias, eps, momentum)
    check_batch_size(input)
    ref_std = torch.sqrt(running_var.detach().to(torch.float64) + eps)

    def correction(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return renorm_correction(mean, var, running_mean, ref_std, eps, 1.0 / rmax, rmax, dmax)

    y, mean, var = train_norm(input, weight, bias, eps, correction)
    count = input.numel() // num_channels if num_channels else 0
    update_running_stats(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)
    return y
