"""torch.compile / torch.library: bnlab layers trace without graph breaks and match eager."""

from __future__ import annotations

import copy
import importlib

import torch
from torch import nn

import bnlab

bn_module = importlib.import_module("bnlab.functional.batch_norm")


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        bnlab.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        bnlab.BatchNormAct2d(8, activation="silu"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
        bnlab.BatchNorm1d(5, momentum=None),
    )


def test_compiled_cnn_fullgraph_equals_eager(assert_close):
    torch._dynamo.reset()
    eager = _cnn()
    compiled_model = copy.deepcopy(eager)
    # fullgraph=True: any graph break is an error. aot_eager runs dynamo + AOT autograd (fake
    # tensors, the custom ops' fake kernels and autograd formulas) without inductor's codegen.
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 3, 8, 8)
    for step in range(2):
        y, yc = eager(x), compiled(x)
        assert_close(yc, y, atol=1e-6, rtol=1e-6, what=f"train output, step {step}")
        y.square().sum().backward()
        yc.square().sum().backward()
    for (name, p), pc in zip(eager.named_parameters(), compiled_model.parameters(), strict=True):
        assert_close(pc.grad, p.grad, atol=1e-5, rtol=1e-5, what=f"grad of {name}")
    for (name, buf), bc in zip(eager.named_buffers(), compiled_model.buffers(), strict=True):
        assert_close(bc, buf, atol=1e-6, rtol=1e-6, what=f"buffer {name}")
    assert int(compiled_model[1].num_batches_tracked) == 2
    eager.eval()
    compiled_model.eval()
    assert_close(compiled(x), eager(x), atol=1e-6, rtol=1e-6, what="eval output")


def test_custom_ops_pass_opcheck():
    x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    xg = x.clone().requires_grad_()
    torch.library.opcheck(bn_module._forward_op, (xg, w, b, None, None, 1e-5, "relu"))
    rm, rv = torch.zeros(3), torch.ones(3)
    torch.library.opcheck(bn_module._forward_op, (x, w, b, rm, rv, 1e-5, "identity"))
    mean, invstd = torch.randn(3), torch.rand(3) + 0.5
    dy = torch.randn_like(x)
    torch.library.opcheck(
        bn_module._backward_op, (dy, x, w.detach(), b.detach(), mean, invstd, True, True, "silu")
    )
    nbt = torch.tensor(0)
    torch.library.opcheck(
        bn_module._update_op, (rm, rv, mean, invstd, 75, 0.1, nbt), test_utils=("test_schema",)
    )
