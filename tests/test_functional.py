"""bnlab.functional.batch_norm against torch.nn.functional.batch_norm and the textbook version."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlab.functional as BF
from bnlab.functional import running_stats
from bnlab.kernels import reference

SHAPES = {
    "NC": (8, 3),
    "NCL": (6, 4, 5),
    "NCHW": (4, 3, 5, 6),
    "NCDHW": (3, 2, 3, 4, 5),
}
# (shape name, channels_last): channels_last exists for 4D and 5D inputs only.
LAYOUTS = [(name, False) for name in SHAPES] + [("NCHW", True), ("NCDHW", True)]
LAYOUT_IDS = [f"{name}{'-channels_last' if cl else ''}" for name, cl in LAYOUTS]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_input(shape, dtype, channels_last=False):
    x = torch.randn(shape, dtype=torch.float64) * 2.0 + 0.5
    x = x.to(dtype)
    if channels_last:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    return x


def run_both(x, weight, bias, training, rm=None, rv=None, momentum=0.1, eps=1e-5):
    """Forward and backward through bnlab and torch with identical inputs; returns both results."""
    results = []
    for fn in (BF.batch_norm, F.batch_norm):
        xi = x.detach().clone().requires_grad_(True)
        wi = None if weight is None else weight.detach().clone().requires_grad_(True)
        bi = None if bias is None else bias.detach().clone().requires_grad_(True)
        rmi = None if rm is None else rm.clone()
        rvi = None if rv is None else rv.clone()
        y = fn(xi, rmi, rvi, wi, bi, training=training, momentum=momentum, eps=eps)
        dy = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        y.backward(dy)
        results.append(
            {
                "y": y,
                "dx": xi.grad,
                "dw": None if wi is None else wi.grad,
                "db": None if bi is None else bi.grad,
                "rm": rmi,
                "rv": rvi,
            }
        )
    return results


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize(("layout", "channels_last"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_torch(dtype, layout, channels_last, affine, training, assert_close):
    shape = SHAPES[layout]
    c = shape[1]
    x = make_input(shape, dtype, channels_last)
    weight = torch.rand(c, dtype=dtype) + 0.5 if affine else None
    bias = torch.randn(c, dtype=dtype) if affine else None
    stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    rm = torch.randn(c, dtype=stat_dtype)
    rv = torch.rand(c, dtype=stat_dtype) + 0.5
    ours, theirs = run_both(x, weight, bias, training, rm, rv)
    tol = TOL[dtype]
    for key in ("y", "dx", "dw", "db", "rm", "rv"):
        if theirs[key] is None:
            assert ours[key] is None, key
            continue
        assert ours[key].dtype == theirs[key].dtype, key
        assert_close(ours[key], theirs[key], atol=tol, rtol=tol, what=key)
    if channels_last:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        assert ours["y"].is_contiguous(memory_format=fmt), "output lost channels_last"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_accumulate_in_float32(dtype, assert_close):
    x = make_input((16, 4, 6, 6), torch.float32)
    rm, rv = torch.zeros(4), torch.ones(4)
    y = BF.batch_norm(x.to(dtype), rm, rv, training=True)
    assert y.dtype == dtype
    assert rm.dtype == torch.float32 and rv.dtype == torch.float32
    rm_ref, rv_ref = torch.zeros(4), torch.ones(4)
    y_ref = F.batch_norm(x.to(dtype).float(), rm_ref, rv_ref, training=True)
    assert_close(y, y_ref, atol=3e-2, rtol=1e-2, what="low-precision output")
    assert_close(rm, rm_ref, atol=1e-6, what="running_mean (float32)")
    assert_close(rv, rv_ref, atol=1e-6, what="running_var (float32)")


def test_matches_numpy_textbook_version(assert_close):
    x = make_input((7, 3, 4), torch.float64)
    gamma, beta = torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64)
    dy = torch.randn(x.shape, dtype=torch.float64)
    xt, gt, bt = (t.clone().requires_grad_(True) for t in (x, gamma, beta))
    y = BF.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-3)
    y.backward(dy)
    y_ref, _, _, cache = reference.forward(x.numpy(), gamma.numpy(), beta.numpy(), eps=1e-3)
    dx_ref, dg_ref, db_ref = reference.backward(dy.numpy(), cache)
    assert_close(y, y_ref, atol=1e-12, what="output")
    assert_close(xt.grad, dx_ref, atol=1e-12, what="dx")
    assert_close(gt.grad, dg_ref, atol=1e-12, what="dgamma")
    assert_close(bt.grad, db_ref, atol=1e-12, what="dbeta")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck(training):
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5

    def fn(x, w, b):
        return BF.batch_norm(x, rm.clone(), rv.clone(), w, b, training=training)

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_double_backward_matches_torch(assert_close):
    """create_graph=True works (recomputed with torch ops; see test_script_trace_vmap.py)."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(
        BF.batch_norm(x, None, None, training=True).pow(3).sum(), x, create_graph=True
    )
    (g_ref,) = torch.autograd.grad(
        F.batch_norm(x_ref, None, None, training=True).pow(3).sum(), x_ref, create_graph=True
    )
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    (gg_ref,) = torch.autograd.grad(g_ref.square().sum(), x_ref)
    assert_close(gg, gg_ref, atol=1e-10, what="second derivative")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 6),
    c=st.integers(1, 5),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    training=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]),
    momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_property_random_shapes(n, c, spatial, training, eps, momentum):
    shape = (n, c, *spatial)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    w, b = torch.rand(c, dtype=torch.float64) + 0.1, torch.randn(c, dtype=torch.float64)
    rm, rv = torch.randn(c, dtype=torch.float64), torch.rand(c, dtype=torch.float64) + 0.1
    ours, theirs = run_both(x, w, b, training, rm, rv, momentum=momentum, eps=eps)
    for key in ("y", "dx", "dw", "db", "rm", "rv"):
        diff = (ours[key] - theirs[key]).abs().max().item()
        assert diff < 1e-9, f"{key}: max |difference| {diff:.3e} for shape {shape}"


