"""The normalization layers a lab network can put where its tutorial puts batch norm.

The run parameter ``norm`` names the kind (:data:`NORMS`); :class:`NormLayers` makes the layer
for a place with ``C`` features (``(N, C)`` input) or channels (``(N, C, H, W)`` input):

- ``none``: no layer at all (the network without BN);
- ``bn``: batch norm, bnlab's ``BatchNorm1d/2d`` or torch's (``bn_impl``);
- ``renorm``: bnlab's ``BatchRenorm1d/2d`` (Ioffe 2017) with its defaults, rmax 3 and dmax 5
  from the first step (no warm-up: the lab's runs are short);
- ``ghost``: bnlab's ``GhostBatchNorm1d/2d`` over virtual batches of :data:`GHOST_BATCH`
  samples (Hoffer et al. 2017). The lab's last batch of an epoch may be smaller: its samples
  that do not fill a virtual batch are normalized with their own statistics and leave the
  running statistics alone (:class:`RaggedGhostBatchNorm1d`); a batch smaller than one
  virtual batch is plain batch norm;
- ``groupnorm``: torch's ``GroupNorm`` with :func:`group_count` groups (Wu & He 2018);
- ``layernorm``: torch's ``LayerNorm(C)`` on features; on channels, ``GroupNorm(1, C)``, which
  normalizes over (C, H, W) like layer norm with a per-channel scale and shift (Wu & He 2018,
  Fig. 2), so the layer needs no spatial size;
- ``noisy_bn``: batch norm followed by :class:`BatchNoise` (Santurkar et al. 2018's "noisy BN").

``momentum`` and ``eps`` (the run's ``bn_momentum`` and ``bn_eps``) apply to the BN family
(bn, renorm, ghost, noisy_bn); GroupNorm and LayerNorm take ``eps`` only (no running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import bnlab
from bnlab.lab.errors import UsageError

NORMS = ("none", "bn", "renorm", "ghost", "groupnorm", "layernorm", "noisy_bn")
#: the kinds whose classes come from ``bn_impl``; the others have one implementation each
IMPL_CHOICE = ("bn", "noisy_bn")

BN_IMPLS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "bnlab": (bnlab.BatchNorm1d, bnlab.BatchNorm2d),
    "torch": (nn.BatchNorm1d, nn.BatchNorm2d),
}

#: samples per virtual batch of ``norm="ghost"``: the batch size the GroupNorm paper calls
#: regular (32 per GPU); a training batch of at most 32 samples is plain batch norm
GHOST_BATCH = 32
#: ``norm="groupnorm"``: at most 32 groups (Wu & He's default) and at least 8 features or
#: channels per group (a group of one feature would normalize a single value to zero)
MAX_GROUPS = 32
MIN_GROUP_SIZE = 8


def group_count(channels: int) -> int:
    """GroupNorm's group count for ``channels``: the largest divisor of ``channels`` that is at
    most :data:`MAX_GROUPS` and leaves at least :data:`MIN_GROUP_SIZE` per group, else 1."""
    limit = min(MAX_GROUPS, channels // MIN_GROUP_SIZE)
    return max([g for g in range(1, limit + 1) if channels % g == 0], default=1)


class BatchNoise(nn.Module):
    """Santurkar et al. 2018's noisy BN: time-varying, non-zero-mean, non-unit-variance noise.

    In training, every forward draws for each channel ``c`` a shift ``mu_c ~ U(-shift, shift)``
    and a scale ``sigma_c ~ U(1, max_scale)`` and returns ``sigma_c * x + mu_c``: the
    distribution each later layer receives moves at every step, by design. (The paper draws
    per activation; a draw per channel and step moves each unit's batch mean and variance,
    which is what its argument is about, without averaging out over the batch.) In eval mode it
    is the noise's expectation, ``(1 + max_scale) / 2 * x``, as dropout's eval is. The draws use
    torch's global generator, seeded with the run.
    """

    def __init__(self, shift: float = 1.0, max_scale: float = 2.0) -> None:
        super().__init__()
        if shift < 0 or max_scale < 1:
            raise ValueError(f"need shift >= 0 and max_scale >= 1, got {shift}, {max_scale}")
        self.shift = shift
        self.max_scale = max_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * ((1.0 + self.max_scale) / 2.0)
        shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
        mu = (torch.rand(shape, dtype=x.dtype) * 2.0 - 1.0) * self.shift
        sigma = 1.0 + torch.rand(shape, dtype=x.dtype) * (self.max_scale - 1.0)
        return x * sigma.to(x.device) + mu.to(x.device)

    def extra_repr(self) -> str:
        return f"shift={self.shift}, max_scale={self.max_scale}"


class _Ragged:
    """Ghost batch norm that takes any training batch size (see the module docstring)."""

    virtual_batch_size: int
    training: bool

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        k, n = self.virtual_batch_size, input.shape[0]
        if not self.training or n % k == 0:
            return super().forward(input)  # type: ignore[misc]
        kwargs = self._op_kwargs()  # type: ignore[attr-defined]
        if n < k:
            return bnlab.functional.batch_norm(input, **kwargs)
        full = n - n % k
        tail = {**kwargs, "running_mean": None, "running_var": None, "num_batches_tracked": None}
        head = super().forward(input[:full])  # type: ignore[misc]
        return torch.cat([head, bnlab.functional.batch_norm(input[full:], **tail)])


class RaggedGhostBatchNorm1d(_Ragged, bnlab.GhostBatchNorm1d):
    """``GhostBatchNorm1d`` for the lab's batches, the last of an epoch ragged."""


