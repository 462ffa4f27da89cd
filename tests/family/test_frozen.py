"""FrozenBatchNorm and freeze/unfreeze: values kept both ways, fixed behaviour, eps semantics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bnlab
from bnlab.layers import FrozenBatchNorm1d, FrozenBatchNorm2d, FrozenBatchNorm3d


def trained_model(affine=True):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4, affine=affine),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
        bnlab.BatchNorm1d(5, momentum=0.3, eps=1e-3),
        nn.Sequential(nn.Linear(5, 2), bnlab.GhostBatchNorm1d(2, virtual_batch_size=4)),
    )
    for p in model.parameters():
        nn.init.normal_(p)
    for _ in range(3):
        model(torch.randn(8, 3, 6, 6))
    return model


@pytest.mark.parametrize("affine", [True, False])
def test_freeze_keeps_outputs_and_values(affine, assert_close):
    model = trained_model(affine)
    reference = copy.deepcopy(model).eval()
    x = torch.randn(8, 3, 6, 6)
    expected = reference(x)
    frozen = bnlab.freeze(model)
    kinds = [type(m) for m in frozen.modules() if "BatchNorm" in type(m).__name__]
    assert kinds == [FrozenBatchNorm2d, FrozenBatchNorm1d, FrozenBatchNorm1d]
    frozen.train()  # frozen layers ignore the mode
    assert_close(frozen(x), expected, atol=1e-5, what="frozen output (train mode) vs eval BN")
    assert frozen[5].eps == 1e-3 and frozen[5].momentum == 0.3
    # Nothing learnable is left in the frozen layers, and no forward changes them.
    names = [n for n, _ in frozen.named_parameters()]
    assert not any(n.startswith(("1.", "5.", "6.1.")) for n in names), names
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen(torch.randn(8, 3, 6, 6) * 10)
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gradients_reach_the_input_only(assert_close):
    layer = bnlab.freeze(nn.BatchNorm1d(3).eval())
    layer.running_var.fill_(4.0)
    x = torch.randn(5, 3, requires_grad=True)
    layer(x).sum().backward()
    assert_close(x.grad, torch.full((5, 3), 1 / (4.0 + 1e-5) ** 0.5), atol=1e-6, what="dx")


@pytest.mark.parametrize("to", ["bnlab", "torch"])
def test_unfreeze_round_trip_keeps_every_value(to):
    model = trained_model()
    state = copy.deepcopy(model.state_dict())
    model = bnlab.unfreeze(bnlab.freeze(model), to=to)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    layer = model[5]
    assert isinstance(layer, bnlab.BatchNorm1d if to == "bnlab" else nn.BatchNorm1d)
    assert layer.eps == 1e-3 and layer.momentum == 0.3 and layer.weight.requires_grad
    assert isinstance(model[1], bnlab.BatchNorm2d if to == "bnlab" else nn.BatchNorm2d)
    with pytest.raises(ValueError, match="to must be"):
        bnlab.unfreeze(model, to="keras")  # type: ignore[arg-type]


def test_zero_variance_channel_stays_finite():
    """torchvision's old eps=0 default made a dead channel (running_var 0) inf/NaN."""
    bn = nn.BatchNorm2d(2).eval()
    bn.running_var[0] = 0.0
    frozen = bnlab.freeze(bn)
    y = frozen(torch.zeros(1, 2, 3, 3))
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match=r"eps must be positive, got 0\.0"):
        FrozenBatchNorm2d(2, eps=0.0)


def test_loads_a_torchvision_style_state_dict(assert_close):
    state = {
        "weight": torch.tensor([2.0, 3.0]),
        "bias": torch.tensor([1.0, -1.0]),
        "running_mean": torch.tensor([0.5, 0.0]),
        "running_var": torch.tensor([4.0, 1.0]),
    }
    layer = FrozenBatchNorm2d(2)
    layer.load_state_dict(state)
    x = torch.ones(1, 2, 1, 1)
    expected = torch.tensor([2.0 * 0.5 / (4 + 1e-5) ** 0.5 + 1.0, 3.0 / (1 + 1e-5) ** 0.5 - 1.0])
    assert_close(layer(x).flatten(), expected, atol=1e-6, what="y")


def test_rank_checks_and_errors():
    with pytest.raises(ValueError, match=r"expected 5D input \(got 4D input\)"):
        FrozenBatchNorm3d(2)(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="no running statistics"):
        bnlab.freeze(nn.Sequential(nn.BatchNorm1d(2, track_running_stats=False)))
