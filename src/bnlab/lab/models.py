"""The tutorials' networks, each with batch norm, another normalization, or none.

Every builder takes a :class:`Layout` and the input shape and number of outputs of the data
set, and is called right after ``torch.manual_seed(seed)`` (as tutorial 001 does, so the
networks with and without BN start from the same weights: normalization layers draw no random
numbers). The layout says what the run parameters change:

- ``norm`` (:mod:`bnlab.lab.norms`): which layer sits where the tutorial puts BN, if any;
- ``placement``: that layer ``"before"`` the activation (Linear -> BN -> ReLU, tutorials 002
  and 003) or ``"after"`` it (ReLU -> BN, tutorial 001, whose conv block is Conv -> ReLU ->
  MaxPool -> BN); by default the network's own;
- ``dropout``: ``nn.Dropout(p)`` at the end of every hidden fully connected block (after the
  activation and after the normalization layer that follows it); none when 0.

``init_scale`` multiplies the default initialization of every Linear and Conv2d weight (biases
and normalization parameters keep theirs), drawn from the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bnlab.lab.errors import UsageError
from bnlab.lab.norms import BN_IMPLS, NormLayers

__all__ = [
    "BN_IMPLS",
    "CUMULATIVE",
    "NETWORKS",
    "PLACEMENTS",
    "Layout",
    "Network",
    "build_model",
    "network_bn",
    "network_placement",
    "resolve_norm",
]

#: the run parameter ``bn_momentum``'s name for PyTorch's ``momentum=None`` (cumulative average)
CUMULATIVE = "cumulative"
PLACEMENTS = ("before", "after")


@dataclass(frozen=True)
class Layout:
    """What a run changes in a network besides its sizes (see the module docstring)."""

    norms: NormLayers
    placement: str = "before"  # the normalization layer before or after the activation
    dropout: float = 0.0  # nn.Dropout's p at the end of each hidden FC block; 0: none

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise UsageError(
                f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def block(self, channels: int, activation: list[nn.Module], spatial: bool) -> list[nn.Module]:
        """``activation`` with the normalization layer of ``channels`` before or after it."""
        if not self.norms.present:
            return activation
        norm = self.norms.layer(channels, spatial)
        return [norm, *activation] if self.placement == "before" else [*activation, norm]

    def hidden(self, width: int) -> list[nn.Module]:
        """A hidden fully connected block's end: ReLU and its norm, then dropout if any."""
        tail: list[nn.Module] = [nn.Dropout(self.dropout)] if self.dropout else []
        return [*self.block(width, [nn.ReLU()], spatial=False), *tail]


def lizard_cnn(layout: Layout, input_shape: tuple[int, ...], num_outputs: int) -> nn.Sequential:
    """Tutorial 001's network1 (no norm) / network2 (BN), layer for layer.

    network2 adds BatchNorm2d(6) after the first max-pool and BatchNorm1d(120) after the first
    fully connected layer's ReLU (its placement, ``"after"``); ``"before"`` puts them right
    after the first convolution and the first fully connected layer.
    """
    if len(input_shape) != 3:
        raise ValueError(f"lizard-cnn needs (C, H, W) images, got input shape {input_shape}")
    channels, height, width = input_shape
    side_h, side_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
    if side_h < 1 or side_w < 1:
        raise ValueError(f"lizard-cnn needs images of at least 16x16, got {height}x{width}")
    conv1 = [nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2)]
    fc2_end: list[nn.Module] = [nn.ReLU()] + (
        [nn.Dropout(layout.dropout)] if layout.dropout else []
    )
    return nn.Sequential(
        nn.Conv2d(in_channels=channels, out_channels=6, kernel_size=5),
        *layout.block(6, conv1, spatial=True),
        nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(start_dim=1),
        nn.Linear(in_features=12 * side_h * side_w, out_features=120),
        *layout.hidden(120),
        nn.Linear(in_features=120, out_features=60),
        *fc2_end,
        nn.Linear(in_features=60, out_features=num_outputs),
    )


def _mlp(
    widths: list[int], layout: Layout, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Sequential:
    """Flatten, then a Linear and its hidden block per width, then a Linear output layer."""
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)] if len(input_shape) > 1 else []
    features = math.prod(input_shape)
    for width in widths:
        layers += [nn.Linear(features, width), *layout.hidden(width)]
        features = width
    layers.append(nn.Linear(features, num_outputs))
    return nn.Sequential(*layers)


