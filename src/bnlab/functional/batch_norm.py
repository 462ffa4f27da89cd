"""``batch_norm``: bnlab's batch normalization op, with its hand-derived backward.

y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (dimension 1), where in training
mean and var are the batch's (biased variance) and in eval the running statistics. See
``bnlab.functional.running_stats`` for the running-statistics conventions. Statistics are
accumulated in float32 (float64 for float64 input), whatever the input dtype.

The forward and backward call bnlab's own kernels (``bnlab.kernels.select``), never torch's
batch_norm. Two front doors lead to the same implementation (``_forward``/``_backward``):

- eager: ``BatchNormFunction`` (a ``torch.autograd.Function``), the leanest Python path;
- under ``torch.compile``/``torch.export``: the ``torch.library`` custom ops
  ``bnlab::batch_norm_forward``, ``bnlab::batch_norm_backward`` and
  ``bnlab::update_running_stats``, with fake (meta) implementations, so a model with bnlab
  layers traces without graph breaks. The running-statistics update (whose NaN guard looks at
  values) is an op of its own there, wrapping ``update_running_stats``.

The forward saves x (not xhat), the per-channel mean and invstd, and the affine parameters.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab import kernels
from bnlab.functional._checks import (
    check_batch_size,
    check_input,
    check_per_channel_args,
)
from bnlab.functional.running_stats import update_running_stats, warn_non_finite
from bnlab.kernels.common import memory_format_of

_NO_DOUBLE_BACKWARD = (
    "bnlab batch_norm has no double backward (create_graph=True); "
    "use torch.nn.functional.batch_norm for higher-order gradients"
)


def _forward(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None,
    stats_var: torch.Tensor | None,
    eps: float,
    activation: str,
    running: kernels.RunningStats | None = None,
    need_invstd: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(y, mean, var, invstd): batch statistics when ``stats_mean`` is None, else the given.

    In training, the batch is folded into ``running`` (if given) here too. In eval, invstd
    (which only backward needs) is None unless ``need_invstd``.
    """
    kern = kernels.select(x)
    if stats_mean is None or stats_var is None:
        y, mean, var, invstd, folded = kern.forward_train(x, weight, bias, eps, activation, running)
        if running is not None:
            if folded is None:
                update_running_stats(
                    running.running_mean, running.running_var, mean, var,
                    x.numel() // x.shape[1], running.momentum, running.num_batches_tracked,
                )  # fmt: skip
            elif not folded:
                warn_non_finite()
        return y, mean, var, invstd
    y = kern.eval_forward(x, stats_mean, stats_var, weight, bias, eps, activation)
    if not need_invstd:
        return y, stats_mean, stats_var, None
    acc = kernels.acc_dtype(x.dtype)
    mean, var = stats_mean.to(acc), stats_var.to(acc)
    return y, mean, var, torch.rsqrt(var + eps)


def _backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    use_batch_stats: bool,
    need_dx: bool,
    activation: str,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(dx or None, dweight, dbias); dweight/dbias in the parameters' dtype (acc if None)."""
    if x.numel() == 0:
        zeros = torch.zeros_like(mean)
        dx = torch.zeros_like(x) if need_dx else None
        sum_dz_xhat, sum_dz = zeros, zeros
    else:
        dx, sum_dz_xhat, sum_dz = kernels.select(x).backward(
            dy, x, mean, invstd, weight, use_batch_stats, need_dx, bias, activation
        )
    dw = sum_dz_xhat if weight is None else sum_dz_xhat.to(weight.dtype)
    db = sum_dz if bias is None else sum_dz.to(bias.dtype)
    return dx, dw, db


