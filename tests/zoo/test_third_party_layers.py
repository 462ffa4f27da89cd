"""timm's and torchvision's BN-like layers, one by one: convert, freeze and fold keep behaviour."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bnlab


def _randomized(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 2.0)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


@pytest.mark.usefixtures("zoo_libraries")
def test_timm_batchnormact_converts_with_its_children(assert_close):
    from timm.layers import BatchNormAct2d

    layer = _randomized(BatchNormAct2d(6, act_layer=nn.Hardswish, drop_layer=nn.Identity))
    ours = bnlab.convert(copy.deepcopy(layer))
    assert type(ours) is bnlab.BatchNormAct2d
    assert type(ours.act) is nn.Hardswish
    assert set(ours.state_dict()) == set(layer.state_dict())
    x = torch.randn(4, 6, 5, 5)
    for mode in (True, False):
        layer.train(mode)
        ours.train(mode)
        assert_close(ours(x), layer(x), atol=1e-5, what=f"training={mode}")
    assert_close(ours.running_mean, layer.running_mean, atol=1e-6, what="running_mean")
    back = bnlab.convert(ours, to="torch")
    assert type(back) is BatchNormAct2d and type(back.act) is nn.Hardswish


@pytest.mark.usefixtures("zoo_libraries")
def test_freeze_matches_timms_own_freeze(assert_close):
    from timm.layers import BatchNormAct2d, freeze_batch_norm_2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), _randomized(BatchNormAct2d(6, act_layer=nn.SiLU)))
    x = torch.randn(2, 3, 8, 8)
    theirs = freeze_batch_norm_2d(copy.deepcopy(model))
    ours = bnlab.freeze(copy.deepcopy(model))
    assert type(ours[1]) is bnlab.FrozenBatchNormAct2d
    with torch.no_grad():
        assert_close(ours(x), theirs(x), atol=1e-6, what="frozen output")
        folded = bnlab.fold_batchnorm(model.eval())
        assert type(folded[1]) is nn.SiLU, f"fold left {folded[1]}"
        assert_close(folded(x), model(x), atol=1e-5, what="folded output")


@pytest.mark.usefixtures("zoo_libraries")
def test_torchvision_frozen_batchnorm_converts_and_folds(assert_close):
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), _randomized(FrozenBatchNorm2d(6)), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        ours = bnlab.convert(copy.deepcopy(model))
        assert type(ours[1]) is bnlab.FrozenBatchNorm2d
        assert_close(ours(x), expected, atol=1e-6, what="converted")
        back = bnlab.convert(ours, to="torch")
        assert type(back[1]) is FrozenBatchNorm2d
        assert torch.equal(back(x), expected)
        folded = bnlab.fold_batchnorm(model)
        assert type(folded[1]) is nn.Identity
        assert_close(folded(x), expected, atol=1e-5, what="folded")
