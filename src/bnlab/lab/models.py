"""The tutorials' networks, each with and without batch norm.

Every builder takes the input shape and number of outputs of the data set, builds the network
after ``torch.manual_seed(seed)`` (as tutorial 001 does, so the networks with and without BN
start from the same weights: BN layers draw no random numbers), and puts BN where its tutorial
does. Every BN layer comes from one :class:`BNLayers`: bnlab's classes (``"bnlab"``) or torch's
(``"torch"``), with one momentum and eps, by default the network's own (:func:`network_bn`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import bnlab

BN_IMPLS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "bnlab": (bnlab.BatchNorm1d, bnlab.BatchNorm2d),
    "torch": (nn.BatchNorm1d, nn.BatchNorm2d),
}


#: the run parameter ``bn_momentum``'s name for PyTorch's ``momentum=None`` (cumulative average)
CUMULATIVE = "cumulative"


@dataclass(frozen=True)
class BNLayers:
    """Makes every BN layer of a network: ``impl``'s classes, with one momentum and eps.

    ``momentum`` follows PyTorch (the new batch's weight; None: the cumulative average).
    """

    impl: str = "bnlab"  # a key of BN_IMPLS
    momentum: float | None = 0.1
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.impl not in BN_IMPLS:
            raise ValueError(f"bn_impl must be one of {', '.join(BN_IMPLS)}, got {self.impl!r}")

    def bn1d(self, num_features: int) -> nn.Module:
        return BN_IMPLS[self.impl][0](num_features, eps=self.eps, momentum=self.momentum)

    def bn2d(self, num_features: int) -> nn.Module:
        return BN_IMPLS[self.impl][1](num_features, eps=self.eps, momentum=self.momentum)


def lizard_cnn(
    bn: bool, bn_layers: BNLayers, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Sequential:
    """Tutorial 001's network1 (``bn=False``) / network2 (``bn=True``), layer for layer.

    network2 adds BatchNorm2d(6) after the first max-pool and BatchNorm1d(120) after the first
    fully connected layer's ReLU (the tutorial's placement: after the activation).
    """
    if len(input_shape) != 3:
        raise ValueError(f"lizard-cnn needs (C, H, W) images, got input shape {input_shape}")
    channels, height, width = input_shape
    side_h, side_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
    if side_h < 1 or side_w < 1:
        raise ValueError(f"lizard-cnn needs images of at least 16x16, got {height}x{width}")
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels=channels, out_channels=6, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
    ]
    if bn:
        layers.append(bn_layers.bn2d(6))
    layers += [
        nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(start_dim=1),
        nn.Linear(in_features=12 * side_h * side_w, out_features=120),
        nn.ReLU(),
    ]
    if bn:
        layers.append(bn_layers.bn1d(120))
    layers += [
        nn.Linear(in_features=120, out_features=60),
        nn.ReLU(),
        nn.Linear(in_features=60, out_features=num_outputs),
    ]
    return nn.Sequential(*layers)


def _mlp(
    widths: list[int],
    bn: bool,
    bn_layers: BNLayers,
    input_shape: tuple[int, ...],
    num_outputs: int,
) -> nn.Sequential:
    """Flatten, then Linear -> [BN] -> ReLU per hidden width, then a Linear output layer."""
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)] if len(input_shape) > 1 else []
    features = math.prod(input_shape)
    for width in widths:
        layers.append(nn.Linear(features, width))
        if bn:
            layers.append(bn_layers.bn1d(width))
        layers.append(nn.ReLU())
        features = width
    layers.append(nn.Linear(features, num_outputs))
    return nn.Sequential(*layers)


def keras_mlp(
    bn: bool, bn_layers: BNLayers, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Module:
    """Tutorial 000: 784 -> 64 -> BN -> ReLU -> 10; its BN defaults are Keras's (``NETWORKS``).

    The network ends in logits: the tutorial's PyTorch twin applies Softmax before
    CrossEntropyLoss (which applies log-softmax again); that mistake is not copied.
    """
    return _mlp([64], bn, bn_layers, input_shape, num_outputs)


def tutorial_mlp(
    bn: bool, bn_layers: BNLayers, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Module:
    """Tutorial 002: 784 -> 512 -> 256 -> 10, BN after fc1 and fc2, before the ReLU."""
    return _mlp([512, 256], bn, bn_layers, input_shape, num_outputs)


def mpg_mlp(
    bn: bool, bn_layers: BNLayers, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Module:
    """Tutorial 003: in -> 50 -> 25 -> out, BN after the first two layers, before the ReLU."""
    return _mlp([50, 25], bn, bn_layers, input_shape, num_outputs)


Builder = Callable[[bool, BNLayers, tuple[int, ...], int], nn.Module]


@dataclass(frozen=True)
class Network:
    name: str
    builder: Builder
    description: str
    bn_momentum: float = 0.1  # its BN layers' momentum unless a run gives one (PyTorch's terms)
    bn_eps: float = 1e-5  # its BN layers' eps unless a run gives one


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("lizard-cnn", lizard_cnn, "tutorial 001: 2 conv + 3 FC; BN after pool1 and fc1"),
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


def build_model(
    network: str,
    bn: bool,
    bn_impl: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    seed: int,
    bn_momentum: float | str | None = None,
    bn_eps: float | None = None,
) -> nn.Module:
    """A fresh ``network`` built right after ``torch.manual_seed(seed)``.

    ``bn_momentum`` and ``bn_eps`` are the run parameters (PyTorch's convention, or
    ``"cumulative"``; None: the network's own, see :func:`network_bn`).
    """
    momentum, eps = network_bn(network, bn_momentum, bn_eps)
    bn_layers = BNLayers(bn_impl, None if momentum == CUMULATIVE else float(momentum), eps)
    torch.manual_seed(seed)
    return _network(network).builder(bn, bn_layers, tuple(input_shape), num_outputs)