class BatchNormFunction(torch.autograd.Function):
    """Eager autograd node: forward returns (y, mean, var); mean and var are not differentiable.

    Saves x (not xhat), the per-channel mean and invstd, and weight/bias: what backward needs.
    In training, folds the batch into ``running`` (if given) as well.
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
        activation: str = "identity",
        running: kernels.RunningStats | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, mean, var, invstd = _forward(
            x, weight, bias, stats_mean, stats_var, eps, activation, running
        )
        ctx.use_batch_stats = stats_mean is None
        ctx.activation = activation
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, _dmean: Any, _dvar: Any) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            raise NotImplementedError(_NO_DOUBLE_BACKWARD)
        x, weight, bias, mean, invstd = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        dx, dw, db = _backward(
            dy, x, weight, bias, mean, invstd, ctx.use_batch_stats, need_dx, ctx.activation
        )
        return dx, dw if need_dw else None, db if need_db else None, None, None, None, None, None


# --------------------------------------------------------------------- torch.library custom ops


@torch.library.custom_op("bnlab::batch_norm_forward", mutates_args=())
def _forward_op(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None,
    stats_var: torch.Tensor | None,
    eps: float,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y, mean, var, invstd = _forward(x, weight, bias, stats_mean, stats_var, eps, activation)
    # A custom op's outputs may not alias its inputs (``.to`` returns the running buffer itself).
    if stats_mean is not None:
        mean, var = mean.clone(), var.clone()
    assert invstd is not None  # need_invstd
    return y, mean, var, invstd


@_forward_op.register_fake
def _(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None,
    stats_var: torch.Tensor | None,
    eps: float,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y = torch.empty_like(x, memory_format=memory_format_of(x))
    stat = x.new_empty(x.shape[1], dtype=kernels.acc_dtype(x.dtype))
    return y, stat, torch.empty_like(stat), torch.empty_like(stat)


@torch.library.custom_op("bnlab::batch_norm_backward", mutates_args=())
def _backward_op(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    use_batch_stats: bool,
    need_dx: bool,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = _backward(dy, x, weight, bias, mean, invstd, use_batch_stats, need_dx, activation)
    return (x.new_empty(0) if dx is None else dx), dw, db


@_backward_op.register_fake
def _(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    use_batch_stats: bool,
    need_dx: bool,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx = torch.empty_like(x, memory_format=memory_format_of(x)) if need_dx else x.new_empty(0)
    dw = torch.empty_like(mean) if weight is None else torch.empty_like(weight)
    db = torch.empty_like(mean) if bias is None else torch.empty_like(bias)
    return dx, dw, db


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    x, weight, bias, stats_mean, _stats_var, _eps, activation = inputs
    _y, mean, var, invstd = output
    ctx.use_batch_stats = stats_mean is None
    ctx.activation = activation
    ctx.save_for_backward(x, weight, bias, mean, invstd)
    ctx.mark_non_differentiable(mean, var, invstd)


def _op_backward(ctx: Any, dy: torch.Tensor, *_unused: Any) -> tuple[Any, ...]:
    x, weight, bias, mean, invstd = ctx.saved_tensors
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    dx, dw, db = _backward_op(
        dy, x, weight, bias, mean, invstd, ctx.use_batch_stats, need_dx, ctx.activation
    )
    return (
        dx if need_dx else None,
        dw if need_dw else None,
        db if need_db else None,
        None,
        None,
        None,
        None,
    )


_forward_op.register_autograd(_op_backward, setup_context=_setup_context)


@torch.library.custom_op(
    "bnlab::update_running_stats",
    mutates_args=("running_mean", "running_var", "num_batches_tracked"),
)
def _update_op(
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    count: int,
    momentum: float | None,
    num_batches_tracked: torch.Tensor | None,
) -> None:
    update_running_stats(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)


@_update_op.register_fake
def _(
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    count: int,
    momentum: float | None,
    num_batches_tracked: torch.Tensor | None,
) -> None:
    return None


# ----------------------------------------------------------------------------------- public op


def _batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    """Checks, then the eager or the traceable path; shared by batch_norm and batch_norm_act."""
    check_input(input)
    eps, momentum = check_per_channel_args(
        input, running_mean, running_var, weight, bias, eps, momentum
    )
    running = None
    if training:
        check_batch_size(input)
        stats_mean = stats_var = None
        if running_mean is not None or running_var is not None or num_batches_tracked is not None:
            running = kernels.RunningStats(running_mean, running_var, num_batches_tracked, momentum)
            if momentum is None and num_batches_tracked is None:
                raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    elif running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var must be given in evaluation mode (training=False)"
        )
    else:
        stats_mean, stats_var = running_mean, running_var
    if torch.compiler.is_compiling():
        y, mean, var, _ = _forward_op(input, weight, bias, stats_mean, stats_var, eps, activation)
        if running is not None:
            _update_op(
                running_mean,
                running_var,
                mean.detach(),
                var.detach(),
                input.numel() // input.shape[1],
                momentum,
                num_batches_tracked,
            )
        return y
    if torch.is_grad_enabled() and (
        input.requires_grad
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    ):
        y = BatchNormFunction.apply(
            input, weight, bias, stats_mean, stats_var, eps, activation, running
        )[0]
        return y
    # no autograd graph to record: skip the autograd.Function machinery
    return _forward(
        input, weight, bias, stats_mean, stats_var, eps, activation, running, need_invstd=False
    )[0]


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
    return _batch_norm(
        input,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
        num_batches_tracked,
        "identity",
    )
