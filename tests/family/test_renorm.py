"""Batch renormalization: a NumPy reference of Ioffe 2017's Algorithm 1, BN at rmax=1/dmax=0,
gradients against float64 autograd, the schedule, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.functional import batch_renorm
from bnlab.layers import RenormSchedule


def numpy_renorm_step(x, gamma, beta, rm, rv, momentum, eps, rmax, dmax):
    """One training step on (N, C, L) data, the textbook way, in float64 NumPy."""
    axes = (0, 2) if x.ndim == 3 else (0,)
    shape = (1, -1, 1) if x.ndim == 3 else (1, -1)
    mu = x.mean(axis=axes)
    var = ((x - mu.reshape(shape)) ** 2).mean(axis=axes)
    sigma_b = np.sqrt(var + eps)
    sigma = np.sqrt(rv + eps)
    r = np.clip(sigma_b / sigma, 1.0 / rmax, rmax)
    d = np.clip((mu - rm) / sigma, -dmax, dmax)
    xhat = (x - mu.reshape(shape)) / sigma_b.reshape(shape) * r.reshape(shape) + d.reshape(shape)
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    n = x.size // x.shape[1]
    rm_new = (1 - momentum) * rm + momentum * mu
    rv_new = (1 - momentum) * rv + momentum * var * n / (n - 1)
    return y, rm_new, rv_new


@pytest.mark.parametrize("shape", [(16, 3), (8, 4, 5)])
@pytest.mark.parametrize(("rmax", "dmax"), [(1.5, 0.5), (3.0, 5.0), (1.0, 0.0)])
def test_matches_numpy_reference_over_steps(shape, rmax, dmax, assert_close):
    rng = np.random.default_rng(1)
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.normal(size=c)
    rm_ref, rv_ref = np.zeros(c), np.ones(c)
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for step in range(5):
        # Shifted, scaled data so that r and d hit their clipping limits in some channels.
        x = rng.normal(size=shape) * rng.uniform(0.2, 4.0, (1, c) + (1,) * (len(shape) - 2))
        x = x + rng.normal(scale=3.0, size=(1, c) + (1,) * (len(shape) - 2))
        y_ref, rm_ref, rv_ref = numpy_renorm_step(
            x, gamma, beta, rm_ref, rv_ref, 0.1, 1e-5, rmax, dmax
        )
        y = batch_renorm(
            torch.tensor(x),
            rm,
            rv,
            torch.tensor(gamma),
            torch.tensor(beta),
            training=True,
            rmax=rmax,
            dmax=dmax,
        )
        assert_close(y, y_ref, atol=1e-10, what=f"y step {step}")
        assert_close(rm, rm_ref, atol=1e-12, what=f"running_mean step {step}")
        assert_close(rv, rv_ref, atol=1e-12, what=f"running_var step {step}")


def test_float32_matches_numpy(assert_close):
    rng = np.random.default_rng(2)
    x = rng.normal(2.0, 3.0, size=(32, 6))
    rm0, rv0 = rng.normal(size=6), rng.uniform(0.5, 2.0, 6)
    y_ref, _, _ = numpy_renorm_step(x, np.ones(6), np.zeros(6), rm0, rv0, 0.1, 1e-5, 2.0, 1.0)
    y = batch_renorm(
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(rm0, dtype=torch.float32),
        torch.tensor(rv0, dtype=torch.float32),
        training=True,
        rmax=2.0,
        dmax=1.0,
    )
    assert y.dtype == torch.float32
    assert_close(y, y_ref, atol=1e-5, what="float32 y")


@pytest.mark.parametrize("shape", [(10, 3), (6, 4, 7), (4, 3, 5, 5)])
def test_rmax_1_dmax_0_is_batch_norm(shape, assert_close):
    """Output, every gradient and the running statistics equal torch's BN."""
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    w = torch.rand(shape[1]).add(0.5).requires_grad_()
    b = torch.randn(shape[1]).requires_grad_()
    rm, rv = torch.randn(shape[1]), torch.rand(shape[1]) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    y = batch_renorm(x, rm, rv, w, b, training=True, rmax=1.0, dmax=0.0)
    y_ref = F.batch_norm(x, rm2, rv2, w, b, training=True)
    assert_close(y, y_ref, atol=1e-5, what="y")
    assert_close(rm, rm2, atol=1e-6, what="running_mean")
    assert_close(rv, rv2, atol=1e-6, what="running_var")
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, g, g_ref in zip(("dx", "dweight", "dbias"), grads, grads_ref, strict=True):
        assert_close(g, g_ref, atol=1e-4, what=name)


