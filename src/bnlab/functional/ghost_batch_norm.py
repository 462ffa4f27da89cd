"""``ghost_batch_norm``: batch norm over virtual ("ghost") batches (Hoffer et al. 2017).

In training, the batch of N samples is cut into N / k consecutive virtual batches of
``virtual_batch_size = k`` samples; each is normalized with its own statistics (over its k
samples and the spatial positions). The output equals batch norm applied chunk by chunk
(``torch.cat([bn(c) for c in x.split(k)])``), with the gradients that implies.

Implementation: the G = N / k virtual batches are moved into the channel axis, (N, C, *) ->
(k, G * C, *), so one call of the shared statistics kernel computes all G * C statistics at once.

Running statistics (one update per call, not one per virtual batch, as in tf-keras): the batch
mean is the average of the virtual batches' means (= the full batch's mean); the variance folded
in is the average of the virtual batches' *unbiased* variances. Both estimate the population
mean and variance, so eval (which normalizes with them, like batch norm) sees what training saw
on average.

A batch size that is not a multiple of k is refused with a ValueError (use ``drop_last=True``
in the DataLoader, or a k that divides the batch): a smaller last virtual batch would be
normalized with noisier statistics than the rest, silently.
"""

from __future__ import annotations

import torch

from bnlab.functional._checks import (
    check_batch_size,
    check_bn_args,
    check_input,
)
from bnlab.functional._train_norm import train_norm
from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.running_stats import update_running_stats
from bnlab.kernels.common import like


def check_virtual_batch_size(virtual_batch_size: int, batch_size: int | None = None) -> int:
    """k must be a positive int, and divide the batch size when one is given."""
    k = virtual_batch_size
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"virtual_batch_size must be a positive int, got {k!r}")
    if batch_size is not None and batch_size % k != 0:
        raise ValueError(
            f"ghost batch norm: the batch size ({batch_size}) must be a multiple of "
            f"virtual_batch_size ({k}); got a remainder of {batch_size % k} samples "
            "(use drop_last=True in the DataLoader or a virtual_batch_size dividing the batch)"
        )
    return k


def ghost_batch_norm(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
    momentum: float | None = 0.1, eps: float = 1e-5, virtual_batch_size: int = 32, *,
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Ghost batch norm; the arguments are ``bnlab.functional.batch_norm``'s plus
    ``virtual_batch_size`` (k, the number of samples per virtual batch; must divide N).

    Eval mode (``training=False``) is plain batch norm with the running statistics.
    """
    check_input(input)
    k = check_virtual_batch_size(virtual_batch_size)
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    n, c = input.shape[0], input.shape[1]
    check_virtual_batch_size(k, n)
    eps, momentum = check_bn_args(input, running_mean, running_var, weight, bias, eps, momentum)
    groups = n // k
    spatial = input.shape[2:]
    # (N, C, *) -> (G, k, C, *) -> (k, G, C, *) -> (k, G*C, *): virtual batch g, channel c is
    # channel g*C + c of the regrouped tensor.
    regrouped = (
        input.reshape(groups, k, c, *spatial).transpose(0, 1).reshape(k, groups * c, *spatial)
    )
    check_batch_size(regrouped)
    w = None if weight is None else weight.repeat(groups)
    b = None if bias is None else bias.repeat(groups)
    y, mean, var = train_norm(regrouped, w, b, eps)
    y = y.reshape(k, groups, c, *spatial).transpose(0, 1).reshape(input.shape)
    count = regrouped.numel() // (groups * c) if groups * c else 0
    if groups:
        mean = mean.view(groups, c).mean(0)
        var = var.view(groups, c).mean(0)
    update_running_stats(running_mean, running_var, mean, var, count, momentum, num_batches_tracked)
    return like(y, input)