def keras_mlp(layout: Layout, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Tutorial 000: 784 -> 64 -> BN -> ReLU -> 10; its BN defaults are Keras's (``NETWORKS``).

    The network ends in logits: the tutorial's PyTorch twin applies Softmax before
    CrossEntropyLoss (which applies log-softmax again); that mistake is not copied.
    """
    return _mlp([64], layout, input_shape, num_outputs)


def tutorial_mlp(layout: Layout, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Tutorial 002: 784 -> 512 -> 256 -> 10, BN after fc1 and fc2, before the ReLU."""
    return _mlp([512, 256], layout, input_shape, num_outputs)


def mpg_mlp(layout: Layout, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Tutorial 003: in -> 50 -> 25 -> out, BN after the first two layers, before the ReLU."""
    return _mlp([50, 25], layout, input_shape, num_outputs)


Builder = Callable[[Layout, tuple[int, ...], int], nn.Module]


@dataclass(frozen=True)
class Network:
    name: str
    builder: Builder
    description: str
    bn_momentum: float = 0.1  # its BN layers' momentum unless a run gives one (PyTorch's terms)
    bn_eps: float = 1e-5  # its BN layers' eps unless a run gives one
    placement: str = "before"  # its tutorial's: BN before or after the activation


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network(
            "lizard-cnn",
            lizard_cnn,
            "tutorial 001: 2 conv + 3 FC; BN after pool1 and fc1",
            placement="after",
        ),
        # Keras's momentum=0.99 (the old running value's weight) is PyTorch's 0.01; Keras's
        # epsilon default is 1e-3.
        Network("keras-mlp", keras_mlp, "tutorial 000: 784-64-10; Keras BN defaults", 0.01, 1e-3),
        Network("mlp", tutorial_mlp, "tutorial 002: 784-512-256-10; BN before ReLU"),
        Network("mpg-mlp", mpg_mlp, "tutorial 003: in-50-25-1; BN before ReLU"),
    )
}


def _network(name: str) -> Network:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(NETWORKS)}")
    return NETWORKS[name]


def network_bn(
    network: str, momentum: float | str | None = None, eps: float | None = None
) -> tuple[float | str, float]:
    """The run parameters ``(bn_momentum, bn_eps)`` a run of ``network`` uses: those given, or
    where None the network's own (0.1 and 1e-5, PyTorch's defaults; keras-mlp: Keras's)."""
    own = _network(network)
    return (own.bn_momentum if momentum is None else momentum, own.bn_eps if eps is None else eps)


def network_placement(network: str, placement: str | None = None) -> str:
    """The run parameter ``placement`` a run of ``network`` uses: the one given, or where None
    its tutorial's (``"after"`` for lizard-cnn, ``"before"`` for the others)."""
    return _network(network).placement if placement is None else placement


def resolve_norm(bn: bool, norm: str = "bn") -> str:
    """The normalization a run uses, from ``bn`` (kept for old configs and records) and ``norm``.

    ``bn=True`` (the default) leaves ``norm`` as given; ``bn=False`` is ``norm="none"``, so
    ``norm`` must be left at its default ``"bn"`` or say ``"none"``: anything else is a
    contradiction (``UsageError``).
    """
    if bn:
        return norm
    if norm in ("bn", "none"):
        return "none"
    raise UsageError(
        f"bn=false means norm 'none', but norm is {norm!r}: give norm alone (bn is kept for old "
        "configs: bn=true is norm 'bn', bn=false is norm 'none')"
    )


def build_model(
    network: str,
    bn: bool,
    bn_impl: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    seed: int,
    bn_momentum: float | str | None = None,
    bn_eps: float | None = None,
    *,
    norm: str = "bn",
    placement: str | None = None,
    dropout: float = 0.0,
    init_scale: float = 1.0,
) -> nn.Module:
    """A fresh ``network`` built right after ``torch.manual_seed(seed)``.

    ``bn_momentum`` and ``bn_eps`` are the run parameters (PyTorch's convention, or
    ``"cumulative"``; None: the network's own, see :func:`network_bn`); ``norm`` (with ``bn``,
    :func:`resolve_norm`), ``placement``, ``dropout`` and ``init_scale`` as the module docstring
    says.
    """
    if not init_scale > 0:
        raise UsageError(f"init_scale must be > 0, got {init_scale!r}")
    momentum, eps = network_bn(network, bn_momentum, bn_eps)
    norms = NormLayers(
        resolve_norm(bn, norm), bn_impl, None if momentum == CUMULATIVE else float(momentum), eps
    )
    layout = Layout(norms, network_placement(network, placement), dropout)
    torch.manual_seed(seed)
    model = _network(network).builder(layout, tuple(input_shape), num_outputs)
    if init_scale != 1.0:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    module.weight.mul_(init_scale)
    return model
