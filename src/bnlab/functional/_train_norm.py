"""``train_norm``: the batch-statistics forward shared by the BN family, returning the statistics.

``bnlab.functional.batch_norm`` folds the batch statistics into the running ones itself and
returns only ``y``. The variants need the statistics back (ghost BN averages them over virtual
batches, the Keras conventions keep the biased variance, batch renorm needs them *before*
normalizing, to build its r and d corrections), so they share this one autograd node.

It calls the same kernel family (``bnlab.kernels.select``) as ``batch_norm``: ``forward_train``
(one fused call) when there is no correction, ``batch_stats`` + ``normalize`` otherwise, and the
family's closed-form ``backward`` in both cases, so the variants get the fast kernels wherever
the shapes allow and never re-derive the statistics.

With a correction ``(r, d)`` (batch renormalization, Ioffe 2017) the output is
``((x - mean) * invstd * r + d) * weight + bias = xhat * (weight * r) + (weight * d + bias)``
with r and d treated as constants in the backward pass, as the paper prescribes: the backward is
the BN backward with the effective weight ``weight * r``, plus ``dweight = r * sum(dy * xhat)
+ d * sum(dy)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bnlab import kernels

Correction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Maps the batch (mean, biased var), in the accumulation dtype, to the (r, d) corrections."""


def refuse_double_backward(op: str) -> None:
    """Raise NotImplementedError under ``create_graph=True``: the BN family's backward passes
    are closed-form kernels, not differentiable themselves (only ``batch_norm`` recomputes a
    differentiable forward for that)."""
    if torch.is_grad_enabled():
        raise NotImplementedError(f"{op} has no double backward (create_graph=True)")


class TrainNormFunction(torch.autograd.Function):
    """Autograd node returning ``(y, mean, var)``; mean and var are not differentiable."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
        eps: float, correction: Correction | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        kern = kernels.select(x)
        r = d = None
        if correction is None:
            y, mean, var, invstd, _ = kern.forward_train(x, weight, bias, eps)
            w_eff = weight
        else:
            mean, var = kern.batch_stats(x)
            invstd = torch.rsqrt(var + eps)
            r, d = correction(mean, var)
            r, d = r.to(mean.dtype), d.to(mean.dtype)
            w_eff = r if weight is None else weight.to(mean.dtype) * r
            b_eff = d if weight is None else weight.to(mean.dtype) * d
            if bias is not None:
                b_eff = b_eff + bias.to(mean.dtype)
            y = kern.normalize(x, mean, invstd, w_eff, b_eff)
        ctx.weight_dtype = None if weight is None else weight.dtype
        ctx.save_for_backward(x, w_eff, mean, invstd, r, d)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, _dmean: Any, _dvar: Any) -> tuple[Any, ...]:
        refuse_double_backward("bnlab's train_norm (ghost_batch_norm, batch_renorm, Keras's)")
        x, w_eff, mean, invstd, r, d = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        if x.numel() == 0:
            dx = torch.zeros_like(x) if need_dx else None
            zeros = torch.zeros_like(mean)
            dw = zeros.to(ctx.weight_dtype) if need_dw else None
            db = zeros.to(ctx.weight_dtype) if need_db else None
            return dx, dw, db, None, None
        dx, sum_dy_xhat, sum_dy = kernels.select(x).backward(
            dy, x, mean, invstd, w_eff, True, need_dx
        )
        dw = db = None
        if need_dw:
            dw = sum_dy_xhat if r is None else r * sum_dy_xhat + d * sum_dy
            dw = dw.to(ctx.weight_dtype)
        if need_db:
            db = sum_dy.to(ctx.weight_dtype)
        return dx, dw, db, None, None


def train_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    correction: Correction | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalize ``x`` (N, C, *) with its own batch statistics; return ``(y, mean, biased var)``.

    Arguments are assumed checked by the caller (``bnlab.functional._checks``). Statistics come
    back in the accumulation dtype (float32, or float64 for float64 input), detached.
    """
    y, mean, var = TrainNormFunction.apply(x, weight, bias, eps, correction)
    return y, mean, var
