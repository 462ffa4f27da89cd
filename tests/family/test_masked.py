"""Masked batch norm: statistics over the selected positions equal BN over them; full
gradients against float64 autograd; running statistics; errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bnlab
from bnlab.functional import masked_batch_norm


def padded_batch(n=6, c=3, length=7, dtype=torch.float32):
    lengths = torch.tensor([7, 3, 5, 1, 6, 4])[:n]
    x = torch.randn(n, c, length, dtype=dtype) * 2 + 1
    mask = torch.arange(length)[None, :] < lengths[:, None]
    x = x.masked_fill(~mask[:, None, :], 100.0)  # padding that would ruin the statistics
    return x, mask


def test_equals_bn_over_selected_positions(assert_close):
    x, mask = padded_batch()
    x.requires_grad_()
    w = torch.rand(3).add(0.5).requires_grad_()
    b = torch.randn(3).requires_grad_()
    rm, rv = torch.zeros(3), torch.ones(3)
    y = masked_batch_norm(x, mask, rm, rv, w, b, training=True, momentum=0.2)

    selected = x.movedim(1, -1)[mask]  # (M, C)
    rm_ref, rv_ref = torch.zeros(3), torch.ones(3)
    y_ref = F.batch_norm(selected, rm_ref, rv_ref, w, b, training=True, momentum=0.2)
    assert_close(y.movedim(1, -1)[mask], y_ref, atol=1e-5, what="selected outputs")
    assert_close(rm, rm_ref, atol=1e-6, what="running_mean")
    assert_close(rv, rv_ref, atol=1e-5, what="running_var (unbiased over M)")
    # A loss on the real positions only: gradients equal BN's over the selection.
    dy = torch.randn_like(y_ref)
    loss = (y.movedim(1, -1)[mask] * dy).sum()
    grads = torch.autograd.grad(loss, (x, w, b))
    grads_ref = torch.autograd.grad((y_ref * dy).sum(), (x, w, b))
    assert_close(grads[0], grads_ref[0], atol=1e-5, what="dx (zero at padded positions)")
    assert_close(grads[1], grads_ref[1], atol=1e-4, what="dweight")
    assert_close(grads[2], grads_ref[2], atol=1e-5, what="dbias")


def test_all_positions_normalized_and_full_gradients_match_float64_autograd(assert_close):
    """Padded outputs are normalized with the masked statistics (as Keras and Flax do), and a
    loss over every position gets the exact gradient."""
    x, mask = padded_batch(dtype=torch.float64)
    x.requires_grad_()
    w = torch.rand(3, dtype=torch.float64).add(0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).requires_grad_()
    eps = 1e-5
    y = masked_batch_norm(x, mask, None, None, w, b, training=True, eps=eps)
    m = mask[:, None, :].to(x.dtype)
    count = m.sum() * 1.0
    mean = (x * m).sum((0, 2)) / count
    var = (((x - mean.view(1, -1, 1)) * m) ** 2).sum((0, 2)) / count
    y_ref = (x - mean.view(1, -1, 1)) / torch.sqrt(var.view(1, -1, 1) + eps) * w.view(
        1, -1, 1
    ) + b.view(1, -1, 1)
    assert_close(y, y_ref, atol=1e-10, what="y, every position")
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    for name, g, g_ref in zip(("dx", "dweight", "dbias"), grads, grads_ref, strict=True):
        assert_close(g, g_ref, atol=1e-9, what=name)


def test_layer(assert_close):
    x, mask = padded_batch()
    layer = bnlab.MaskedBatchNorm1d(3)
    y = layer(x, mask)
    ref = F.batch_norm(x.movedim(1, -1)[mask], None, None, training=True)
    assert_close(y.movedim(1, -1)[mask], ref, atol=1e-5, what="train")
    assert int(layer.num_batches_tracked) == 1
    assert_close(
        layer(x), F.batch_norm(x, None, None, training=True), atol=1e-5, what="no mask = BN"
    )
    layer.eval()
    ev = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False)
    assert_close(layer(x, mask), ev, atol=1e-5, what="eval ignores the mask")


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (torch.ones(6, 6, dtype=torch.bool), ValueError, r"mask must have the input's shape"),
        (torch.ones(6, 3, 7, dtype=torch.bool), ValueError, r"got mask of shape \(6, 3, 7\)"),
        (torch.ones(6, 7), TypeError, "dtype torch.bool"),
        ([[True] * 7] * 6, TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_mask(mask, error, match):
    x = torch.randn(6, 3, 7)
    with pytest.raises(error, match=match):
        masked_batch_norm(x, mask, None, None, training=True)
    with pytest.raises(error, match=match):
        bnlab.MaskedBatchNorm1d(3)(x, mask)


def test_too_few_selected_positions():
    x = torch.randn(2, 3, 4)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match="at least 2 selected positions"):
        masked_batch_norm(x, mask, None, None, training=True)
