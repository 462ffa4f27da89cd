"""Helpers shared by the kernel families: layout (the channel axis is dimension 1) and dtypes."""

from __future__ import annotations

from typing import NamedTuple

import torch


def reduce_dims(x: torch.Tensor) -> list[int]:
    """All dimensions but the channel one: (0,) for (N, C), (0, 2, 3) for (N, C, H, W), ..."""
    return [0, *range(2, x.dim())]


def channel_view(stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a per-channel vector of length C so that it broadcasts against ``x`` (N, C, *)."""
    return stat.view(1, -1, *([1] * (x.dim() - 2)))


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format that ``x`` is laid out in (channels_last variants or contiguous)."""
    if x.is_contiguous():  # also wins when both hold (C == 1 or H == W == 1)
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for statistics: float64 stays float64, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return ``y`` laid out in the memory format of ``x`` (channels_last stays channels_last)."""
    return y.contiguous(memory_format=memory_format_of(x))


class RunningStats(NamedTuple):
    """Running-statistics buffers to fold a training batch into (see ``functional.running_stats``).

    ``momentum`` None is the cumulative average (needs ``num_batches_tracked``).
    """

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    num_batches_tracked: torch.Tensor | None
    momentum: float | None


class TrainOutput(NamedTuple):
    """What a family's ``forward_train`` returns.

    ``y`` the output, ``mean`` and biased ``var`` the batch statistics, ``invstd`` =
    1 / sqrt(var + eps), all in ``acc_dtype``. ``folded``: None if no running statistics were
    given or the family left the update to the caller, True if it folded the batch into them,
    False if it skipped them because the batch statistics were not finite.
    """

    y: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    invstd: torch.Tensor
    folded: bool | None = None
