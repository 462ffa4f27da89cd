"""batch_norm_act and BatchNormAct1d/2d against float64 torch batch norm + activation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab import kernels
from bnlab.functional import batch_norm_act

ACT = {"relu": torch.relu, "silu": F.silu, "hardswish": F.hardswish, "identity": lambda t: t}
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 1e-5)}


@pytest.fixture(params=["cpu", "portable"])
def backend(request):
    previous = kernels.set_backend(request.param)
    try:
        yield request.param
    finally:
        kernels.set_backend(previous)


@pytest.mark.parametrize("activation", ["relu", "silu", "hardswish", "identity"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("shape", "fmt"),
    [
        ((9, 5), None),
        ((4, 3, 6, 5), None),
        ((4, 3, 6, 5), torch.channels_last),
        ((4, 6, 6, 5), None),  # CPU family: one task per channel (cpu._by_channel)
        ((600, 4, 24, 24), None),  # channels above cpu_entries.CHANNEL_BYTES: split in tasks
        ((16, 12, 4, 4), None),  # CPU family: the cols view (cpu.COLS_MAX_SPATIAL_TRAIN)
        ((8, 5, 10, 10), None),  # the cols view in eval only (cpu.COLS_MAX_SPATIAL_NORMALIZE)
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_matches_torch_bn_then_activation(
    backend, activation, dtype, shape, fmt, training, assert_close
):
    atol, rtol = TOL[dtype]
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    c = shape[1]
    w, b = torch.randn(c, dtype=dtype), torch.randn(c, dtype=dtype)
    rm, rv = torch.randn(c, dtype=dtype), torch.rand(c, dtype=dtype) + 0.5
    rm_r, rv_r = rm.double().clone(), rv.double().clone()
    xb, wb, bb = (t.clone().requires_grad_() for t in (x, w, b))
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = batch_norm_act(xb, rm, rv, wb, bb, training, activation=activation)
    yr = ACT[activation](F.batch_norm(xr, rm_r, rv_r, wr, br, training))
    assert_close(y, yr, atol=atol, rtol=rtol, what="output")
    if fmt is not None:
        assert y.is_contiguous(memory_format=fmt)
    dy = torch.randn(shape, dtype=torch.float64)
    y.backward(dy.to(dtype))
    yr.backward(dy)
    m = x.numel() // c
    assert_close(xb.grad, xr.grad, atol=atol, rtol=rtol, what="dx")
    assert_close(wb.grad, wr.grad, atol=atol * m, rtol=rtol, what="dweight")
    assert_close(bb.grad, br.grad, atol=atol * m, rtol=rtol, what="dbias")
    assert_close(rm, rm_r, atol=atol, rtol=rtol, what="running_mean")
    assert_close(rv, rv_r, atol=atol, rtol=rtol, what="running_var")


def test_relu_output_is_nonnegative_and_forward_saves_only_x():
    x = torch.randn(8, 4, 5, 5, requires_grad=True)
    y = batch_norm_act(x, None, None, training=True, activation="relu")
    assert bool((y >= 0).all())
    big = [t for t in y.grad_fn.saved_tensors if t is not None and t.numel() == x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()


@pytest.mark.parametrize(
    ("act", "fused"),
    [
        (torch.nn.ReLU(inplace=True), True),
        (torch.nn.SiLU(), True),
        (torch.nn.Hardswish(inplace=True), True),
        (torch.nn.GELU(), False),
    ],
)
def test_layer_fuses_relu_silu_hardswish(act, fused):
    """A fused layer's output comes from the one batch-norm node (which saves only x); an
    unfused one's from the activation's own node after it."""
    layer = bnlab.BatchNormAct2d(4, activation=act)
    x = torch.randn(8, 4, 5, 5, requires_grad=True)
    y = layer(x)
    assert ("BatchNorm" in type(y.grad_fn).__name__) is fused, type(y.grad_fn).__name__


def test_bad_activation_is_rejected():
    with pytest.raises(ValueError, match="activation must be one of"):
        batch_norm_act(torch.randn(4, 3), None, None, training=True, activation="gelu")
    with pytest.raises(ValueError, match="activation must be one of"):
        bnlab.BatchNormAct2d(3, activation="tanh")


@pytest.mark.parametrize("activation", ["relu", "silu", "hardswish"])
def test_layer_equals_batchnorm_then_activation(activation, assert_close):
    layer = bnlab.BatchNormAct2d(6, activation=activation)
    ref = torch.nn.BatchNorm2d(6)
    assert set(layer.state_dict()) == set(ref.state_dict())
    with torch.no_grad():
        layer.weight.copy_(torch.randn(6))
        layer.bias.copy_(torch.randn(6))
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, 6, 4, 4)
    for _ in range(3):
        assert_close(layer(x), ACT[activation](ref(x)), atol=2e-5, rtol=1e-5, what="train")
    assert int(layer.num_batches_tracked) == 3
    assert_close(layer.running_var, ref.running_var, atol=1e-6, rtol=1e-5, what="running_var")
    layer.eval()
    ref.eval()
    assert_close(layer(x), ACT[activation](ref(x)), atol=2e-5, rtol=1e-5, what="eval")
    assert f"(act): {type(layer.act).__name__}()" in repr(layer)


def test_layer1d_and_input_checks(assert_close):
    layer = bnlab.BatchNormAct1d(4)
    x = torch.randn(10, 4, 3)
    assert_close(layer(x), torch.relu(F.batch_norm(x, None, None, training=True)), atol=2e-5)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        layer(torch.randn(2, 4, 3, 3))
    layer2 = bnlab.BatchNormAct2d(4, track_running_stats=False).eval()
    x4 = torch.randn(3, 4, 2, 2)
    assert_close(layer2(x4), torch.relu(F.batch_norm(x4, None, None, training=True)), atol=2e-5)
