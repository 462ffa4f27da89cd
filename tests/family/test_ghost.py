"""Ghost batch norm: equal to torch's BN applied chunk by chunk; running statistics as
documented (average of the virtual batches' means and unbiased variances); errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.functional import ghost_batch_norm

CASES = [((12, 3), 4), ((12, 3), 12), ((8, 4, 5), 2), ((6, 3, 4, 5), 3), ((4, 2, 3, 4, 3), 2)]


@pytest.mark.parametrize(("shape", "k"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_bn_chunk_by_chunk(shape, k, dtype, assert_close):
    x = (
        torch.randn(shape, dtype=dtype) * 2
        + torch.arange(shape[0], dtype=dtype).view(-1, *([1] * (len(shape) - 1)))
    ).requires_grad_()
    w = torch.rand(shape[1], dtype=dtype).add(0.5).requires_grad_()
    b = torch.randn(shape[1], dtype=dtype).requires_grad_()
    y = ghost_batch_norm(x, None, None, w, b, training=True, virtual_batch_size=k)
    y_ref = torch.cat([F.batch_norm(c, None, None, w, b, training=True) for c in x.split(k)])
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert_close(y, y_ref, atol=tol, what="y")
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, g, g_ref in zip(("dx", "dweight", "dbias"), grads, grads_ref, strict=True):
        assert_close(g, g_ref, atol=tol * 10, what=name)


def test_channels_last_kept(assert_close):
    x = torch.randn(8, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    y = ghost_batch_norm(x, None, None, training=True, virtual_batch_size=4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y_ref = torch.cat([F.batch_norm(c, None, None, training=True) for c in x.split(4)])
    assert_close(y, y_ref, atol=1e-5, what="y")


def test_running_statistics_definition(assert_close):
    """mean: average of the virtual means; var: average of the virtual unbiased variances."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3, 5)) * 2 + 1
    k, momentum = 4, 0.3
    chunks = x.reshape(3, 4, 3, 5)
    means = chunks.mean(axis=(1, 3))  # (G, C)
    unbiased = chunks.var(axis=(1, 3), ddof=1)
    rm_ref = (1 - momentum) * 0.0 + momentum * means.mean(0)
    rv_ref = (1 - momentum) * 1.0 + momentum * unbiased.mean(0)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ghost_batch_norm(torch.tensor(x), rm, rv, None, None, True, momentum, virtual_batch_size=k)
    assert_close(rm, rm_ref, atol=1e-12, what="running_mean")
    assert_close(rv, rv_ref, atol=1e-12, what="running_var")
    assert_close(rm, momentum * x.mean(axis=(0, 2)), atol=1e-12, what="= full-batch mean")


def test_layer_train_and_eval(assert_close):
    layer = bnlab.GhostBatchNorm2d(3, virtual_batch_size=2)
    x = torch.randn(6, 3, 4, 4)
    y = layer(x)
    y_ref = torch.cat([F.batch_norm(c, None, None, training=True, eps=1e-5) for c in x.split(2)])
    assert_close(y, y_ref, atol=1e-5, what="train")
    assert int(layer.num_batches_tracked) == 1
    layer.eval()
    ref = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False)
    assert_close(layer(x), ref, atol=1e-6, what="eval = BN with running statistics")
    assert "virtual_batch_size=2" in repr(layer)


def test_batch_not_divisible_is_refused():
    layer = bnlab.GhostBatchNorm1d(3, virtual_batch_size=4)
    with pytest.raises(
        ValueError, match=r"batch size \(10\) must be a multiple of virtual_batch_size \(4\)"
    ):
        layer(torch.randn(10, 3))
    layer.eval()
    assert layer(torch.randn(10, 3)).shape == (10, 3)  # eval has no virtual batches


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_bad_virtual_batch_size(k):
    with pytest.raises(ValueError, match="virtual_batch_size must be a positive int"):
        bnlab.GhostBatchNorm1d(3, virtual_batch_size=k)


def test_virtual_batch_of_one_sample_without_spatial_is_refused():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ghost_batch_norm(torch.randn(4, 3), None, None, training=True, virtual_batch_size=1)
