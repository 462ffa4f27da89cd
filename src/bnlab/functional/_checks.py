"""Argument checks shared by every functional op and layer: clear errors instead of wrong results.

User input is checked with exceptions (never ``assert``, which ``python -O`` removes). Messages
name what was expected and what came. What torch accepts, bnlab accepts too; where such a value
is dangerous (eps = 0, momentum > 1) the layer constructors say so with a UserWarning
(``check_layer_eps``, ``check_layer_momentum``) instead of refusing it. What is refused and why
is stated per check.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings

import torch

_INF = math.inf
#: the tensor types whose per-channel checks take the fast path (Parameters are most weights)
_PLAIN_TENSORS = frozenset((torch.Tensor, torch.nn.Parameter))


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


def check_num_features(num_features: object) -> int:
    """A layer's ``num_features`` (C) must be a positive int (not a bool)."""
    if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    return num_features


def is_channel_vector(t: torch.Tensor | None, num_channels: int) -> bool:
    """True for None or a plain tensor (or Parameter) of shape (C,): the common case, which
    passes ``check_channel_vector`` and is cheap to recognize; False means "check fully"."""
    return t is None or (type(t) in _PLAIN_TENSORS and t.shape == (num_channels,))


def check_channel_vector(t: torch.Tensor | None, name: str, num_channels: int) -> None:
    """Per-channel tensors (weight, bias, running statistics) must hold exactly C values."""
    if is_channel_vector(t, num_channels):
        return  # the common case, checked first: this runs several times per BN call
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.dim() != 1 or t.numel() != num_channels:
        raise ValueError(
            f"{name} should have {num_channels} elements (one per input channel), "
            f"got shape {tuple(t.shape)}"
        )


def check_bn_args(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, momentum: float | None,
    *, training: bool | None = None,
) -> tuple[float, float | None]:  # fmt: skip
    """The checks every BN op shares at its front door; returns (eps, momentum) as floats.

    ``input`` as in ``check_input``; running statistics and affine parameters hold one value per
    channel of ``input`` (dim 1); eps and momentum as in ``check_eps`` (with ``training``) and
    ``check_momentum``. The batch size is left to the op (``check_batch_size`` where one
    process must see more than one value per channel).
    """
    if plain_bn_args(input, running_mean, running_var, weight, bias, eps, momentum):
        return eps, momentum
    check_input(input)
    num_channels = input.shape[1]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        check_channel_vector(t, name, num_channels)
    return check_eps(eps, training=training), check_momentum(momentum)


def plain_bn_args(
    input: object, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None, bias: torch.Tensor | None, eps: object, momentum: object,
) -> bool:  # fmt: skip
    """True when ``check_bn_args`` would pass whatever the mode, told by the cheapest tests.

    A plain floating-point tensor of rank 2 to 5, per-channel tensors of shape (C,) or None, a
    float eps in (0, inf) and a float momentum in [0, inf) or None: the common case of every
    call, recognized in about a microsecond. False does not mean invalid, only that the full
    checks must decide (and raise their errors).
    """
    if type(input) is not torch.Tensor or not input.is_floating_point():
        return False
    if not 2 <= input.dim() <= 5:
        return False
    c = input.shape[1]
    return (
        is_channel_vector(running_mean, c)
        and is_channel_vector(running_var, c)
        and is_channel_vector(weight, c)
        and is_channel_vector(bias, c)
        and type(eps) is float
        and 0.0 < eps < _INF
        and (momentum is None or (type(momentum) is float and 0.0 <= momentum < _INF))
    )


