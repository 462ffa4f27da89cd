"""``batch_norm``: bnlab's batch normalization op, with its hand-derived backward.

y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (dimension 1), where in training
mean and var are the batch's (biased variance) and in eval the running statistics. See
``bnlab.functional.running_stats`` for the running-statistics conventions. Statistics are
accumulated in float32 (float64 for float64 input), whatever the input dtype.

The forward and backward call bnlab's own kernels (``bnlab.kernels.select``), never torch's
batch_norm. Front doors, all leading to the same ``_forward``/``_backward``:

- eager: ``BatchNormFunction`` (a ``torch.autograd.Function``), the leanest Python path;
- the dispatcher: the ``torch.library`` custom ops ``bnlab::batch_norm_forward``,
  ``bnlab::batch_norm_backward`` and ``bnlab::update_running_stats`` (fake implementations and
  an autograd formula registered), called by ``_batch_norm_ops``. It serves ``torch.compile``
  and ``torch.export`` (no graph breaks), TorchScript (the layers' forward compiles to calls of
  these ops; ``batch_norm`` itself does not compile, as TorchScript refuses keyword-only
  arguments with defaults) and ``torch.jit.trace`` (which records a scripted
  ``_batch_norm_ops``, so that the count of values per channel follows the batch size). A
  scripted or traced model runs wherever bnlab is imported (the ops are registered from
  Python), not in a Python-free runtime. The ops check their own arguments, since scripted and
  traced graphs call them without the Python checks.

Under torch.func transforms (vmap, grad, jvp, jacrev, hessian, ...) the forward is computed with
plain torch ops instead (``_transformed_forward``), which every transform composes with; the
running update stays the op, batched by ``_update_vmap``. Higher-order gradients (backward
with ``create_graph=True``) differentiate such a recomputation (``_double_backward``); the
first-order backward stays on the compiled kernels.

The forward saves x (not xhat), the per-channel mean and invstd, and the affine parameters.
"""

# No ``from __future__ import annotations``: TorchScript reads the annotations of the functions
# it meets (``@torch.jit.unused`` ones included) as objects, and cannot resolve them as strings.
from collections.abc import Callable
from typing import Any

import torch

from bnlab import kernels
from bnlab.functional._checks import (
    check_batch_size,
    check_bn_args,
    check_channel_vector,
    check_momentum,
)
from bnlab.functional.running_stats import update_running_stats, warn_non_finite
from bnlab.kernels import portable
from bnlab.kernels.common import memory_format_of

_VMAP_UNBATCHED_RUNNING_STATS = (
    "bnlab batch norm got a batched input under vmap in training mode while running_mean or "
    "running_var, which are updated in place, were not batched (as torch's batch norm, it "
    "refuses: one buffer cannot hold a statistic per vmapped sample). If you do not need the "
    "running statistics, use track_running_stats=False or eval mode; to vmap over several "
    "models, batch their buffers too (torch.func.stack_module_state)."
)

# C functions, bound once: the eager path asks them at every call (~0.1 us).
_is_tracing = torch._C._is_tracing
_transforms_active = torch._C._are_functorch_transforms_active
_grad_enabled = torch._C.is_grad_enabled


def check_activation(activation: object) -> str:
    """``activation`` must name one of ``portable.ACTIVATIONS``."""
    if not isinstance(activation, str) or activation not in portable.ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {', '.join(portable.ACTIVATIONS)}; got {activation!r}"
        )
    return activation