class RaggedGhostBatchNorm2d(_Ragged, bnlab.GhostBatchNorm2d):
    """``GhostBatchNorm2d`` for the lab's batches, the last of an epoch ragged."""


def check_norm(norm: str, bn_impl: str) -> None:
    """A known ``norm`` and a ``bn_impl`` that applies to it (``UsageError`` otherwise)."""
    if norm not in NORMS:
        raise UsageError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if bn_impl not in BN_IMPLS:
        raise UsageError(f"bn_impl must be one of {', '.join(BN_IMPLS)}, got {bn_impl!r}")
    if bn_impl != "bnlab" and norm not in IMPL_CHOICE and norm != "none":
        raise UsageError(
            f"bn_impl {bn_impl!r} applies to norm 'bn' and 'noisy_bn' only; norm {norm!r} has "
            "one implementation (give bn_impl 'bnlab')"
        )


@dataclass(frozen=True)
class NormLayers:
    """Makes every normalization layer of a network: one kind, one momentum and eps.

    ``momentum`` follows PyTorch (the new batch's weight; None: the cumulative average).
    """

    norm: str = "bn"  # a value of NORMS
    impl: str = "bnlab"  # a key of BN_IMPLS (norm bn and noisy_bn)
    momentum: float | None = 0.1
    eps: float = 1e-5

    def __post_init__(self) -> None:
        check_norm(self.norm, self.impl)

    @property
    def present(self) -> bool:
        """False for ``norm="none"``: the network has no normalization layer."""
        return self.norm != "none"

    def layer(self, channels: int, spatial: bool) -> nn.Module:
        """The layer for ``channels`` features (``spatial=False``: (N, C) input) or channels
        (``spatial=True``: (N, C, H, W) input)."""
        rank = 1 if spatial else 0
        eps, momentum = self.eps, self.momentum
        if self.norm in ("bn", "noisy_bn"):
            bn = BN_IMPLS[self.impl][rank](channels, eps=eps, momentum=momentum)
            return nn.Sequential(bn, BatchNoise()) if self.norm == "noisy_bn" else bn
        if self.norm == "renorm":
            renorm = (bnlab.BatchRenorm1d, bnlab.BatchRenorm2d)[rank]
            return renorm(channels, eps=eps, momentum=momentum)
        if self.norm == "ghost":
            ghost = (RaggedGhostBatchNorm1d, RaggedGhostBatchNorm2d)[rank]
            return ghost(channels, GHOST_BATCH, eps=eps, momentum=momentum)
        if self.norm == "groupnorm":
            return nn.GroupNorm(group_count(channels), channels, eps=self.eps)
        if self.norm == "layernorm":
            return (
                nn.GroupNorm(1, channels, eps=self.eps)
                if spatial
                else nn.LayerNorm(channels, eps=self.eps)
            )
        raise ValueError(f"norm {self.norm!r} makes no layer")  # "none": callers ask `present`


__all__ = [
    "BN_IMPLS",
    "GHOST_BATCH",
    "NORMS",
    "BatchNoise",
    "NormLayers",
    "check_norm",
    "group_count",
]
