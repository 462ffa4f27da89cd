"""What the transforms do with BN subclasses: norm+activation layers keep their activation, and a
subclass with a forward bnlab cannot know is left alone with one warning naming it."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import bnlab


class ShiftedBatchNorm2d(nn.BatchNorm2d):
    """A user's subclass whose forward does more than batch norm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) + 1.0


class ScaledBnlabBatchNorm2d(bnlab.BatchNorm2d):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 2.0


def _model(bn: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bn, nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


TRANSFORMS = {
    "convert": lambda m: bnlab.convert(m),
    "convert_to_torch": lambda m: bnlab.convert(m, to="torch"),
    "freeze": bnlab.freeze,
    "fold_batchnorm": bnlab.fold_batchnorm,
    "recalibrate": lambda m: bnlab.recalibrate(m, [torch.randn(4, 3, 8, 8)]),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("subclass", [ShiftedBatchNorm2d, ScaledBnlabBatchNorm2d])
def test_unknown_subclass_is_left_alone_with_one_warning(transform, subclass, assert_close):
    model = _model(subclass(4))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    with pytest.warns(UserWarning, match=subclass.__qualname__) as record:
        result = TRANSFORMS[transform](copy.deepcopy(model))
    assert len([w for w in record if subclass.__qualname__ in str(w.message)]) == 1
    assert any(type(m) is subclass for m in result.modules()), "the subclass was replaced"
    if transform != "recalibrate":  # recalibrate changes the *other* layer's statistics
        with torch.no_grad():
            assert_close(result.eval()(x), expected, atol=1e-5, what=transform)


def test_known_layers_give_no_warning():
    model = _model(nn.BatchNorm2d(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for transform in TRANSFORMS.values():
            transform(copy.deepcopy(model))


@pytest.mark.parametrize("activation", ["relu", "hardswish"])
def test_norm_act_keeps_its_activation_through_every_transform(activation, assert_close):
    act = nn.ReLU(inplace=True) if activation == "relu" else nn.Hardswish()
    model = _model(bnlab.BatchNormAct2d(4, activation=act))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        folded = bnlab.fold_batchnorm(model)
        assert not any(isinstance(m, bnlab.BatchNormAct2d) for m in folded.modules())
        assert any(type(m) is type(act) for m in folded.modules()), "activation lost by fold"
        assert_close(folded(x), expected, atol=1e-5, what="fold")
        frozen = bnlab.freeze(copy.deepcopy(model))
        assert isinstance(frozen[1], bnlab.FrozenBatchNormAct2d)
        assert type(frozen[1].act) is type(act)
        assert_close(frozen(x), expected, atol=1e-6, what="freeze")
        unfrozen = bnlab.unfreeze(frozen)
        assert isinstance(unfrozen[1], bnlab.BatchNormAct2d)
        assert_close(unfrozen(x), expected, atol=1e-6, what="unfreeze")


def test_norm_act_with_module_activation_trains_like_bn_then_activation(assert_close):
    layer = bnlab.BatchNormAct2d(4, activation=nn.Hardswish(), drop=nn.Dropout(0.0))
    ref = nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), nn.functional.hardswish(ref(x_ref))
    assert_close(y, y_ref, atol=1e-5, what="output")
    y.square().sum().backward()
    y_ref.square().sum().backward()
    assert_close(x.grad, x_ref.grad, atol=1e-4, what="input gradient")
    assert_close(layer.running_var, ref.running_var, atol=1e-6, what="running_var")


def test_affine_without_bias_survives_every_transform(assert_close):
    bn = nn.BatchNorm2d(4, bias=False)
    model = _model(bn)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        converted = bnlab.convert(copy.deepcopy(model))
        assert converted[1].weight is not None
        assert converted[1].bias is None
        for name, result in (
            ("convert", converted),
            ("back", bnlab.convert(copy.deepcopy(converted), to="torch")),
            ("freeze", bnlab.freeze(copy.deepcopy(model))),
            ("fold", bnlab.fold_batchnorm(model)),
        ):
            assert_close(result(x), expected, atol=1e-5, what=name)


def test_convert_sync_batchnorm_names_what_it_leaves():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), bnlab.BatchNormAct2d(4), ShiftedBatchNorm2d(4), nn.BatchNorm2d(4)
    )
    with pytest.warns(UserWarning, match="no synchronized counterpart") as record:
        converted = bnlab.convert_sync_batchnorm(model)
    assert len(record) == 1
    assert "BatchNormAct2d" in str(record[0].message)
    assert "ShiftedBatchNorm2d" in str(record[0].message)
    assert [type(m) for m in converted] == [
        nn.Conv2d,
        bnlab.BatchNormAct2d,
        ShiftedBatchNorm2d,
        bnlab.SyncBatchNorm,
    ]