def _forward(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None, stats_var: torch.Tensor | None, eps: float, activation: str,
    running: kernels.RunningStats | None = None, need_invstd: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
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
    # a copy of the mean, which backward keeps: the running buffer may be updated in place
    # (by a training step of the same layer) before this graph's backward runs
    mean = stats_mean.to(acc, copy=True)
    var = stats_var if stats_var.dtype is acc else stats_var.to(acc)
    return y, mean, var, (var + eps).rsqrt_()


def _backward(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, invstd: torch.Tensor, use_batch_stats: bool, need_dx: bool, activation: str,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(dx or None, dweight, dbias); dweight/dbias in the parameters' dtype (acc if None)."""
    if x.numel() == 0:
        zeros = torch.zeros_like(mean)
        dx = torch.zeros_like(x) if need_dx else None
        sum_dz_xhat, sum_dz = zeros, zeros
    else:
        dx, sum_dz_xhat, sum_dz = kernels.select(x).backward(
            dy, x, mean, invstd, weight, use_batch_stats, need_dx, bias, activation
        )
    # ``.to`` only where the dtypes differ: it costs ~0.3 us even when it returns its input
    if weight is not None and weight.dtype is not sum_dz_xhat.dtype:
        sum_dz_xhat = sum_dz_xhat.to(weight.dtype)
    if bias is not None and bias.dtype is not sum_dz.dtype:
        sum_dz = sum_dz.to(bias.dtype)
    return dx, sum_dz_xhat, sum_dz


def _double_backward(
    ctx: Any, dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None, mean: torch.Tensor, invstd: torch.Tensor,
) -> list[torch.Tensor | None]:  # fmt: skip
    """[dx, dweight, dbias] (None where not needed) as differentiable functions of the inputs.

    For backward under ``create_graph=True`` (Hessian-vector products, gradient penalties): the
    compiled backward is not itself differentiable, so this recomputes the forward from the
    saved inputs with torch ops (the ``portable`` kernels) and lets autograd differentiate it
    with ``create_graph=True``. In training the statistics are recomputed from x (they depend
    on it); in eval the saved mean and invstd are constants. ``ctx`` carries use_batch_stats,
    eps, activation and needs_input_grad (x, weight, bias first).
    """
    needs = ctx.needs_input_grad[:3]
    if ctx.use_batch_stats:
        y = portable.forward_train(x, weight, bias, ctx.eps, ctx.activation).y
    else:
        y = portable.normalize(x, mean, invstd, weight, bias, ctx.activation)
    wanted = [t for t, need in zip((x, weight, bias), needs, strict=True) if need and t is not None]
    grads = iter(torch.autograd.grad(y, wanted, dy, create_graph=True))
    return [next(grads) if need else None for need in needs]


def _save(
    ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, invstd: torch.Tensor | None, use_batch_stats: bool, eps: float,
    activation: str,
) -> None:  # fmt: skip
    """Keep what the backward needs: x (not xhat), the affine parameters, mean and invstd."""
    ctx.use_batch_stats = use_batch_stats
    ctx.eps = eps
    ctx.activation = activation
    ctx.save_for_backward(x, weight, bias, mean, invstd)


def _grads(
    ctx: Any, dy: torch.Tensor, backward: Callable[..., tuple[Any, Any, Any]]
) -> tuple[torch.Tensor | None, ...]:
    """(dx, dweight, dbias) from what ``_save`` kept, None where not needed.

    ``backward`` is ``_backward`` (eager) or the dispatcher op ``_backward_op`` (graphs); under
    ``create_graph=True`` the gradients come from ``_double_backward`` instead.
    """
    x, weight, bias, mean, invstd = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        return tuple(_double_backward(ctx, dy, x, weight, bias, mean, invstd))
    need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
    dx, dw, db = backward(
        dy, x, weight, bias, mean, invstd, ctx.use_batch_stats, need_dx, ctx.activation
    )
    return dx if need_dx else None, dw if need_dw else None, db if need_db else None


class BatchNormFunction(torch.autograd.Function):
    """Eager autograd node: forward returns y alone (the eager callers need no statistics, and
    each further output would cost autograd a few microseconds per call).

    Saves x (not xhat), the per-channel mean and invstd, and weight/bias: what backward needs.
    In training, folds the batch into ``running`` (if given) as well. Not used under torch.func
    transforms (``_batch_norm`` routes those to torch ops), hence no ``setup_context``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
        stats_mean: torch.Tensor | None, stats_var: torch.Tensor | None, eps: float,
        activation: str = "identity", running: kernels.RunningStats | None = None,
    ) -> torch.Tensor:  # fmt: skip
        y, mean, _var, invstd = _forward(
            x, weight, bias, stats_mean, stats_var, eps, activation, running
        )
        _save(ctx, x, weight, bias, mean, invstd, stats_mean is None, eps, activation)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        dx, dw, db = _grads(ctx, dy, _backward)
        return dx, dw, db, None, None, None, None, None


# ``torch.autograd.Function.apply`` minus its Python wrapper, which costs ~2.5 us per call: the
# wrapper binds default arguments (only for Functions with ``setup_context``), routes torch.func
# transforms (``_eager`` never runs under them) and unwraps dead functorch wrappers, which
# ``_apply`` does itself for the tensor arguments, as the wrapper does.
_function_apply = super(torch.autograd.Function, BatchNormFunction).apply
_unwrap_if_dead = torch._C._functorch.unwrap_if_dead


def _apply(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None, stats_var: torch.Tensor | None, eps: float, activation: str,
    running: kernels.RunningStats | None,
) -> torch.Tensor:  # fmt: skip
    """``BatchNormFunction.apply`` with these arguments, in eager mode without transforms."""
    return _function_apply(  # type: ignore[no-any-return]
        _unwrap_if_dead(x),
        None if weight is None else _unwrap_if_dead(weight),
        None if bias is None else _unwrap_if_dead(bias),
        None if stats_mean is None else _unwrap_if_dead(stats_mean),
        None if stats_var is None else _unwrap_if_dead(stats_var),
        eps, activation, running,
    )  # fmt: skip


# --------------------------------------------------------------------- torch.library custom ops


@torch.library.custom_op("bnlab::batch_norm_forward", mutates_args=())
def _forward_op(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None, stats_var: torch.Tensor | None, eps: float, activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    training = stats_mean is None or stats_var is None
    eps, _ = check_bn_args(x, stats_mean, stats_var, weight, bias, eps, None, training=training)
    if training:
        check_batch_size(x)
    check_activation(activation)
    y, mean, var, invstd = _forward(x, weight, bias, stats_mean, stats_var, eps, activation)
    # A custom op's outputs may not alias its inputs (``.to`` returns the running buffer itself).
    if stats_mean is not None:
        mean, var = mean.clone(), var.clone()
    assert invstd is not None  # need_invstd
    return y, mean, var, invstd


@_forward_op.register_fake
def _forward_fake(
    x: torch.Tensor, *_args: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y = torch.empty_like(x, memory_format=memory_format_of(x))
    stat = x.new_empty(x.shape[1], dtype=kernels.acc_dtype(x.dtype))
    return y, stat, torch.empty_like(stat), torch.empty_like(stat)


@torch.library.custom_op("bnlab::batch_norm_backward", mutates_args=())
def _backward_op(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, invstd: torch.Tensor, use_batch_stats: bool, need_dx: bool, activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    dx, dw, db = _backward(dy, x, weight, bias, mean, invstd, use_batch_stats, need_dx, activation)
    return (x.new_empty(0) if dx is None else dx), dw, db


@_backward_op.register_fake
def _backward_fake(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor, invstd: torch.Tensor, use_batch_stats: bool, need_dx: bool, activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    dx = torch.empty_like(x, memory_format=memory_format_of(x)) if need_dx else x.new_empty(0)
    dw = torch.empty_like(mean) if weight is None else torch.empty_like(weight)
    db = torch.empty_like(mean) if bias is None else torch.empty_like(bias)
    return dx, dw, db


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    x, weight, bias, stats_mean, _stats_var, eps, activation = inputs
    _y, mean, var, invstd = output
    _save(ctx, x, weight, bias, mean, invstd, stats_mean is None, eps, activation)
    ctx.mark_non_differentiable(mean, var, invstd)


def _op_backward(ctx: Any, dy: torch.Tensor, *_unused: Any) -> tuple[Any, ...]:
    return (*_grads(ctx, dy, _backward_op), None, None, None, None)


_forward_op.register_autograd(_op_backward, setup_context=_setup_context)


@torch.library.custom_op(
    "bnlab::update_running_stats",
    mutates_args=("running_mean", "running_var", "num_batches_tracked"),
)
def _update_op(
    running_mean: torch.Tensor | None, running_var: torch.Tensor | None, mean: torch.Tensor,
    var: torch.Tensor, count: int, momentum: float | None, num_batches_tracked: torch.Tensor | None,
) -> None:  # fmt: skip
    check_momentum(momentum)
    check_channel_vector(running_mean, "running_mean", mean.shape[0])
    check_channel_vector(running_var, "running_var", mean.shape[0])
    update_running_stats(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)


@_update_op.register_fake
def _update_fake(*_args: Any) -> None:
    return None


@_update_op.register_vmap
def _update_vmap(
    info: Any, in_dims: tuple[int | None, ...], running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None, mean: torch.Tensor, var: torch.Tensor, count: int,
    momentum: float | None, num_batches_tracked: torch.Tensor | None,
) -> tuple[None, None]:  # fmt: skip
    """The running update under vmap: one update per vmapped model, or torch's refusal.

    Buffers batched (vmap over models whose buffers were stacked, torch.func.stack_module_state):
    each slice is updated in place with its slice of the statistics. Statistics batched but a
    buffer not: one buffer cannot follow every vmapped sample, so this raises, as torch's batch
    norm does. A counter that is not batched counts the step once.
    """
    rm_dim, rv_dim, mean_dim, var_dim, _, _, nbt_dim = in_dims
    if (mean_dim is not None or var_dim is not None) and (
        (running_mean is not None and rm_dim is None)
        or (running_var is not None and rv_dim is None)
    ):
        raise RuntimeError(_VMAP_UNBATCHED_RUNNING_STATS)

    def part(t: torch.Tensor | None, dim: int | None, i: int) -> torch.Tensor | None:
        return t if t is None or dim is None else t.select(dim, i)

    factor, counter = momentum, num_batches_tracked
    if num_batches_tracked is not None and nbt_dim is None:
        num_batches_tracked.add_(1)
        counter = None
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked.item())
    for i in range(info.batch_size):
        _update_op(
            part(running_mean, rm_dim, i),
            part(running_var, rv_dim, i),
            part(mean, mean_dim, i),  # type: ignore[arg-type]
            part(var, var_dim, i),  # type: ignore[arg-type]
            count,
            factor,
            part(counter, nbt_dim, i),
        )
    return None, None


# --------------------------------------------------------------------------------- front doors


@torch.jit.unused
def _transformed_forward(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None, stats_var: torch.Tensor | None, eps: float, activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(y, mean, var) in torch ops (the ``portable`` kernels), for torch.func transforms.

    Why torch ops rather than the compiled kernels there: ``generate_vmap_rule`` would run the
    autograd.Function's forward on batched tensors, which Numba cannot read; vmap rules for the
    custom ops would cover vmap only, not jvp/jacfwd (the ops have no forward-mode formula) nor
    transforms of their backward. Torch ops compose with every transform and need neither; they
    cost a few more passes, only under transforms. On a contiguous copy of x: a batched tensor
    cannot tell whether it is channels_last, which the kernels ask.
    """
    x = x.contiguous()
    if stats_mean is None or stats_var is None:
        y, mean, var, _, _ = portable.forward_train(x, weight, bias, eps, activation)
        return y, mean, var
    y = portable.eval_forward(x, stats_mean, stats_var, weight, bias, eps, activation)
    return y, stats_mean, stats_var


def _normalizing_stats(
    training: bool, running_mean: torch.Tensor | None, running_var: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The statistics to normalize with: None in training (the batch's), else the running ones."""
    if training:
        return None, None
    if running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var must be given in evaluation mode (training=False)"
        )
    return running_mean, running_var


@torch.jit.script_if_tracing
def _batch_norm_ops(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool, momentum: float | None,
    eps: float, num_batches_tracked: torch.Tensor | None, activation: str,
    transformed: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Batch norm as dispatcher ops: for torch.compile/export, TorchScript and torch.jit.trace.

    TorchScript compiles this function (the ops check their own arguments); torch.jit.trace
    runs it scripted, so that the count of values per channel (the running variance's
    n / (n - 1)) is computed in the graph instead of being frozen at the example's batch size.
    ``transformed``: the forward in torch ops instead (``_transformed_forward``), for torch.func
    transforms; the running update stays the op (its vmap rule is ``_update_vmap``).
    """
    stats_mean, stats_var = _normalizing_stats(training, running_mean, running_var)
    if transformed:
        y, mean, var = _transformed_forward(
            input, weight, bias, stats_mean, stats_var, eps, activation
        )
    else:
        y, mean, var, _ = torch.ops.bnlab.batch_norm_forward(
            input, weight, bias, stats_mean, stats_var, eps, activation
        )
    if training and (
        running_mean is not None or running_var is not None or num_batches_tracked is not None
    ):
        torch.ops.bnlab.update_running_stats(
            running_mean,
            running_var,
            mean.detach(),
            var.detach(),
            input.numel() // input.size(1),
            momentum,
            num_batches_tracked,
        )
    return y


def _batch_norm(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool, momentum: float | None,
    eps: float, num_batches_tracked: torch.Tensor | None, activation: str,
) -> torch.Tensor:  # fmt: skip
    """Checks, then the eager path or ``_batch_norm_ops``; shared by batch_norm and batch_norm_act.

    Eager: the autograd.Function, or the kernels directly when no graph is recorded. Under
    torch.compile and torch.func transforms: ``_batch_norm_ops`` (with the torch-ops forward
    for the transforms), after the checks. Under torch.jit.trace: ``_batch_norm_ops`` scripted,
    without the Python checks, which would read sizes that the tracer hands out as tensors
    (a TracerWarning each); the ops check their arguments whenever the graph runs.
    """
    compiling = torch.compiler.is_compiling()  # first: Dynamo must not meet the C calls below
    if not compiling and _is_tracing():
        return _batch_norm_ops(
            input, running_mean, running_var, weight, bias, training, momentum, eps,
            num_batches_tracked, activation,
        )  # fmt: skip
    eps, momentum = check_bn_args(
        input, running_mean, running_var, weight, bias, eps, momentum, training=training
    )
    if training:
        check_batch_size(input)
    stats_mean, stats_var = _normalizing_stats(training, running_mean, running_var)
    running = None
    if training and (
        running_mean is not None or running_var is not None or num_batches_tracked is not None
    ):
        running = kernels.RunningStats(running_mean, running_var, num_batches_tracked, momentum)
        if momentum is None and num_batches_tracked is None:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
    if compiling or _transforms_active():
        return _batch_norm_ops(
            input, running_mean, running_var, weight, bias, training, momentum, eps,
            num_batches_tracked, activation, transformed=not compiling,
        )  # fmt: skip
    return _eager(input, weight, bias, stats_mean, stats_var, eps, activation, running)


def _eager(
    input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    stats_mean: torch.Tensor | None, stats_var: torch.Tensor | None, eps: float, activation: str,
    running: kernels.RunningStats | None,
) -> torch.Tensor:  # fmt: skip
    """y in eager mode, from checked arguments: through ``BatchNormFunction`` when autograd
    records a graph, else the kernels directly (no autograd.Function machinery)."""
    if _grad_enabled() and (
        input.requires_grad
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    ):
        return _apply(input, weight, bias, stats_mean, stats_var, eps, activation, running)
    return _forward(
        input, weight, bias, stats_mean, stats_var, eps, activation, running, need_invstd=False
    )[0]


def batch_norm(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
    momentum: float | None = 0.1, eps: float = 1e-5, *,
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
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

    Traceable (``torch.jit.trace``), exportable, usable under torch.func transforms and with
    ``create_graph=True``; see the module docstring. Not compiled by ``torch.jit.script``
    itself (TorchScript refuses keyword-only arguments with defaults); the layers script to
    ``_batch_norm_ops``.
    """
    return _batch_norm(
        input, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked, "identity",
    )  # fmt: skip
