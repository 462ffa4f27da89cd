"""The seed tutorials' networks, each with and without batch norm.

Every builder takes the input shape and number of outputs of the data set, builds the network
after ``torch.manual_seed(seed)`` (as seed 001 does, so the networks with and without BN start
from the same weights: BN layers draw no random numbers), and puts BN where its seed does.
``bn_impl`` picks the BN classes: bnlab's (``"bnlab"``) or torch's (``"torch"``).
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


def bn_classes(bn_impl: str) -> tuple[type[nn.Module], type[nn.Module]]:
    """(BatchNorm1d, BatchNorm2d) of implementation ``bn_impl``."""
    if bn_impl not in BN_IMPLS:
        raise ValueError(f"bn_impl must be one of {', '.join(BN_IMPLS)}, got {bn_impl!r}")
    return BN_IMPLS[bn_impl]


def lizard_cnn(
    bn: bool, bn_impl: str, input_shape: tuple[int, ...], num_outputs: int
) -> nn.Sequential:
    """Seed 001's network1 (``bn=False``) / network2 (``bn=True``), layer for layer.

    network2 adds BatchNorm2d(6) after the first max-pool and BatchNorm1d(120) after the first
    fully connected layer's ReLU (the seed's placement: after the activation).
    """
    if len(input_shape) != 3:
        raise ValueError(f"lizard-cnn needs (C, H, W) images, got input shape {input_shape}")
    channels, height, width = input_shape
    side_h, side_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
    if side_h < 1 or side_w < 1:
        raise ValueError(f"lizard-cnn needs images of at least 16x16, got {height}x{width}")
    bn1d, bn2d = bn_classes(bn_impl)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels=channels, out_channels=6, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
    ]
    if bn:
        layers.append(bn2d(6))
    layers += [
        nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(start_dim=1),
        nn.Linear(in_features=12 * side_h * side_w, out_features=120),
        nn.ReLU(),
    ]
    if bn:
        layers.append(bn1d(120))
    layers += [
        nn.Linear(in_features=120, out_features=60),
        nn.ReLU(),
        nn.Linear(in_features=60, out_features=num_outputs),
    ]
    return nn.Sequential(*layers)


def _mlp(
    widths: list[int],
    bn: bool,
    bn_impl: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    bn_kwargs: dict[str, float] | None = None,
) -> nn.Sequential:
    """Flatten, then Linear -> [BN] -> ReLU per hidden width, then a Linear output layer."""
    bn1d, _ = bn_classes(bn_impl)
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)] if len(input_shape) > 1 else []
    features = math.prod(input_shape)
    for width in widths:
        layers.append(nn.Linear(features, width))
        if bn:
            layers.append(bn1d(width, **(bn_kwargs or {})))
        layers.append(nn.ReLU())
        features = width
    layers.append(nn.Linear(features, num_outputs))
    return nn.Sequential(*layers)


def keras_mlp(bn: bool, bn_impl: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Seed 000: 784 -> 64 -> BN -> ReLU -> 10, BN with Keras's defaults.

    Keras's ``momentum=0.99`` (weight of the old running value) is PyTorch's 0.01, and Keras's
    ``epsilon`` default is 1e-3. The network ends in logits: the seed's PyTorch twin applies
    Softmax before CrossEntropyLoss (which applies log-softmax again); that mistake is not
    copied.
    """
    return _mlp([64], bn, bn_impl, input_shape, num_outputs, {"momentum": 0.01, "eps": 1e-3})


def seed_mlp(bn: bool, bn_impl: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Seed 002: 784 -> 512 -> 256 -> 10, BN after fc1 and fc2, before the ReLU."""
    return _mlp([512, 256], bn, bn_impl, input_shape, num_outputs)


def mpg_mlp(bn: bool, bn_impl: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Seed 003: in -> 50 -> 25 -> out, BN after the first two layers, before the ReLU."""
    return _mlp([50, 25], bn, bn_impl, input_shape, num_outputs)


Builder = Callable[[bool, str, tuple[int, ...], int], nn.Module]


@dataclass(frozen=True)
class Network:
    name: str
    builder: Builder
    description: str


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("lizard-cnn", lizard_cnn, "seed 001: 2 conv + 3 FC; BN after pool1 and fc1"),
        Network("keras-mlp", keras_mlp, "seed 000: 784-64-10; Keras BN defaults"),
        Network("mlp", seed_mlp, "seed 002: 784-512-256-10; BN before ReLU"),
        Network("mpg-mlp", mpg_mlp, "seed 003: in-50-25-1; BN before ReLU"),
    )
}


def build_model(
    network: str,
    bn: bool,
    bn_impl: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    seed: int,
) -> nn.Module:
    """A fresh ``network`` built right after ``torch.manual_seed(seed)``."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    torch.manual_seed(seed)
    return NETWORKS[network].builder(bn, bn_impl, tuple(input_shape), num_outputs)