def _finite_real(value: object, name: str) -> float:
    """``value`` as a float; a non-number is a TypeError, NaN or +-inf a ValueError.

    torch lets a NaN eps or momentum through and fills the output or the running statistics
    with NaN; nothing useful can come of it, so bnlab refuses it where it is given.
    """
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def check_eps(eps: float, *, training: bool | None = None) -> float:
    """eps as a float, by ``torch.nn.functional.batch_norm``'s rules (torch 2.13).

    - training (``training=True``): eps > 0, else ValueError. torch refuses eps <= 0 there with
      "batch_norm eps must be positive during training"; a channel whose batch variance is 0
      (a constant channel) would give inf/NaN.
    - evaluation (``training=False``): eps >= 0, else ValueError (torch's rule: a negative eps
      makes ``sqrt(var + eps)`` NaN wherever var < -eps). eps = 0 is accepted, as in torch: it
      is exact wherever the running variance is positive, and gives inf/NaN on a channel whose
      running variance is 0. The layers warn about it when built (``check_layer_eps``); the op
      itself stays silent, as torch's does, since it runs at every step.
    - ``training=None`` (mode not known to the caller, or a layer that wants eps > 0 whatever
      the mode): eps > 0, the stricter rule.
    - NaN, +-inf: ValueError; not a real number: TypeError (see ``_finite_real``).
    """
    value = _finite_real(eps, "eps")
    if training is False:
        if value < 0:
            raise ValueError(
                f"batch_norm eps must be non-negative, got {eps!r} "
                "(sqrt(running_var + eps) is NaN wherever running_var < -eps)"
            )
    elif value <= 0:
        when = " during training" if training else ""
        raise ValueError(
            f"batch_norm eps must be positive{when}, got {eps!r} "
            "(a channel with zero variance would give inf/NaN)"
        )
    return value


def check_layer_eps(eps: float) -> float:
    """A layer constructor's eps, as a float: accepted as torch accepts it, warned if dangerous.

    torch.nn.BatchNorm* stores any eps and leaves the checks to the forward (``check_eps``:
    eps > 0 in training, >= 0 in evaluation); so do bnlab's layers. eps <= 0 issues a
    UserWarning here, once per construction, naming the consequence; NaN, +-inf and
    non-numbers are refused at once (``_finite_real``).
    """
    value = _finite_real(eps, "eps")
    if value == 0:
        _warn(
            f"eps={eps!r}: training will raise ValueError (torch also refuses eps <= 0 in "
            "training), and in evaluation a channel whose running variance is 0 gives inf/NaN"
        )
    elif value < 0:
        _warn(
            f"eps={eps!r} < 0: every forward will raise ValueError (eps must be positive in "
            "training and non-negative in evaluation, as in torch)"
        )
    return value


def check_momentum(momentum: float | None) -> float | None:
    """PyTorch convention: ``running = (1 - momentum) * running + momentum * batch``.

    None is the cumulative moving average (``momentum = 1 / num_batches_tracked``). Accepted:
    any finite momentum >= 0, as torch accepts it. momentum > 1 is allowed (the layers warn
    when built, ``check_layer_momentum``): the update then overshoots the batch statistics,
    the running average oscillates, and diverges for momentum > 2. Refused (ValueError):
    momentum < 0, which torch accepts but which pushes the running statistics away from every
    batch (they always diverge; bnlab's kernels also reserve negative values for None), and
    NaN or +-inf. Not a real number: TypeError.
    """
    if momentum is None:
        return None
    value = _finite_real(momentum, "momentum")
    if value < 0:
        raise ValueError(
            f"momentum must be >= 0 or None, got {momentum!r}: a negative momentum moves the "
            "running statistics away from every batch, so they diverge"
        )
    return value


def check_layer_momentum(momentum: float | None) -> float | None:
    """A layer constructor's momentum: ``check_momentum``, plus a UserWarning when > 1."""
    value = check_momentum(momentum)
    if value is not None and value > 1:
        _warn(
            f"momentum={momentum!r} > 1: the running statistics overshoot each batch's "
            "(running = (1 - momentum) * running + momentum * batch extrapolates past the "
            "batch); they oscillate, and diverge for momentum > 2. PyTorch's convention is "
            "momentum in [0, 1] (Keras's momentum=0.99 is 0.01 here)"
        )
    return value


def _warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside bnlab (the line that built the
    layer), so Python's default filter shows it once per such line."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("bnlab."):
        frame = frame.f_back
        level += 1
    warnings.warn(message, UserWarning, stacklevel=level)


def check_batch_size(x: torch.Tensor) -> None:
    """Training needs more than one value per channel to have a variance (as torch says)."""
    values_per_channel = x.numel() // max(x.shape[1], 1)
    if values_per_channel == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
        )
