"""``recalibrate``: recompute BN population statistics exactly ("precise BN", fvcore).

During training the running statistics are an exponential average over batches seen by
*different* weights, so at the end they lag behind the model (Wu & Johnson 2021, "Rethinking
'Batch' in BatchNorm", arXiv 2105.07576). ``recalibrate`` runs the model over some data with the
weights fixed and sets every BN layer's running statistics to the true mean and variance of its
inputs over all that data: the statistics of the concatenated data, whatever the batch sizes
(batches are merged exactly with Chan et al.'s parallel formula, in float64), not an average of
per-batch statistics.

As in fvcore's precise BN, the BN layers normalize with batch statistics while the data passes
(the distribution each layer's input has in training); the other layers keep their mode, so
call ``model.eval()`` first if dropout should be off. Statistics are read by forward pre-hooks
with the shared kernel's ``batch_stats``; each layer's running statistics are written once, at
the end. Ghost BN layers need batch sizes that are multiples of their virtual batch size, as in
training. Momentum, mode and ``num_batches_tracked`` are restored and the hooks removed in a
``finally``: when the data raises or runs out, the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from bnlab import kernels
from bnlab.functional.masked_batch_norm import check_mask, select_positions
from bnlab.kernels.moments import combine_moments
from bnlab.layers.masked import MaskedBatchNorm1d
from bnlab.transforms.layer_classes import is_trainable_bn, role_of, warn_unknown


class _Moments:
    """Per-channel (count, mean, M2) of every batch seen, in float64, merged at the end with
    Chan's formula (``kernels.moments.combine_moments``): exact whatever the batch sizes."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.means: list[torch.Tensor] = []
        self.m2s: list[torch.Tensor] = []

    def add(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """Record a batch given by its mean, biased variance and number of values."""
        if count > 0:
            self.counts.append(count)
            self.means.append(mean.double())
            self.m2s.append(var.double() * count)

    def total(self) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        """(count, mean, M2) of everything recorded, or None if nothing was."""
        if not self.counts:
            return None
        counts = torch.tensor(self.counts, dtype=torch.float64, device=self.means[0].device)
        n, mean, m2 = combine_moments(counts, torch.stack(self.means), torch.stack(self.m2s))
        return int(n), mean, m2


def _batch_moments(
    module: nn.Module, args: tuple[Any, ...]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    x = args[0].detach()
    if isinstance(module, MaskedBatchNorm1d) and len(args) > 1 and args[1] is not None:
        x = select_positions(x, check_mask(args[1], x))  # (M, C): the positions BN counts
    c = x.shape[1]
    mean, var = kernels.select(x).batch_stats(x)
    return mean, var, x.numel() // c if c else 0


def _default_forward(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return model(batch[0])
    raise TypeError(
        "recalibrate: each batch must be a tensor or a (inputs, ...) tuple/list, got "
        f"{type(batch).__name__}; pass forward=lambda model, batch: ... for other layouts"
    )


def recalibrate(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> nn.Module:
    """Set every BN layer's running statistics to the exact mean and variance of its inputs.

    Args:
        model: modified in place and returned. Every BN layer with running statistics is
            recalibrated (torch's and bnlab's, any variant); FrozenBatchNorm is left alone.
        batches: an iterable of batches (a DataLoader): tensors, or tuples whose first item
            is the input.
        num_batches: use this many batches (ValueError, and nothing changed, if there are
            fewer); None uses them all.
        forward: ``forward(model, batch)`` for batches of another layout.

    Conventions: ``running_mean`` is the mean over all values, ``running_var`` the unbiased
    variance (n / (n - 1)), as a single BN step with momentum 1 over the concatenated data
    would give. A layer that saw no data keeps its statistics.
    """
    if num_batches is not None and (
        not isinstance(num_batches, int) or isinstance(num_batches, bool) or num_batches < 1
    ):
        raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}")
    run = forward or _default_forward
    warn_unknown(
        "recalibrate", ((name, m) for name, m in model.named_modules() if role_of(m) == "unknown")
    )
    layers: list[Any] = [
        m
        for m in model.modules()
        if is_trainable_bn(m) and m.running_mean is not None and m.running_var is not None
    ]
    moments = {id(m): _Moments() for m in layers}
    saved = [
        (
            m,
            m.training,
            m.momentum,
            None if m.num_batches_tracked is None else m.num_batches_tracked.clone(),
        )
        for m in layers
    ]

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        moments[id(module)].add(*_batch_moments(module, args))

    handles = []
    seen = 0
    try:
        for m in layers:
            handles.append(m.register_forward_pre_hook(hook))
            m.momentum = 0.0  # batch statistics normalize; the running ones must not move
            m.train()
        with torch.no_grad():
            for batch in batches:
                if num_batches is not None and seen >= num_batches:
                    break
                run(model, batch)
                seen += 1
        if seen == 0 or (num_batches is not None and seen < num_batches):
            raise ValueError(
                f"recalibrate: the data gave {seen} batches, expected "
                f"{num_batches if num_batches is not None else 'at least 1'}; nothing was changed"
            )
    finally:
        for h in handles:
            h.remove()
        for m, training, momentum, tracked in saved:
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
    with torch.no_grad():
        for m in layers:
            total = moments[id(m)].total()
            if total is None:
                continue
            count, mean, m2 = total
            var = m2 / (count - 1) if count > 1 else m2
            m.running_mean.copy_(mean.to(m.running_mean.dtype))
            m.running_var.copy_(var.to(m.running_var.dtype))
    return model
