"""The layers' eager fast path: whatever changes between calls, the checks still happen.

The eager forward reads parameters and buffers from the module's registries and skips the full
argument checks when cheap ones pass; these tests change the layer after a first call and expect
exactly what a fresh layer would do (same errors, same results as torch).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import bnlab


def _pair(c: int = 6) -> tuple[nn.BatchNorm2d, bnlab.BatchNorm2d]:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(c)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    ours = bnlab.BatchNorm2d(c)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_replaced_parameter_of_wrong_shape_raises(name):
    _, layer = _pair()
    x = torch.randn(4, 6, 3, 3)
    layer(x)
    setattr(layer, name, nn.Parameter(torch.ones(5)))
    with pytest.raises(ValueError, match=rf"{name} should have 6 elements .*got shape \(5,\)"):
        layer(x)


@pytest.mark.parametrize("training", [True, False])
def test_resized_data_and_buffers_raise(training):
    _, layer = _pair()
    layer.train(training)
    x = torch.randn(4, 6, 3, 3)
    layer(x)
    layer.weight.data = torch.ones(2, 3)  # same Parameter object, new shape
    with pytest.raises(ValueError, match=r"weight should have 6 elements .*got shape \(2, 3\)"):
        layer(x)
    layer.weight.data = torch.ones(6)
    layer.running_var = torch.ones(7)
    with pytest.raises(ValueError, match=r"running_var should have 6 elements"):
        layer(x)


def test_double_after_first_call_matches_torch(assert_close):
    ref, ours = _pair()
    x = torch.randn(4, 6, 3, 3)
    ours(x), ref(x)
    ref.double(), ours.double()
    xd = x.double().requires_grad_(True)
    y_ref, y = ref(xd), ours(xd)
    assert y.dtype == torch.float64
    assert_close(y, y_ref, atol=1e-10, what="output")
    assert_close(ours.running_mean, ref.running_mean, atol=1e-6, what="running_mean")
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), xd)
    (g,) = torch.autograd.grad(y.square().sum(), xd)
    assert_close(g, g_ref, atol=1e-9, what="grad")


def test_parametrized_weight_is_used():
    class Double(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    ref, ours = _pair()
    x = torch.randn(4, 6, 3, 3)
    ours.eval(), ref.eval()
    before = ours(x)
    parametrize.register_parametrization(ours, "weight", Double())
    parametrize.register_parametrization(ref, "weight", Double())
    y = ours(x)
    torch.testing.assert_close(y, ref(x))
    assert not torch.allclose(y, before)


def test_eps_and_momentum_changed_after_first_call():
    _, layer = _pair()
    x = torch.randn(4, 6, 3, 3)
    layer(x)
    layer.eps = 0.0
    with pytest.raises(ValueError, match="eps must be positive during training"):
        layer(x)
    layer.eval()
    layer(x)  # eps = 0 is allowed in evaluation, as in torch
    layer.train()
    layer.eps, layer.momentum = 1e-5, float("nan")
    with pytest.raises(ValueError, match="momentum must be finite"):
        layer(x)
    layer.momentum, layer.num_batches_tracked = None, None
    with pytest.raises(ValueError, match="needs num_batches_tracked"):
        layer(x)


def test_one_value_per_channel_and_missing_statistics():
    _, layer = _pair()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        layer(torch.randn(1, 6, 1, 1))
    layer.eval()
    layer.running_var = None
    with pytest.raises(ValueError, match="running_mean and running_var must be given"):
        layer(torch.randn(2, 6, 1, 1))


@pytest.mark.parametrize("training", [True, False])
def test_autograd_output_and_gradients_match_torch(training, assert_close):
    ref, ours = _pair()
    ref.train(training), ours.train(training)
    x = torch.randn(4, 6, 3, 3, requires_grad=True)
    y_ref, y = ref(x), ours(x)
    assert type(y.grad_fn).__name__ == "BatchNormFunctionBackward"
    grads_ref = torch.autograd.grad(y_ref.square().sum(), (x, ref.weight, ref.bias))
    grads = torch.autograd.grad(y.square().sum(), (x, ours.weight, ours.bias))
    for g, g_ref, what in zip(grads, grads_ref, ("x", "weight", "bias"), strict=True):
        assert_close(g, g_ref, atol=1e-4, rtol=1e-4, what=f"grad of {what}")
    assert_close(ours.running_var, ref.running_var, atol=1e-6, what="running_var")


def test_eval_graph_keeps_its_statistics_when_a_training_step_updates_them(assert_close):
    """An eval forward with grad, then a training forward of the same layer (which updates the
    running statistics in place), then the eval graph's backward: the gradient is the one of
    the statistics the eval forward used."""
    layer = bnlab.BatchNorm2d(3)
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        for m in (layer, ref):
            m.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
            m.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    dy = torch.randn(4, 3, 5, 5)
    layer.eval()
    y = layer(x)
    layer.train()
    layer(torch.randn(4, 3, 5, 5) * 3 + 7)  # moves running_mean and running_var in place
    dx, dw = torch.autograd.grad(y, (x, layer.weight), dy)
    ref.eval()
    dx_ref, dw_ref = torch.autograd.grad(ref(x), (x, ref.weight), dy)
    assert_close(dx, dx_ref, atol=1e-6, rtol=1e-5, what="dx of the eval graph")
    assert_close(dw, dw_ref, atol=1e-5, rtol=1e-5, what="dweight of the eval graph")
