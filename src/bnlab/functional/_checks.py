"""Argument checks shared by every functional op and layer: clear errors instead of wrong results.

User input is checked with exceptions (never ``assert``, which ``python -O`` removes). Messages
name what was expected and what came.
"""

from __future__ import annotations

import math

import torch


def check_input(x: object, *, min_dim: int = 2, max_dim: int = 5) -> torch.Tensor:
    """``x`` must be a floating-point tensor laid out as (N, C, *spatial)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
    if not (x.is_floating_point()):
        raise TypeError(
            f"expected a floating-point input (float16, bfloat16, float32 or float64), got {x.dtype}"
        )
    if not min_dim <= x.dim() <= max_dim:
        raise ValueError(
            f"expected {min_dim}D to {max_dim}D input shaped (N, C, *), got {x.dim()}D input "
            f"of shape {tuple(x.shape)}"
        )
    return x


def check_channel_vector(t: torch.Tensor | None, name: str, num_channels: int) -> None:
    """Per-channel tensors (weight, bias, running statistics) must hold exactly C values."""
    if t is None or (type(t) is torch.Tensor and t.shape == (num_channels,)):
        return  # the common case, checked first: this runs several times per BN call
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() != num_channels:
        raise ValueError(
            f"{name} should have {num_channels} elements (one per input channel), "
            f"got shape {tuple(t.shape)}"
        )


def check_per_channel_args(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    momentum: float | None,
) -> tuple[float, float | None]:
    """The checks every BN op shares; returns (eps, momentum) as floats.

    Running statistics and affine parameters hold one value per channel of ``input`` (dim 1);
    eps > 0; momentum in [0, 1] or None.
    """
    num_channels = input.shape[1]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        check_channel_vector(t, name, num_channels)
    return check_eps(eps), check_momentum(momentum)


def check_eps(eps: float) -> float:
    if not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return float(eps)


def check_momentum(momentum: float | None) -> float | None:
    """PyTorch convention: momentum in [0, 1], or None for the cumulative moving average."""
    if momentum is None:
        return None
    if not isinstance(momentum, int | float) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
    return float(momentum)


def check_batch_size(x: torch.Tensor) -> None:
    """Training needs more than one value per channel to have a variance (as torch says)."""
    values_per_channel = x.numel() // max(x.shape[1], 1)
    if values_per_channel == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
        )
