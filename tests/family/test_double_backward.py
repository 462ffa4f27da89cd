"""The BN family's ops other than batch_norm have closed-form backward passes that are not
differentiable themselves: under create_graph=True they refuse, naming the op, instead of
returning wrong second derivatives."""

from __future__ import annotations

import pytest
import torch

from bnlab.functional import batch_renorm, ghost_batch_norm, masked_batch_norm
from bnlab.keras_conventions import keras_batch_norm


def _ops():
    c = 3
    rm, rv = torch.zeros(c), torch.ones(c)
    mask = torch.ones(4, 5, dtype=torch.bool)
    return {
        "ghost_batch_norm": lambda x: ghost_batch_norm(
            x, rm, rv, training=True, virtual_batch_size=2
        ),
        "batch_renorm": lambda x: batch_renorm(x, rm, rv, training=True),
        "masked_batch_norm": lambda x: masked_batch_norm(x, mask, rm, rv, training=True),
        "Keras's": lambda x: keras_batch_norm(x, None, None, rm, rv, training=True, axis=1),
    }


@pytest.mark.parametrize("name", list(_ops()))
def test_double_backward_is_refused_with_the_ops_name(name):
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    y = _ops()[name](x)
    (grad,) = torch.autograd.grad(y.pow(2).sum(), x)  # first order: fine
    assert torch.isfinite(grad).all()
    y = _ops()[name](x)
    with pytest.raises(NotImplementedError, match=rf"{name}.* has no double backward"):
        torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
