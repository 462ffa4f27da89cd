"""convert(model, kind=...) and insert_batchnorm(model, kind=...) with the BN-family variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.keras_conventions import KerasBatchNorm


def model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.2), nn.ReLU(), nn.Flatten())
    m.append(nn.Linear(64, 6)).append(bnlab.BatchNorm1d(6, eps=1e-3))
    for _ in range(2):
        m(torch.randn(8, 3, 6, 6))
    return m


@pytest.mark.parametrize(
    ("kind", "cls2d", "cls1d"),
    [
        ("renorm", bnlab.BatchRenorm2d, bnlab.BatchRenorm1d),
        ("ghost", bnlab.GhostBatchNorm2d, bnlab.GhostBatchNorm1d),
        ("frozen", bnlab.FrozenBatchNorm2d, bnlab.FrozenBatchNorm1d),
    ],
)
def test_convert_kind_keeps_values_and_eval_output(kind, cls2d, cls1d, assert_close):
    m = model().eval()
    x = torch.randn(4, 3, 6, 6)
    expected = m(x)
    weight = m[1].weight
    converted = bnlab.convert(m, kind=kind)
    assert isinstance(converted[1], cls2d) and isinstance(converted[5], cls1d)
    assert converted[5].eps == 1e-3 and converted[1].momentum == 0.2
    if kind != "frozen":
        assert converted[1].weight is weight, "parameters are taken over, not copied"
    assert_close(converted(x), expected, atol=1e-5, what=kind)


def test_convert_kind_errors():
    with pytest.raises(ValueError, match="kind must be 'bn' or one of"):
        bnlab.convert(model(), kind="group")
    with pytest.raises(ValueError, match="needs to='bnlab'"):
        bnlab.convert(model(), to="torch", kind="ghost")
    with pytest.raises(ValueError, match="kind 'masked' has no 2d layer"):
        bnlab.convert(model(), kind="masked")
    masked = bnlab.convert(nn.Sequential(nn.BatchNorm1d(3)), kind="masked")
    assert isinstance(masked[0], bnlab.MaskedBatchNorm1d)


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("renorm", bnlab.BatchRenorm1d), ("ghost", bnlab.GhostBatchNorm1d), ("keras", KerasBatchNorm)],
)
def test_insert_kind(kind, cls):
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    bnlab.insert_batchnorm(m, kind=kind)
    inserted = [c for c in m if isinstance(c, cls)]
    assert len(inserted) == 2
    assert m(torch.randn(32, 4)).shape == (32, 2)
    if kind == "keras":
        assert (
            inserted[0].momentum == 0.99 and inserted[0].epsilon == 1e-3 and inserted[0].axis == 1
        )
