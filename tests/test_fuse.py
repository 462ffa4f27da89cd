"""``convert(fuse=True)``: BN followed by an activation becomes one BatchNormAct layer, exactly.

Every fused model is checked against the unfused torch model in float64: a training step
(output, every gradient and buffer, by name) and an eval forward, within 1e-9 relative to the
reference's largest value (the model zoo's float64 tolerance). Where fusion must not happen (a
BN output used twice, a BN called twice, an activation subclass, a forward fx cannot trace),
the count of fused layers says it did not.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import bnlab
from bnlab.layers import BatchNormAct1d, BatchNormAct2d

TOL = 1e-9


def fused_count(model: nn.Module) -> int:
    """BatchNormAct layers with an activation (not Identity)."""
    return sum(
        isinstance(m, BatchNormAct1d | BatchNormAct2d) and type(m.act) is not nn.Identity
        for m in model.modules()
    )


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = max(float(expected.abs().max()), 1e-3)
    return float((actual - expected).abs().max()) / scale


def step(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output, gradients and buffers (by name) after one float64 training step, then the
    eval output."""
    model.train()
    out = model(x.clone())
    out.square().mean().backward()
    results = {"output": out.detach()}
    results.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    results.update({f"buffer {n}": b.clone() for n, b in model.named_buffers()})
    model.eval()
    with torch.no_grad():
        results["eval output"] = model(x.clone())
    return results


def check_fused_exactly(model: nn.Module, x: torch.Tensor, expected_fused: int) -> nn.Module:
    """Fuse a copy of the torch ``model``; compare it to ``model`` (module docstring)."""
    model = model.double()
    fused = bnlab.convert(copy.deepcopy(model), fuse=True)
    assert fused_count(fused) == expected_fused
    assert list(fused.state_dict()) == list(model.state_dict())
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in model.named_parameters()]
    x = x.double()
    expected, actual = step(model, x), step(fused, x)
    assert actual.keys() == expected.keys()
    for key in expected:
        diff = relative_difference(actual[key], expected[key])
        assert diff <= TOL, f"{key}: relative difference {diff:.2e}"
    return fused


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]


def test_sequential_pairs_are_fused_with_every_activation():
    torch.manual_seed(0)
    model = nn.Sequential(
        *conv_bn(3, 4), nn.ReLU(inplace=True),
        *conv_bn(4, 4), nn.Identity(), nn.SiLU(),  # timm's empty drop_block between
        *conv_bn(4, 4), nn.Hardswish(inplace=True),
        *conv_bn(4, 4), nn.GELU(),
        *conv_bn(4, 4),  # last: no activation follows, not fused
        nn.Flatten(), nn.Linear(4 * 25, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2),
    )  # fmt: skip
    fused = check_fused_exactly(model, torch.randn(8, 3, 5, 5), expected_fused=5)
    assert type(fused) is nn.Sequential
    acts = [type(m.act) for m in fused.modules() if isinstance(m, BatchNormAct1d | BatchNormAct2d)]
    assert acts == [nn.ReLU, nn.SiLU, nn.Hardswish, nn.GELU, nn.ReLU]
    assert fused[2].__class__ is nn.Identity and fused[0].__class__ is nn.Conv2d


class SharedReLUBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module after bn1 and after the residual add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c, c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv_bn(c, c)
        self.register_buffer("scale", torch.tensor(0.5))
        self.register_buffer("scratch", torch.zeros(1), persistent=False)
        self.gain = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) * self.gain
        return self.relu(out + x * self.scale)


def test_a_shared_activation_rewrites_that_module_as_a_graph_module():
    torch.manual_seed(0)
    model = nn.Sequential(*conv_bn(3, 4), nn.ReLU(), SharedReLUBlock(4), nn.Flatten())
    fused = check_fused_exactly(model, torch.randn(4, 3, 6, 6), expected_fused=2)
    block = fused[3]
    assert isinstance(block, fx.GraphModule) and type(block).__name__ == "SharedReLUBlock"
    assert isinstance(block.bn1, BatchNormAct2d) and isinstance(block.bn2, bnlab.BatchNorm2d)
    assert block.bn1.act is not block.relu, "each module in one place"
    assert "scratch" not in block.state_dict() and "scratch" in dict(block.named_buffers())
    assert [n for n, _ in block.named_children()] == ["conv1", "bn1", "relu", "conv2", "bn2"]


