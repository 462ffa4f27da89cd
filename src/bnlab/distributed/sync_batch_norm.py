"""``sync_batch_norm``: batch normalization whose statistics span every rank of a process group.

Forward (one collective): each rank computes its per-channel count, mean and M2 (the sum of
squared deviations from its own mean) with its kernel family's ``batch_stats``; one
all-gather (``all_gather_single``) of the packed ``[count, mean, M2]`` gives every rank the same table,
and Chan's parallel-variance formula combines it::

    n = sum n_i,   mean = sum n_i mean_i / n,   M2 = sum M2_i + sum n_i (mean_i - mean)^2

(Chan, Golub & LeVeque 1979, the k-way form of the pairwise update). Only deviations are
squared, never E[x^2] - E[x]^2, so a channel like 1e4 + N(0, 1) keeps its variance. The
packed table travels in float64: counts stay exact integers and the combine loses nothing.

Backward (one collective): the per-channel ``sum(dy)`` and ``sum(dy * xhat)`` are all-reduced
in one packed tensor; with them and the global count M every rank computes its slice of::

    dx = gamma * invstd * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M)

The weight and bias gradients are the rank's *local* sums, as in torch.nn.SyncBatchNorm:
DistributedDataParallel then reduces them with the other parameters' gradients.

Ranks may hold different batch sizes, and a rank may hold none (count 0): it still takes part
in both collectives. All tensors live on ``x.device``, so the same calls run on gloo (CPU) and
NCCL (CUDA).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from bnlab import kernels
from bnlab.functional._checks import check_bn_args
from bnlab.functional._train_norm import refuse_double_backward
from bnlab.functional.running_stats import update_running_stats
from bnlab.kernels.common import channel_view, like
from bnlab.kernels.moments import combine_moments

__all__ = ["SyncBatchNormFunction", "sync_batch_norm"]

# The gathered statistics table travels in float64: exact counts, no loss in the combine.
_TABLE_DTYPE = torch.float64

# One tensor in, the ranks' tensors concatenated out: named all_gather_single since torch 2.10,
# all_gather_into_tensor before.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _local_stats(x: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """This rank's count per channel, mean and biased variance (zeros for an empty batch)."""
    count = x.numel() // x.shape[1]
    if count == 0:
        zeros = torch.zeros(x.shape[1], dtype=kernels.acc_dtype(x.dtype), device=x.device)
        return 0, zeros, zeros.clone()
    mean, var = kernels.select(x).batch_stats(x)
    return count, mean, var


def _gather_stats(
    x: torch.Tensor, group: dist.ProcessGroup | None
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Global (count, mean, biased var) over the group: one all_gather of [count, mean, M2]."""
    count, mean, var = _local_stats(x)
    c = x.shape[1]
    packed = torch.empty(2 * c + 1, dtype=_TABLE_DTYPE, device=x.device)
    packed[0] = count
    packed[1 : c + 1] = mean
    packed[c + 1 :] = var.to(_TABLE_DTYPE) * count
    world = dist.get_world_size(group)
    flat = torch.empty(world * (2 * c + 1), dtype=_TABLE_DTYPE, device=x.device)
    _all_gather_single(flat, packed, group=group)
    table = flat.view(world, 2 * c + 1)
    n, g_mean, g_m2 = combine_moments(table[:, 0], table[:, 1 : c + 1], table[:, c + 1 :])
    total = int(n.item())
    g_var = g_m2 / max(total, 1)
    acc = mean.dtype
    return total, g_mean.to(acc), g_var.to(acc)


class SyncBatchNormFunction(torch.autograd.Function):
    """Autograd node of ``sync_batch_norm``: returns ``(y, mean, var, count)``.

    ``mean``, ``var`` (biased) and ``count`` are the group's statistics; they are not
    differentiable. Saves x, weight, the global mean and invstd, and the global count.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
        eps: float, group: dist.ProcessGroup | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        total, mean, var = _gather_stats(x, group)
        if total == 1:
            # Every rank sees the same total, so every rank raises: no rank is left waiting.
            raise ValueError(
                "Expected more than 1 value per channel across the process group when "
                f"training, got 1 in total (this rank's input size {tuple(x.shape)})"
            )
        invstd = torch.rsqrt(var + eps)
        if x.numel() == 0:
            y = torch.empty_like(x)
        else:
            y = kernels.select(x).normalize(x, mean, invstd, weight, bias)
        ctx.group = group
        ctx.total = total
        ctx.save_for_backward(x, weight, mean, invstd)
        count = torch.tensor(total, dtype=torch.long)
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, *_unused: Any) -> tuple[Any, ...]:
        refuse_double_backward("bnlab's sync_batch_norm")
        x, weight, mean, invstd = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        c = x.shape[1]
        if x.numel() == 0:
            sum_dy = torch.zeros(c, dtype=mean.dtype, device=x.device)
            sum_dy_xhat = torch.zeros_like(sum_dy)
        else:
            _, sum_dy_xhat, sum_dy = kernels.select(x).backward(
                dy, x, mean, invstd, weight, True, False
            )
        dw = sum_dy_xhat.to(weight.dtype) if need_dw else None
        db = sum_dy.to(weight.dtype) if need_db else None
        dx = None
        # needs_input_grad is the same on every rank (same model), so either all ranks reduce
        # or none does.
        if need_dx:
            packed = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(packed, group=ctx.group)
            dx = _input_grad(dy, x, mean, invstd, weight, packed[:c], packed[c:], ctx.total)
        return dx, dw, db, None, None


def _input_grad(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    sum_dy: torch.Tensor,
    sum_dy_xhat: torch.Tensor,
    total: int,
) -> torch.Tensor:
    """``gamma * invstd * (dy - sum_dy / M - xhat * sum_dy_xhat / M)`` with the group's sums.

    The last two terms are, per channel, an affine map of x: the kernels' ``normalize`` computes
    them in one pass (weight ``-gain * sum_dy_xhat / M``, bias ``-gain * sum_dy / M``), then
    one multiply-add adds ``gain * dy``.
    """
    if x.numel() == 0:
        return torch.zeros_like(x)
    acc = mean.dtype
    gain = invstd if weight is None else invstd * weight.to(acc)
    affine = kernels.select(x).normalize(
        x, mean, invstd, -gain * sum_dy_xhat / total, -gain * sum_dy / total
    )
    dx = torch.addcmul(affine.to(acc), dy.to(acc), channel_view(gain, x))
    return like(dx.to(x.dtype), x)


def sync_batch_norm(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
    momentum: float | None = 0.1, eps: float = 1e-5, *,
    num_batches_tracked: torch.Tensor | None = None, process_group: dist.ProcessGroup | None = None,
) -> torch.Tensor:  # fmt: skip
    """Training-mode batch norm with the statistics of the whole ``process_group``.

    Every rank of the group must call it (collectives). Normalizes with the group's mean and
    biased variance and folds them into the running buffers with
    ``bnlab.functional.update_running_stats``, the unbiased variance using the *group's*
    count. Arguments as in ``bnlab.functional.batch_norm``; ``process_group`` None is the
    default (world) group. Evaluation mode needs no synchronization: use ``batch_norm``.
    """
    eps, momentum = check_bn_args(
        input, running_mean, running_var, weight, bias, eps, momentum, training=True
    )
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sync_batch_norm needs an initialized torch.distributed process group "
            "(call torch.distributed.init_process_group first)"
        )
    y, mean, var, count = SyncBatchNormFunction.apply(input, weight, bias, eps, process_group)
    update_running_stats(
        running_mean, running_var, mean, var, int(count), momentum, num_batches_tracked
    )
    return y
