"""BatchNormAct1d/2d: batch norm followed by ``drop`` and ``act`` child modules, fused when it can.

``BatchNormAct2d(C, activation="relu")`` computes ``act(drop(BatchNorm2d(C)(x)))`` with the
parameters, buffers and state_dict keys of ``BatchNorm2d`` (so weights move between the two).
The layout is timm's ``BatchNormAct2d`` (a BN layer with ``drop`` and ``act`` children), so a timm
layer converts to this one and back with the same keys and behaviour.

Fusion: when ``drop`` is ``nn.Identity`` and ``act`` is exactly ``nn.ReLU``, ``nn.SiLU``,
``nn.Hardswish`` or ``nn.Identity`` (``inplace`` or not), the forward is one
``bnlab.functional.batch_norm_act`` call: the activation is applied in the pass that writes y,
and the backward recomputes its slope from x in its own passes, so the activation costs no pass
of its own. Any other ``act`` or ``drop`` (DropBlock, GELU) runs as a module after bnlab's batch
norm, so every activation works and none is approximated. The choice is made at each call, so
replacing ``layer.act`` later is honoured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.batch_norm_act import ACTIVATIONS, batch_norm_act
from bnlab.layers._base import BatchNormBase

__all__ = [
    "BatchNormAct1d",
    "BatchNormAct2d",
    "NormActChildren",
    "activation_module",
    "fused_activation",
    "norm_then_act",
]

#: the activation modules the layers fuse, by their kernel names
_FUSED: dict[type[nn.Module], str] = {
    nn.Identity: "identity",
    nn.ReLU: "relu",
    nn.SiLU: "silu",
    nn.Hardswish: "hardswish",
}
_MODULES: dict[str, type[nn.Module]] = {name: module for module, name in _FUSED.items()}


def activation_module(activation: str | nn.Module) -> nn.Module:
    """The module for ``activation``: a name in ``ACTIVATIONS`` or an ``nn.Module`` (kept as is)."""
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return _MODULES[activation]()
    raise ValueError(
        f"activation must be one of {', '.join(ACTIVATIONS)} or an nn.Module; got {activation!r}"
    )


def fused_activation(drop: nn.Module, act: nn.Module) -> str | None:
    """The fused kernel's activation name for ``drop`` then ``act``, or None if not fusable."""
    if type(drop) is not nn.Identity:
        return None
    return _FUSED.get(type(act))


def norm_then_act(
    input: torch.Tensor, op_kwargs: dict[str, Any], drop: nn.Module, act: nn.Module
) -> torch.Tensor:
    """``act(drop(batch_norm(input, **op_kwargs)))``, as one fused op where ``fused_activation``
    allows it; shared by every layer with ``drop`` and ``act`` children."""
    fused = fused_activation(drop, act)
    if fused is not None:
        return batch_norm_act(input, **op_kwargs, activation=fused)
    return act(drop(batch_norm(input, **op_kwargs)))


class NormActChildren:
    """Mixin for a BN layer (bnlab's trainable or frozen base) with ``drop`` and ``act``
    children: their construction and the forward that fuses them where it can."""

    if TYPE_CHECKING:  # for mypy only: TorchScript infers submodules from their values
        drop: nn.Module
        act: nn.Module

    def _set_children(self, activation: str | nn.Module, drop: nn.Module | None) -> None:
        self.drop = nn.Identity() if drop is None else drop
        self.act = activation_module(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            # TorchScript cannot pick the fused kernel by the children's types: batch norm, then
            # the children themselves (the same function, one more pass over the output)
            return self.act(self.drop(self._graph_forward(input)))  # type: ignore[attr-defined]
        return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)  # type: ignore[attr-defined]
        return norm_then_act(input, self._op_kwargs(), self.drop, self.act)  # type: ignore[attr-defined]


class _BatchNormAct(NormActChildren, BatchNormBase):
    """BatchNormBase, then the ``drop`` and ``act`` children; see the module docstring."""

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
        affine: bool = True, track_running_stats: bool = True, activation: str | nn.Module = "relu",
        device: Any = None, dtype: Any = None, *, drop: nn.Module | None = None, bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self._set_children(activation, drop)


class BatchNormAct1d(_BatchNormAct):
    """``act(drop(BatchNorm1d(x)))``; input (N, C) or (N, C, L). See ``BatchNorm1d``.

    Examples::

        >>> layer = bnlab.BatchNormAct1d(100, activation="relu")
        >>> y = layer(torch.randn(20, 100))
    """

    expected_dims = (2, 3)


class BatchNormAct2d(_BatchNormAct):
    """``act(drop(BatchNorm2d(x)))``; input (N, C, H, W), contiguous or channels_last.

    Examples::

        >>> layer = bnlab.BatchNormAct2d(16, activation="silu")
        >>> y = layer(torch.randn(8, 16, 32, 32))
        >>> layer = bnlab.BatchNormAct2d(16, activation=torch.nn.GELU())  # not fused
    """

    expected_dims = (4,)
