"""``convert(fuse=True)`` on real architectures: how many BN layers it fuses, and that the fused
model equals the unfused torch model in float64 (training step: output, every gradient and
buffer; eval with randomized statistics), at the model-zoo suite's tolerance."""

from __future__ import annotations

import copy

import pytest
import torch
from test_zoo import (
    TOL,
    bn_like,
    build,
    images,
    randomize_statistics,
    relative_difference,
    step_results,
    worst,
)
from torch import fx, nn

import bnlab
from bnlab.transforms.layer_classes import role_of

#: model -> (BN layers fused into BatchNormAct with an activation, module forwards rewritten as
#: GraphModules). torchvision resnet18: bn1 of the stem and of each of the 8 BasicBlocks (whose
#: one ReLU module also follows the residual add: the rewritten forwards); not bn2 nor the
#: downsample BNs (they feed the add). mobilenet_v3_small: every Conv2dNormActivation with an
#: activation (ReLU or Hardswish), not the projections. timm's BatchNormAct2d layers are fused
#: already (33 with SiLU; the 16 projections have Identity); timm's resnet18 calls each act once.
EXPECTED = {
    "torchvision/resnet18": (9, 8),
    "torchvision/mobilenet_v3_small": (23, 0),
    "timm/efficientnet_b0": (33, 0),
    "timm/resnet18": (9, 0),
}


def fused(model: nn.Module) -> list[str]:
    return [
        n for n, m in model.named_modules()
        if role_of(m) == "bn_act" and type(getattr(m, "act", None)) is not nn.Identity
    ]  # fmt: skip


@pytest.fixture(params=list(EXPECTED))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_fuse_counts_and_keeps_every_name(zoo_libraries, name):
    model = build(zoo_libraries, name)
    ours = bnlab.convert(copy.deepcopy(model), fuse=True)
    layers, graphs = EXPECTED[name]
    print(f"{name}: {len(fused(ours))} of {len(bn_like(model))} BN layers fused")
    assert len(fused(ours)) == layers
    assert sum(isinstance(m, fx.GraphModule) for m in ours.modules()) == graphs
    assert bn_like(ours) == bn_like(model), "every BN layer stays at its name"
    assert list(ours.state_dict()) == list(model.state_dict())


def test_fused_training_step_matches_torch(zoo_libraries, name):
    model = build(zoo_libraries, name)
    exact = step_results(copy.deepcopy(model), torch.float64)
    ours = step_results(bnlab.convert(copy.deepcopy(model), fuse=True), torch.float64)
    assert ours.keys() == exact.keys()
    key, diff = worst({k: (ours[k], exact[k]) for k in exact})
    print(f"{name} float64 fused: bnlab vs torch {diff:.2e} ({key})")
    assert diff <= TOL[torch.float64], f"float64 {key}: relative difference {diff:.3e}"


def test_fused_eval_matches_torch(zoo_libraries, name):
    reference = build(zoo_libraries, name).double()
    randomize_statistics(reference)
    reference.eval()
    ours = bnlab.convert(copy.deepcopy(reference), fuse=True)
    x = images(torch.float64)
    with torch.no_grad():
        diff = relative_difference(ours(x), reference(x))
    assert diff <= TOL[torch.float64], f"eval output: relative difference {diff:.3e}"
