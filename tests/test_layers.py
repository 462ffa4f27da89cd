"""bnlab.BatchNorm1d/2d/3d as drop-in replacements for torch.nn.BatchNorm1d/2d/3d."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab

PAIRS = [
    (bnlab.BatchNorm1d, nn.BatchNorm1d, (6, 4)),
    (bnlab.BatchNorm1d, nn.BatchNorm1d, (5, 4, 7)),
    (bnlab.BatchNorm2d, nn.BatchNorm2d, (4, 4, 5, 3)),
    (bnlab.BatchNorm3d, nn.BatchNorm3d, (3, 4, 2, 3, 4)),
]
PAIR_IDS = ["1d-NC", "1d-NCL", "2d", "3d"]


def _assert_steps_match(ours, theirs, shape, dtype, tol, assert_close):
    """Three training steps on the same inputs: outputs and input gradients agree."""
    inputs = [torch.randn(shape, dtype=dtype) * (i + 1) + i for i in range(3)]
    dy = torch.randn(shape, dtype=dtype)
    out_o, grad_o = _steps(ours, inputs, dy)
    out_t, grad_t = _steps(theirs, inputs, dy)
    for i, (a, b) in enumerate(zip(out_o, out_t, strict=True)):
        assert_close(a, b, atol=tol, rtol=tol, what=f"output {i}")
    for i, (a, b) in enumerate(zip(grad_o, grad_t, strict=True)):
        assert_close(a, b, atol=tol, rtol=tol, what=f"input grad {i}")


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
    _assert_steps_match(ours, theirs, shape, dtype, tol, assert_close)
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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": 1e-3, "momentum": None},
        {"bias": False},
        {"affine": False, "track_running_stats": False},
    ],
    ids=["cumulative", "no_bias", "plain"],
)
def test_repr_and_docs_follow_torch(kwargs):
    assert repr(bnlab.BatchNorm2d(8, **kwargs)) == "bnlab." + repr(nn.BatchNorm2d(8, **kwargs))
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
    ("kwargs", "exc", "message"),
    [
        ({"num_features": 0}, ValueError, "num_features must be a positive int"),
        ({"eps": float("nan")}, ValueError, "eps must be finite, got nan"),
        ({"eps": float("inf")}, ValueError, "eps must be finite, got inf"),
        ({"eps": "1e-5"}, TypeError, "eps must be a real number, got str"),
        ({"momentum": -0.1}, ValueError, "momentum must be >= 0 or None, got -0.1"),
        ({"momentum": float("nan")}, ValueError, "momentum must be finite, got nan"),
        ({"momentum": "0.1"}, TypeError, "momentum must be a real number, got str"),
    ],
    ids=["num_features", "eps_nan", "eps_inf", "eps_str", "momentum_neg", "momentum_nan", "m_str"],
)
def test_bad_constructor_arguments(kwargs, exc, message):
    """Refused at once: values torch would take but that can only give NaN or diverge."""
    kwargs = {"num_features": 3, **kwargs}
    with pytest.raises(exc, match=message):
        bnlab.BatchNorm1d(**kwargs)


# ------------------------------------------------------------------ bias=False (torch 2.13)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_no_bias_matches_torch(ours_cls, torch_cls, shape, dtype, assert_close):
    """affine=True, bias=False: a weight Parameter, bias None, torch's keys, torch's numbers."""
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    theirs = torch_cls(4, bias=False, dtype=dtype)
    ours = ours_cls(4, bias=False, dtype=dtype)
    assert isinstance(ours.weight, nn.Parameter) and ours.bias is None
    assert [n for n, _ in ours.named_parameters()] == ["weight"]
    assert "bias" not in ours.state_dict()
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    _assert_steps_match(ours, theirs, shape, dtype, tol, assert_close)
    assert_close(ours.weight.grad, theirs.weight.grad, atol=tol, rtol=tol, what="weight grad")
    for key, value in theirs.state_dict().items():
        assert_close(ours.state_dict()[key], value, atol=tol, rtol=tol, what=key)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
def test_no_bias_state_dict_moves_both_ways(ours_cls, torch_cls, shape, assert_close):
    theirs = torch_cls(4, bias=False, dtype=torch.float64)
    theirs(torch.randn(shape, dtype=torch.float64) * 2 + 1)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 2)
    ours = ours_cls(4, bias=False, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())  # strict: same keys, no "bias"
    back = torch_cls(4, bias=False, dtype=torch.float64)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    x = torch.randn(shape, dtype=torch.float64)
    for m in (theirs, ours, back):
        m.eval()
    assert_close(ours(x), theirs(x), atol=1e-12, what="torch -> bnlab eval output")
    assert_close(back(x), theirs(x), atol=0, what="bnlab -> torch eval output")
    # a state_dict with a bias does not fit a layer without one, in either library
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "bias"'):
        ours.load_state_dict(torch_cls(4).state_dict())
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "bias"'):
        torch_cls(4).load_state_dict(ours.state_dict())


def _parameters(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize(("ours_cls", "torch_cls"), [(o, t) for o, t, _ in PAIRS[1:]])
def test_constructor_signature_is_torchs(ours_cls, torch_cls):
    """Names, order, kinds (``bias`` keyword-only) and defaults of torch 2.13's constructor."""
    assert _parameters(ours_cls) == _parameters(torch_cls)


