"""The tutorials' experiments as named presets: network, data, optimizer, lr, batch size, epochs.

A preset gives every run parameter (see ``bnlab.lab.grid.RunParams``) a list of values; the
grid it expands to always crosses ``bn = [false, true]`` (without vs with BN) and the seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bnlab.lab.errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str  # what `bnlab compare` takes
    tutorial: str  # the tutorial it reruns: its number (and author)
    description: str  # one line for `bnlab list`
    params: dict[str, list[Any]]  # run parameter lists (bnlab.lab.grid.RunParams keys)
    tutorial_epochs: int  # the epochs the tutorial trains
    notes: list[str] = field(default_factory=list)  # for the record when epochs differ


def _params(
    network: str, dataset: str, lr: float, batch_size: int, epochs: int, **more: Any
) -> dict[str, list[Any]]:
    """A preset's run parameters as one-value grid lists: its network, data and training, and
    ``more`` where the tutorial differs from the common choice (no input normalization, Adam,
    seed 0) or adds a parameter (sgd_momentum)."""
    common = {"normalization": "none", "optimizer": "adam", "seed": 0}
    given = dict(network=network, dataset=dataset, lr=lr, batch_size=batch_size, epochs=epochs)
    return {key: [value] for key, value in {**given, **common, **more}.items()}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="lizard-cnn",
            tutorial="001 (deeplizard)",
            description=(
                "deeplizard's network1/network2 on Fashion-MNIST: Adam lr 0.01, batch 1000, "
                "'normal' training set (its own mean/std)"
            ),
            params=_params(
                "lizard-cnn",
                "fashion-mnist",
                lr=0.01,
                batch_size=1000,
                epochs=5,
                normalization="normal",
                seed=50,
            ),
            tutorial_epochs=20,
            notes=["the tutorial trains 20 epochs (--epochs 20); the default is short"],
        ),
        Preset(
            name="keras-mlp",
            tutorial="000",
            description=(
                "784-64-10 MLP, BN with Keras defaults (bn_momentum 0.01 in PyTorch terms, "
                "bn_eps 1e-3); Adam lr 1e-3, batch 32, 5 epochs, cross-entropy on logits (the "
                "tutorial's Softmax before CrossEntropyLoss is not copied)"
            ),
            params=_params("keras-mlp", "mnist", lr=0.001, batch_size=32, epochs=5),
            tutorial_epochs=5,
        ),
        Preset(
            name="mlp",
            tutorial="002",
            description=(
                "784-512-256-10 MLP, BN after fc1 and fc2 before ReLU; SGD lr 0.01, "
                "sgd_momentum 0.9, batch 64, 5 epochs, MNIST normalized with (0.1307, 0.3081)"
            ),
            params=_params(
                "mlp",
                "mnist",
                lr=0.01,
                batch_size=64,
                epochs=5,
                normalization="fixed",
                optimizer="sgd",
                sgd_momentum=0.9,
            ),
            tutorial_epochs=5,
        ),
        Preset(
            name="mpg",
            tutorial="003",
            description=(
                "Auto MPG regression, in-50-25-1 MLP, BN before ReLU; MSE loss, MAE reported; "
                "Adam lr 1e-3, batch 32, 200 epochs (the tutorial names no optimizer or schedule)"
            ),
            params=_params("mpg-mlp", "mpg", lr=0.001, batch_size=32, epochs=200),
            tutorial_epochs=200,
        ),
    )
}

# Presets whose data set is MNIST fall back to Fashion-MNIST when MNIST is absent (and the
# record says so): MNIST has no offline copy here.
MNIST_FALLBACK = "fashion-mnist"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