def test_large_offset_variance_is_accurate():
    torch.manual_seed(3)
    x = (1e4 + torch.randn(512, 2, 16)).float()
    rm, rv = torch.zeros(2), torch.ones(2)
    BF.batch_norm(x, rm, rv, training=True, momentum=1.0)
    true_var = x.double().var(dim=(0, 2), unbiased=True)
    rel = ((rv.double() - true_var).abs() / true_var).max().item()
    assert rel < 1e-3, f"running_var relative error {rel:.3e}"


def test_constant_channel_gives_beta_without_nan():
    x = torch.full((8, 2, 3), 7.0)
    bias = torch.tensor([0.25, -1.5])
    y = BF.batch_norm(x, None, None, torch.ones(2), bias, training=True)
    assert not torch.isnan(y).any()
    assert torch.equal(y, bias.view(1, 2, 1).expand_as(y))


def test_non_finite_batch_leaves_running_stats_and_warns_once(monkeypatch):
    monkeypatch.setattr(running_stats, "_warned_non_finite", False)
    rm, rv = torch.tensor([0.5, 1.0]), torch.tensor([2.0, 3.0])
    count = torch.tensor(4)
    x = torch.randn(6, 2)
    x[2, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match="not finite"):
        y = BF.batch_norm(x, rm, rv, training=True, num_batches_tracked=count)
    assert torch.isnan(y[:, 1]).all() and torch.isfinite(y[:, 0]).all(), "output follows the math"
    assert torch.equal(rm, torch.tensor([0.5, 1.0])) and torch.equal(rv, torch.tensor([2.0, 3.0]))
    assert count.item() == 4, "a skipped batch is not counted"
    x[2, 1] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second bad batch must not warn again
        BF.batch_norm(x, rm, rv, training=True)
    assert torch.equal(rm, torch.tensor([0.5, 1.0]))