def test_no_bias_reset_parameters_and_no_affine():
    m = bnlab.BatchNorm1d(3, bias=False)
    with torch.no_grad():
        m.weight.fill_(5)
    m.reset_parameters()
    assert torch.equal(m.weight, torch.ones(3)) and m.bias is None
    # bias=False without affine: neither parameter, as in torch
    plain = bnlab.BatchNorm1d(3, affine=False, bias=False)
    assert plain.weight is None and plain.bias is None
    assert repr(plain) == "bnlab." + repr(nn.BatchNorm1d(3, affine=False, bias=False))


def _variants():
    """Every bnlab layer that mirrors torch's constructor, built with and without a bias."""
    return {
        "BatchNorm2d": lambda **kw: bnlab.BatchNorm2d(3, **kw),
        "BatchNormAct2d": lambda **kw: bnlab.BatchNormAct2d(3, activation="silu", **kw),
        "GhostBatchNorm2d": lambda **kw: bnlab.GhostBatchNorm2d(3, virtual_batch_size=2, **kw),
        "BatchRenorm2d": lambda **kw: bnlab.BatchRenorm2d(3, rmax=1.5, dmax=0.5, **kw),
        "MaskedBatchNorm1d": lambda **kw: bnlab.MaskedBatchNorm1d(3, **kw),
        "SyncBatchNorm": lambda **kw: bnlab.SyncBatchNorm(3, **kw),
    }


@pytest.mark.parametrize("name", list(_variants()))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_every_variant_without_bias_is_the_variant_with_zero_bias(name, training, assert_close):
    """The reference: the same layer with bias=True and its bias held at 0."""
    make = _variants()[name]
    ours, ref = make(bias=False).double(), make().double()
    assert ours.bias is None and "bias=False" in repr(ours)
    assert "bias" not in ours.state_dict()
    with torch.no_grad():
        ref.running_mean.normal_()
        ref.running_var.uniform_(0.5, 2)
        ref.weight.uniform_(0.5, 1.5)
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k != "bias"})
    ours.train(training)
    ref.train(training)
    shape = (4, 3, 5) if name == "MaskedBatchNorm1d" else (4, 3, 3, 2)
    for step in range(2):
        x = torch.randn(shape, dtype=torch.float64) * 2 + 1
        xo, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y_o, y_r = ours(xo), ref(xr)
        assert_close(y_o, y_r, atol=1e-12, what=f"step {step}: output")
        dy = torch.randn_like(y_r)
        y_o.backward(dy)
        y_r.backward(dy)
        assert_close(xo.grad, xr.grad, atol=1e-12, what=f"step {step}: input grad")
        assert_close(ours.weight.grad, ref.weight.grad, atol=1e-12, what=f"step {step}: dweight")
        for key, value in ours.state_dict().items():
            assert_close(value, ref.state_dict()[key], atol=1e-12, what=f"step {step}: {key}")


def test_frozen_records_a_missing_bias_and_keeps_torchvisions_keys():
    frozen = bnlab.FrozenBatchNorm2d(3, bias=False)
    assert not frozen.use_bias and bnlab.FrozenBatchNorm2d(3).use_bias
    assert list(frozen.state_dict()) == list(bnlab.FrozenBatchNorm2d(3).state_dict())
    assert torch.equal(frozen.bias, torch.zeros(3))


