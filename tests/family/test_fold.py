"""fold_batchnorm: equal outputs (1e-5, float32), no BN left where folding applies, Sequential
and torch.fx models, missing bias, dtype, training refused, unfoldable BN left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.transforms.fold import fold_weights


def randomize_bn(model):
    """Give every BN non-trivial statistics and affine so that folding is exercised."""
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_mean.copy_(torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                    m.bias.copy_(torch.randn_like(m.bias))
    return model.eval()


def bn_layers(model):
    return [
        m
        for m in model.modules()
        if "BatchNorm" in type(m).__name__ or "Renorm" in type(m).__name__
    ]


CASES = {
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)), (2, 3, 9)),
    "conv2d-nobias-bnlab": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), bnlab.BatchNorm2d(4), nn.ReLU()),
        (2, 3, 8, 8),
    ),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3)), (2, 2, 4, 4, 4)),
    "convT1d": (lambda: nn.Sequential(nn.ConvTranspose1d(3, 4, 3), nn.BatchNorm1d(4)), (2, 3, 5)),
    "convT2d-groups": (
        lambda: nn.Sequential(
            nn.ConvTranspose2d(4, 6, 3, groups=2, stride=2), bnlab.BatchNorm2d(6)
        ),
        (2, 4, 5, 5),
    ),
    "convT3d": (
        lambda: nn.Sequential(nn.ConvTranspose3d(2, 3, 2), nn.BatchNorm3d(3)),
        (2, 2, 3, 3, 3),
    ),
    "conv2d-groups": (
        lambda: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6)),
        (2, 4, 6, 6),
    ),
    "linear-affine-false": (
        lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, affine=False)),
        (3, 5),
    ),
    "family": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3),
            bnlab.BatchRenorm2d(4),
            nn.Conv2d(4, 4, 1),
            bnlab.GhostBatchNorm2d(4, virtual_batch_size=2),
            nn.Conv2d(4, 4, 1),
            bnlab.FrozenBatchNorm2d(4),
        ),
        (2, 3, 6, 6),
    ),
    "nested": (
        lambda: nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Flatten(),
            nn.Sequential(nn.Linear(64, 8), bnlab.BatchNorm1d(8)),
        ),
        (2, 3, 6, 6),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sequential_folds_exactly(case, assert_close):
    build, shape = CASES[case]
    model = randomize_bn(build())
    x = torch.randn(shape)
    expected = model(x)
    folded = bnlab.fold_batchnorm(model)
    assert type(folded) is type(model), "Sequential models keep their type"
    assert bn_layers(folded) == [], f"BN left: {bn_layers(folded)}"
    assert_close(folded(x), expected, atol=1e-5, rtol=1e-5, what=case)
    assert bn_layers(model), "the input model is not modified"


class Custom(nn.Module):
    """Conv -> BN inside a custom forward: only a torch.fx trace finds the pairs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = bnlab.BatchNorm2d(4)
        self.bn_after_relu = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.bn_fc = bnlab.BatchNorm1d(3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        y = self.bn_after_relu(y)  # follows a ReLU: cannot be folded
        return self.bn_fc(self.fc(y.mean((2, 3))))


def test_fx_traceable_model(assert_close):
    model = randomize_bn(Custom())
    x = torch.randn(2, 3, 7, 7)
    expected = model(x)
    folded = bnlab.fold_batchnorm(model)
    assert isinstance(folded, torch.fx.GraphModule)
    assert_close(folded(x), expected, atol=1e-5, rtol=1e-5, what="fx")
    left = bn_layers(folded)
    assert len(left) == 1 and isinstance(left[0], nn.BatchNorm2d), left


def test_untraceable_model_keeps_unfolded_bn(assert_close):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent: not fx-traceable
                return self.bn(self.conv(x))
            return self.bn(self.conv(-x))

    model = randomize_bn(DataDependent())
    x = torch.randn(2, 3, 5, 5)
    folded = bnlab.fold_batchnorm(model)
    assert len(bn_layers(folded)) == 1
    assert_close(folded(x), model(x), atol=0, what="left as it is")


def test_bn_without_running_stats_and_shared_conv_are_left(assert_close):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert len(bn_layers(bnlab.fold_batchnorm(model))) == 1

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    shared = randomize_bn(Shared())
    x = torch.randn(2, 3, 4, 4)
    folded = bnlab.fold_batchnorm(shared)
    assert len(bn_layers(folded)) == 1
    assert_close(folded(x), shared(x), atol=1e-6, what="shared conv")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype, assert_close):
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).to(dtype)
    folded = bnlab.fold_batchnorm(model)
    assert folded[0].weight.dtype == dtype and folded[0].bias.dtype == dtype
    x = torch.randn(2, 3, 5, 5, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 0.1
    assert_close(folded(x), model(x), atol=tol, rtol=tol, what=str(dtype))


def test_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"eval mode.*call model.eval\(\) first.*: 1"):
        bnlab.fold_batchnorm(model)


def test_fold_weights_pure_function(assert_close):
    w, b = torch.randn(4, 3), torch.randn(4)
    scale, shift = torch.rand(4) + 0.5, torch.randn(4)
    w2, b2 = fold_weights(w, b, scale, shift)
    x = torch.randn(5, 3)
    assert_close(x @ w2.T + b2, (x @ w.T + b) * scale + shift, atol=1e-5, what="linear")
    w3, b3 = fold_weights(w, None, scale, shift)
    assert_close(x @ w3.T + b3, (x @ w.T) * scale + shift, atol=1e-5, what="no bias")
