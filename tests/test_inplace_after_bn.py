"""In-place ops right after a bnlab layer (``ReLU(inplace=True)``, ``add_``, ``mul_``): the pattern
of almost every vision model. Outputs must be ordinary tensors that autograd lets a caller modify
in place, at every size class (small outputs from torch's allocator, large ones from the output
cache), in train and eval, with grad on and off; results must equal the same ops after the
reference layer (torch's BN, or the same bnlab layer followed by out-of-place ops)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

import bnlab
from bnlab.kernels import output_cache

# (shape, what): below and above output_cache.MIN_BYTES (1 MiB) in float32
SIZES = {
    "small": (4, 8, 8, 8),
    "cached": (4, 64, 32, 32),
}

INPLACE_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu_inplace_module": lambda y: nn.ReLU(inplace=True)(y),
    "add_": lambda y: y.add_(1.5),
    "mul_": lambda y: y.mul_(0.5),
}
OUT_OF_PLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu_inplace_module": torch.relu,
    "add_": lambda y: y + 1.5,
    "mul_": lambda y: y * 0.5,
}


def _layers(c: int) -> dict[str, Callable[[], nn.Module]]:
    return {
        "BatchNorm2d": lambda: bnlab.BatchNorm2d(c),
        "BatchNormAct2d": lambda: bnlab.BatchNormAct2d(c, activation="silu"),
        "BatchRenorm2d": lambda: bnlab.BatchRenorm2d(c),
        "GhostBatchNorm2d": lambda: bnlab.GhostBatchNorm2d(c, virtual_batch_size=2),
        "FrozenBatchNorm2d": lambda: bnlab.FrozenBatchNorm2d(c),
        "SyncBatchNorm": lambda: bnlab.SyncBatchNorm(c),
    }


LAYER_NAMES = list(_layers(1))


@pytest.fixture(autouse=True)
def _cache_on():
    previous = output_cache.set_output_cache(64)
    yield
    output_cache.set_output_cache(previous)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("layer_name", LAYER_NAMES)
@pytest.mark.parametrize("op", list(INPLACE_OPS))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_inplace_op_after_layer(size, layer_name, op, training, grad, assert_close):
    shape = SIZES[size]
    make = _layers(shape[1])[layer_name]
    torch.manual_seed(0)
    x = torch.randn(shape) * 2 + 0.5
    layers = [make().train(training), make().train(training)]
    xs = [x.clone().requires_grad_(grad) for _ in layers]
    with torch.set_grad_enabled(grad):
        out_inplace = INPLACE_OPS[op](layers[0](xs[0]))
        out_ref = OUT_OF_PLACE[op](layers[1](xs[1]))
    assert_close(out_inplace, out_ref, atol=0, what=f"{layer_name} then {op}")
    if grad:
        dy = torch.randn(shape)
        out_inplace.backward(dy)
        out_ref.backward(dy)
        assert_close(xs[0].grad, xs[1].grad, atol=1e-6, what="input gradient")


@pytest.mark.parametrize("size", list(SIZES))
def test_converted_block_with_inplace_relu_matches_torch(size, assert_close):
    """The reported crash: Conv -> BN -> ReLU(inplace=True), converted, one training step."""
    c = SIZES[size][1]
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
    ours = bnlab.convert(copy.deepcopy(block))
    x = torch.randn(SIZES[size][0], 3, *SIZES[size][2:])
    y_ref, y = block(x), ours(x)
    assert_close(y, y_ref, atol=1e-5, what="output")
    y_ref.square().sum().backward()
    y.square().sum().backward()
    for (name, p_ref), p in zip(block.named_parameters(), ours.parameters(), strict=True):
        assert_close(p.grad, p_ref.grad, atol=1e-3, rtol=1e-4, what=f"grad of {name}")


def test_repro_from_the_report():
    y = bnlab.BatchNorm2d(64)(torch.randn(4, 64, 32, 32, requires_grad=True))
    assert not y._is_view()
    torch.relu_(y)  # raised "Output 0 of BatchNormFunction is a view and is being modified inplace"
    y.sum().backward()
