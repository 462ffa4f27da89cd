"""bnlab.BatchNorm1d/2d/3d as drop-in replacements for torch.nn.BatchNorm1d/2d/3d."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bnlab

PAIRS = [
    (bnlab.BatchNorm1d, nn.BatchNorm1d, (6, 4)),
    (bnlab.BatchNorm1d, nn.BatchNorm1d, (5, 4, 7)),
    (bnlab.BatchNorm2d, nn.BatchNorm2d, (4, 4, 5, 3)),
    (bnlab.BatchNorm3d, nn.BatchNorm3d, (3, 4, 2, 3, 4)),
]
PAIR_IDS = ["1d-NC", "1d-NCL", "2d", "3d"]


def _steps(module, inputs, dy):
    """Train on each input (forward + backward), then one eval forward; return what came out."""
    outputs, grads = [], []
    for x in inputs:
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        y.backward(dy)
        outputs.append(y.detach())
        grads.append(xi.grad)
    module.eval()
    outputs.append(module(inputs[0]).detach())
    module.train()
    return outputs, grads


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("momentum", [None, 0.1, 1.0], ids=["cumulative", "m0.1", "m1.0"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "no_track"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_several_steps_match_torch(
    ours_cls, torch_cls, shape, momentum, affine, track, dtype, assert_close
):
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    kwargs = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
    theirs = torch_cls(4, **kwargs)
    ours = ours_cls(4, **kwargs)
    if affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    inputs = [torch.randn(shape, dtype=dtype) * (i + 1) + i for i in range(3)]
    dy = torch.randn(shape, dtype=dtype)
    out_o, grad_o = _steps(ours, inputs, dy)
    out_t, grad_t = _steps(theirs, inputs, dy)
    for i, (a, b) in enumerate(zip(out_o, out_t, strict=True)):
        assert_close(a, b, atol=tol, rtol=tol, what=f"output {i}")
    for i, (a, b) in enumerate(zip(grad_o, grad_t, strict=True)):
        assert_close(a, b, atol=tol, rtol=tol, what=f"input grad {i}")
    if affine:
        assert_close(ours.weight.grad, theirs.weight.grad, atol=tol, rtol=tol, what="weight grad")
        assert_close(ours.bias.grad, theirs.bias.grad, atol=tol, rtol=tol, what="bias grad")
    state_o, state_t = ours.state_dict(), theirs.state_dict()
    assert list(state_o) == list(state_t)
    for key in state_t:
        assert state_o[key].dtype == state_t[key].dtype, key
        assert_close(state_o[key], state_t[key], atol=tol, rtol=tol, what=key)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-6)], ids=str)
def test_state_dict_moves_both_ways(ours_cls, torch_cls, shape, dtype, tol, assert_close):
    """Same keys both ways; outputs equal to rounding (the two libraries order FMAs differently)."""
    theirs = torch_cls(4, dtype=dtype)
    for _ in range(3):
        theirs(torch.randn(shape, dtype=dtype) * 3 + 1)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 2)
        theirs.bias.normal_()
    ours = ours_cls(4, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())  # strict: same keys
    back = torch_cls(4, dtype=dtype)
    back.load_state_dict(ours.state_dict())
    x = torch.randn(shape, dtype=dtype)
    for m in (theirs, ours, back):
        m.eval()
    assert_close(ours(x), theirs(x), atol=tol, rtol=tol, what="torch -> bnlab eval output")
    assert_close(back(x), theirs(x), atol=0, what="bnlab -> torch eval output")
    assert ours.num_batches_tracked.item() == 3


def test_old_checkpoint_without_num_batches_tracked_loads():
    state = bnlab.BatchNorm2d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    m = bnlab.BatchNorm2d(3)
    m.load_state_dict(state)
    assert m.num_batches_tracked.item() == 0


def test_channels_last_module(assert_close):
    x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    y = bnlab.BatchNorm2d(3)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, nn.BatchNorm2d(3)(x), atol=1e-5, what="channels_last output")


def test_repr_and_docs_follow_torch():
    m = bnlab.BatchNorm2d(8, eps=1e-3, momentum=None)
    assert repr(m) == (
        "BatchNorm2d(8, eps=0.001, momentum=None, affine=True, track_running_stats=True)"
    )
    assert "running = (1 - momentum) * running + momentum * batch" in bnlab.BatchNorm2d.__doc__


@pytest.mark.parametrize(
    ("module", "x", "message"),
    [
        (bnlab.BatchNorm2d(3), torch.randn(2, 3, 4), r"expected 4D input \(got 3D input\)"),
        (
            bnlab.BatchNorm1d(3),
            torch.randn(2, 3, 4, 4),
            r"expected 2D or 3D input \(got 4D input\)",
        ),
        (bnlab.BatchNorm3d(3), torch.randn(2, 3, 4, 4), r"expected 5D input \(got 4D input\)"),
        (bnlab.BatchNorm2d(3), torch.randn(2, 4, 4, 4), "expected input with 3 channels.*got 4"),
        (bnlab.BatchNorm1d(3), torch.randn(1, 3), "Expected more than 1 value per channel"),
    ],
    ids=["2d_rank", "1d_rank", "3d_rank", "channels", "one_value"],
)
def test_bad_input_errors(module, x, message):
    with pytest.raises(ValueError, match=message):
        module(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_features": 0}, "num_features must be a positive int"),
        ({"num_features": 3, "eps": 0}, "eps must be a positive"),
        ({"num_features": 3, "momentum": 2.0}, r"momentum must be in \[0, 1\]"),
    ],
    ids=["num_features", "eps", "momentum"],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bnlab.BatchNorm1d(**kwargs)


def _model(bn1, bn2):
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        bn1(3),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 5), bn2(5)),
    )


def test_convert_swaps_every_layer_and_keeps_everything(assert_close):
    torch_model = _model(nn.BatchNorm2d, nn.BatchNorm1d).double()
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    torch_model(x)  # move the running statistics away from their initial values
    torch_model[3][2].eval()
    torch_model[1].weight.requires_grad_(False)
    reference = copy.deepcopy(torch_model)

    converted = bnlab.convert(torch_model, to="bnlab")
    assert isinstance(converted[1], bnlab.BatchNorm2d)
    assert isinstance(converted[3][2], bnlab.BatchNorm1d)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in converted.modules())
    assert converted[1].running_mean.dtype == torch.float64
    assert converted[1].training and not converted[3][2].training
    assert not converted[1].weight.requires_grad
    assert list(converted.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert_close(converted.state_dict()[key], value, atol=0, what=key)
    assert_close(converted(x), reference(x), atol=1e-10, what="converted output")

    back = bnlab.convert(converted, to="torch")
    assert isinstance(back[1], nn.BatchNorm2d) and isinstance(back[3][2], nn.BatchNorm1d)
    assert_close(back(x), reference(x), atol=1e-10, what="round-trip output")


def test_convert_keeps_optimizer_working():
    model = _model(nn.BatchNorm2d, nn.BatchNorm1d)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model = bnlab.convert(model)
    before = model[1].weight.detach().clone()
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    opt.step()
    assert not torch.equal(model[1].weight, before), "optimizer no longer updates the BN weight"


def test_convert_a_bare_layer_and_bad_target():
    assert isinstance(bnlab.convert(nn.BatchNorm1d(3)), bnlab.BatchNorm1d)
    with pytest.raises(ValueError, match="to must be 'bnlab' or 'torch'"):
        bnlab.convert(nn.BatchNorm1d(3), to="keras")  # type: ignore[arg-type]