def test_cumulative_average_with_momentum_none(assert_close):
    rm, rv, count = (
        torch.zeros(3, dtype=torch.float64),
        torch.ones(3, dtype=torch.float64),
        torch.tensor(0),
    )
    batches = [torch.randn(5 + i, 3, dtype=torch.float64) for i in range(4)]
    for xb in batches:
        BF.batch_norm(xb, rm, rv, training=True, momentum=None, num_batches_tracked=count)
    assert count.item() == 4
    means = torch.stack([b.mean(0) for b in batches]).mean(0)
    vars_ = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    assert_close(rm, means, atol=1e-12, what="cumulative running_mean")
    assert_close(rv, vars_, atol=1e-12, what="cumulative running_var")


def test_empty_batch_returns_empty_output_and_keeps_stats():
    rm, rv = torch.zeros(3), torch.ones(3)
    x = torch.randn(0, 3, 4, requires_grad=True)
    y = BF.batch_norm(x, rm, rv, torch.ones(3), torch.zeros(3), training=True)
    assert y.shape == (0, 3, 4)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


def test_non_contiguous_input(assert_close):
    base = torch.randn(6, 8, 5, dtype=torch.float64)
    x = base[:, ::2, :]  # every other channel: a strided, non-contiguous view
    assert not x.is_contiguous()
    y = BF.batch_norm(x, None, None, training=True)
    assert_close(y, F.batch_norm(x, None, None, training=True), atol=1e-12, what="strided input")
    expanded = torch.randn(1, 3, 4, dtype=torch.float64).expand(5, 3, 4)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = BF.batch_norm(expanded, rm, rv, training=False)
    assert_close(y, F.batch_norm(expanded, rm, rv, training=False), atol=1e-12, what="expanded")


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"input": torch.randn(4)}, ValueError, r"expected 2D to 5D input .* got 1D"),
        ({"input": torch.randn(2, 3, 1, 1, 1, 1)}, ValueError, "got 6D input"),
        ({"input": torch.ones(4, 3, dtype=torch.long)}, TypeError, "floating-point input.*int64"),
        ({"running_mean": torch.zeros(4)}, ValueError, r"running_mean should have 3 elements"),
        ({"weight": torch.ones(2)}, ValueError, r"weight should have 3 elements"),
        ({"eps": 0.0}, ValueError, "eps must be positive"),  # in training, as torch
        ({"eps": -1e-5}, ValueError, "eps must be positive"),
        ({"momentum": float("nan")}, ValueError, "momentum must be finite"),
        ({"momentum": -0.1}, ValueError, "momentum must be >= 0 or None"),
        ({"input": torch.randn(1, 3)}, ValueError, "Expected more than 1 value per channel"),
        ({"input": torch.randn(1, 3, 1, 1)}, ValueError, "Expected more than 1 value per channel"),
        (
            {"training": False, "running_mean": None, "running_var": None},
            ValueError,
            "must be given in evaluation mode",
        ),
    ],
    ids=[
        "rank1",
        "rank6",
        "integer",
        "running_mean_size",
        "weight_size",
        "eps_zero",
        "eps_negative",
        "momentum_nan",
        "momentum_low",
        "one_value_NC",
        "one_value_NCHW",
        "eval_without_stats",
    ],
)
def test_bad_input_errors(kwargs, exc, message):
    args = {
        "input": torch.randn(4, 3),
        "running_mean": torch.zeros(3),
        "running_var": torch.ones(3),
        "training": True,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        BF.batch_norm(**args)


def test_one_value_per_channel_is_fine_in_eval(assert_close):
    x = torch.randn(1, 3, dtype=torch.float64)
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    y = BF.batch_norm(x, rm, rv, training=False)
    assert_close(y, F.batch_norm(x, rm, rv, training=False), atol=1e-12, what="eval N=1")


def test_never_calls_torch_batch_norm(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch batch norm was called")

    monkeypatch.setattr(torch, "batch_norm", forbidden)
    monkeypatch.setattr(torch, "native_batch_norm", forbidden)
    monkeypatch.setattr(F, "batch_norm", forbidden)
    x = torch.randn(4, 3, 5, requires_grad=True)
    w = torch.ones(3, requires_grad=True)
    y = BF.batch_norm(x, torch.zeros(3), torch.ones(3), w, torch.zeros(3), training=True)
    y.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()