def test_modes_are_kept():
    torch.manual_seed(0)
    model = nn.Sequential(*conv_bn(3, 4), nn.ReLU(), SharedReLUBlock(4)).double()
    model[1].eval()
    model[3].bn2.eval()
    model[3].eval()
    model[3].conv1.train()
    fused = bnlab.convert(model, fuse=True)
    assert not fused[1].training and fused[0].training
    block = fused[3]
    assert not block.training and block.conv1.training and not block.bn2.training


class Functional(nn.Module):
    """Activations as function calls; only a graph rewrite can fuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1 = conv_bn(3, 4)
        self.bn2, self.bn3, self.bn4 = nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv(x)), True)
        x = F.gelu(self.bn2(x), approximate="tanh")
        x = torch.relu(self.bn3(x))
        return F.silu(self.bn4(x), inplace=True)


def test_activation_functions_are_fused():
    torch.manual_seed(0)
    fused = check_fused_exactly(Functional(), torch.randn(4, 3, 5, 5), expected_fused=4)
    assert isinstance(fused, fx.GraphModule)
    acts = [fused.bn1.act, fused.bn2.act, fused.bn3.act, fused.bn4.act]
    assert [type(a) for a in acts] == [nn.ReLU, nn.GELU, nn.ReLU, nn.SiLU]
    assert acts[0].inplace and acts[1].approximate == "tanh" and acts[3].inplace


class UsedTwice(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "output used twice":
            y = self.bn(x)
            return self.act(y) + y
        if self.how == "output returned too":
            y = self.bn(x)
            return torch.cat([self.act(y), y])
        if self.how == "bn called twice":
            return self.act(self.bn(x)) + self.bn(x * 2)
        if self.how == "output used twice by the activation":
            return torch.add(self.bn(x), 1.0).relu()
        return F.relu(self.bn(x)) * 2  # "fusable" (the control check)


@pytest.mark.parametrize(
    "how",
    [
        "output used twice",
        "output returned too",
        "bn called twice",
        "output used twice by the activation",
        "fusable",
    ],
)
def test_a_bn_output_used_twice_is_not_fused(how):
    torch.manual_seed(0)
    check_fused_exactly(UsedTwice(how), torch.randn(4, 3, 5, 5), int(how == "fusable"))


class MyReLU(nn.ReLU):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 2


def test_activation_subclasses_and_other_bn_layers_are_not_fused():
    torch.manual_seed(0)
    model = nn.Sequential(
        *conv_bn(3, 4), MyReLU(),  # a forward of its own: may do anything
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, affine=False), nn.Sigmoid(),  # not in the list
        nn.Unflatten(1, (4, 1)), nn.BatchNorm3d(4), nn.ReLU(),  # no BatchNormAct3d
        nn.Flatten(),
    )  # fmt: skip
    check_fused_exactly(model, torch.randn(4, 3, 5, 5), expected_fused=0)


class Untraceable(nn.Module):
    """Data-dependent control flow: fx cannot trace the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(*conv_bn(3, 4), nn.ReLU())
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inner(x)
        if x.sum() > 0:
            x = -x
        return self.act(self.bn(x))


def test_an_untraceable_forward_keeps_its_pairs_and_its_sequentials_are_fused():
    torch.manual_seed(0)
    fused = check_fused_exactly(Untraceable(), torch.randn(4, 3, 5, 5), expected_fused=1)
    assert type(fused) is Untraceable
    assert isinstance(fused.inner[1], BatchNormAct2d) and type(fused.bn) is bnlab.BatchNorm2d


def test_already_fused_layers_stay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), BatchNormAct1d(4, activation="relu"), nn.ReLU())
    fused = bnlab.convert(copy.deepcopy(model), fuse=True)
    assert type(fused[1]) is BatchNormAct1d and type(fused[2]) is nn.ReLU


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to": "torch"}, "fuse=True needs to='bnlab' and kind='bn', got to='torch', kind='bn'"),
        (
            {"kind": "renorm"},
            "fuse=True needs to='bnlab' and kind='bn', got to='bnlab', kind='renorm'",
        ),
    ],
)
def test_fuse_needs_plain_bnlab_batch_norm(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        bnlab.convert(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()), fuse=True, **kwargs)
