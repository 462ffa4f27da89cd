"""insert_batchnorm: placement before/after the activation, the output layer left alone,
nested and non-Sequential models, idempotence, device/dtype/mode, and bad arguments."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import bnlab
from bnlab.transforms.insert import BN_KINDS


def _types(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model]


def test_before_activation_is_the_seeds_pattern():
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip
    out = bnlab.insert_batchnorm(model)
    assert out is model
    assert _types(model) == [
        "Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear",
    ]  # fmt: skip
    assert isinstance(model[2], bnlab.BatchNorm1d) and model[2].num_features == 512
    assert model[5].num_features == 256


def test_after_activation_and_conv_ranks():
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 12, 5), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(192, 120), nn.ReLU(), nn.Linear(120, 10),
    )  # fmt: skip
    bnlab.insert_batchnorm(model, where="after_activation")
    assert _types(model) == [
        "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Conv2d", "ReLU", "BatchNorm2d",
        "MaxPool2d", "Flatten", "Linear", "ReLU", "BatchNorm1d", "Linear",
    ]  # fmt: skip
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_output_is_unchanged_in_function_at_init_when_followed_by_identity_stats():
    """With fresh BN in eval mode (running mean 0, var 1, gamma 1, beta 0) the model computes
    what it did before, up to the eps in sqrt(1 + eps): the insertion changes no weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    before = model(x)
    bnlab.insert_batchnorm(model).eval()
    after = model(x)
    expected = nn.Sequential(model[0], model[2], model[3])  # without the BN
    scale = (1 + model[1].eps) ** -0.5
    manual = model[3](torch.relu(model[0](x) * scale))
    diff = (after - manual).abs().max().item()
    assert diff < 1e-12, f"max difference {diff}"
    assert (before - expected(x)).abs().max().item() < 1e-12
    assert model[1].weight.dtype == torch.float64


def test_idempotent_and_keeps_existing_bn():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    bnlab.insert_batchnorm(model)
    bnlab.insert_batchnorm(model)
    assert _types(model) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert isinstance(model[1], nn.BatchNorm1d)  # torch's, kept


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.fc1(x))))


def test_non_sequential_parent_wraps_the_layer():
    model = bnlab.insert_batchnorm(Custom())
    assert isinstance(model.fc1, nn.Sequential)
    assert _types(model.fc1) == ["Linear", "BatchNorm1d"]
    assert _types(model.block) == ["Linear", "BatchNorm1d", "Tanh"]
    assert isinstance(model.head, nn.Linear)  # the output layer gets none
    assert model(torch.randn(3, 4)).shape == (3, 2)
    with pytest.warns(UserWarning, match="fc1"):
        bnlab.insert_batchnorm(Custom(), where="after_activation")


def test_mode_is_kept():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    bnlab.insert_batchnorm(model)
    assert not model[1].training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(1, 4))  # eval mode: a batch of one is fine


def test_bad_arguments():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="where must be"):
        bnlab.insert_batchnorm(model, where="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        bnlab.insert_batchnorm(model, kind="layernorm")
    with pytest.raises(ValueError, match="no Linear or Conv"):
        bnlab.insert_batchnorm(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="not a single layer"):
        bnlab.insert_batchnorm(nn.Linear(3, 3))
    assert "bn" in BN_KINDS