def test_gradients_match_float64_autograd_with_r_d_constant(assert_close):
    """The backward treats r and d as constants (the paper's stop_gradient)."""
    x = (torch.randn(12, 3, 4, dtype=torch.float64) * 2 + 3).requires_grad_()
    w = torch.rand(3, dtype=torch.float64).add(0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).requires_grad_()
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.full((3,), 0.3, dtype=torch.float64)
    eps, rmax, dmax = 1e-5, 2.0, 1.0
    y = batch_renorm(x, rm.clone(), rv.clone(), w, b, True, eps=eps, rmax=rmax, dmax=dmax)

    mu = x.mean((0, 2))
    var = x.var((0, 2), unbiased=False)
    sigma_b = torch.sqrt(var + eps)
    sigma = torch.sqrt(rv + eps)
    r = (sigma_b / sigma).clamp(1 / rmax, rmax).detach()
    d = ((mu - rm) / sigma).clamp(-dmax, dmax).detach()
    v = lambda t: t.view(1, -1, 1)  # noqa: E731
    y_ref = ((x - v(mu)) / v(sigma_b) * v(r) + v(d)) * v(w) + v(b)
    assert bool((r != 1).any()) and bool((d != 0).any()), "the test must exercise r and d"
    assert_close(y, y_ref, atol=1e-12, what="y")
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, g, g_ref in zip(("dx", "dweight", "dbias"), grads, grads_ref, strict=True):
        assert_close(g, g_ref, atol=1e-10, what=name)


def test_layer_eval_is_batch_norm_eval(assert_close):
    layer = bnlab.BatchRenorm2d(4)
    for _ in range(3):
        layer(torch.randn(8, 4, 5, 5) * 2 + 1)
    layer.eval()
    x = torch.randn(3, 4, 5, 5)
    ref = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False)
    assert_close(layer(x), ref, atol=1e-6, what="eval output")
    assert int(layer.num_batches_tracked) == 3


def test_schedule_relaxes_from_bn():
    s = RenormSchedule(rmax=3.0, dmax=5.0, warmup_steps=10, relax_steps=20)
    assert s(0) == (1.0, 0.0) and s(9) == (1.0, 0.0)
    assert s(10) == (1.0, 0.0)
    assert s(20) == pytest.approx((2.0, 2.5))
    assert s(30) == (3.0, 5.0) and s(10_000) == (3.0, 5.0)


def test_layer_follows_schedule_and_is_bn_during_warmup(assert_close):
    torch.manual_seed(3)
    renorm = bnlab.BatchRenorm1d(3, warmup_steps=2, relax_steps=4, rmax=2.0, dmax=1.0)
    bn = torch.nn.BatchNorm1d(3)
    for step in range(2):
        x = torch.randn(8, 3) * 3 + step
        assert renorm.current_limits() == (1.0, 0.0)
        assert_close(renorm(x), bn(x), atol=1e-5, what=f"warm-up step {step}")
    assert renorm.current_limits() == (1.0, 0.0)
    renorm(torch.randn(8, 3))
    assert renorm.current_limits() == pytest.approx((1.25, 0.25))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rmax": 0.5}, "rmax must be >= 1"),
        ({"dmax": -1.0}, "dmax must be >= 0"),
        ({"rmax": float("nan")}, "rmax must be >= 1"),
    ],
)
def test_bad_limits_are_refused(kwargs, match):
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=match):
        batch_renorm(x, torch.zeros(3), torch.ones(3), training=True, **kwargs)
    with pytest.raises(ValueError, match=match):
        bnlab.BatchRenorm1d(3, **kwargs)


def test_running_statistics_are_required():
    with pytest.raises(ValueError, match="needs running_mean and running_var"):
        batch_renorm(torch.randn(4, 3), None, None, training=True)  # type: ignore[arg-type]