# ------------------------------------------------------ eps and momentum: torch's leniency


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
def test_eps_zero_warns_and_training_refuses_it_as_torch_does(ours_cls, torch_cls, shape):
    with pytest.warns(UserWarning, match=r"eps=0(\.0)?: training will raise ValueError"):
        ours = ours_cls(4, eps=0.0)
    theirs = torch_cls(4, eps=0.0)
    x = torch.randn(shape)
    with pytest.raises(ValueError, match="eps must be positive"):
        theirs(x)
    with pytest.raises(ValueError, match="eps must be positive"):
        ours(x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_eps_zero_in_eval_matches_torch(dtype, assert_close):
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    with pytest.warns(UserWarning, match="eps=0"):
        ours = bnlab.BatchNorm2d(4, eps=0.0, dtype=dtype)
    theirs = nn.BatchNorm2d(4, eps=0.0, dtype=dtype)
    with torch.no_grad():
        theirs.running_mean.normal_()
        theirs.running_var.uniform_(0.01, 3)
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = torch.randn(5, 4, 3, 3, dtype=dtype)
    assert_close(ours(x), theirs(x), atol=tol, rtol=tol, what="eval output at eps=0")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_kernels_are_exact_at_eps_zero(dtype, layout, assert_close):
    """The compiled eval kernel at eps=0 (positive variances) against torch's eval batch norm."""
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    x = torch.randn(5, 4, 3, 3, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    mean, var = torch.randn(4, dtype=dtype), torch.rand(4, dtype=dtype) * 3 + 0.01
    weight, bias = torch.rand(4, dtype=dtype) + 0.5, torch.randn(4, dtype=dtype)
    y = bnlab.kernels.select(x).eval_forward(x, mean, var, weight, bias, 0.0, "identity")
    expected = F.batch_norm(x, mean, var, weight, bias, training=False, eps=0.0)
    assert_close(y, expected, atol=tol, rtol=tol, what="eval kernel output at eps=0")


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_negative_eps_warns_then_forward_raises_like_torch(ours_cls, torch_cls, shape, training):
    with pytest.warns(UserWarning, match=r"eps=-0\.001 < 0: every forward will raise"):
        ours = ours_cls(4, eps=-1e-3)
    theirs = torch_cls(4, eps=-1e-3)
    ours.train(training)
    theirs.train(training)
    x = torch.randn(shape)
    message = "eps must be positive" if training else "eps must be (positive|non-negative)"
    with pytest.raises(ValueError, match=message):
        theirs(x)
    with pytest.raises(ValueError, match=message):
        ours(x)


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("momentum", [1.5, 1.9], ids=["m1.5", "m1.9"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_momentum_above_one_warns_and_matches_torch(
    ours_cls, torch_cls, shape, momentum, dtype, assert_close
):
    """The running statistics extrapolate past each batch, exactly as torch's do (momenta
    chosen so that the running variance stays positive on these batches: above 2 it can go
    negative, and both libraries then give NaN in eval)."""
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    with pytest.warns(UserWarning, match=rf"momentum={momentum} > 1: the running statistics"):
        ours = ours_cls(4, momentum=momentum, dtype=dtype)
    theirs = torch_cls(4, momentum=momentum, dtype=dtype)
    inputs = [torch.randn(shape, dtype=dtype) * (i + 1) + i for i in range(4)]
    dy = torch.randn(shape, dtype=dtype)
    out_o, _ = _steps(ours, inputs, dy)
    out_t, _ = _steps(theirs, inputs, dy)
    assert bool((theirs.running_var > 0).all()), "the test's premise: a positive running_var"
    for key, value in theirs.state_dict().items():
        assert_close(ours.state_dict()[key], value, atol=tol, rtol=tol, what=key)
    assert_close(out_o[-1], out_t[-1], atol=tol, rtol=tol, what="eval output")


def test_warnings_point_at_the_caller():
    with pytest.warns(UserWarning) as record:
        bnlab.GhostBatchNorm2d(3, momentum=1.5)  # built through two bnlab __init__s
    assert [w.filename for w in record] == [__file__]


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
