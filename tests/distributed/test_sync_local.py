"""Single-process checks of bnlab.distributed: the combine formula, the fallbacks, the converter."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import bnlab
from bnlab.distributed import sync_batch_norm
from bnlab.kernels.moments import combine_moments


@pytest.mark.parametrize(
    "sizes",
    [(5, 7, 1), (0, 4, 9), (3, 0, 0), (1, 1), (1000, 3)],
    ids=["uneven", "empty_first", "two_empty", "ones", "lopsided"],
)
def test_combine_equals_numpy_on_concatenation(
    sizes: tuple[int, ...], assert_close: Callable[..., None]
) -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(1e4, 1.0, size=(n, 3)) for n in sizes]  # large offset: stability
    counts = torch.tensor([float(n) for n in sizes], dtype=torch.float64)
    means = torch.tensor(np.stack([p.mean(0) if len(p) else np.zeros(3) for p in parts]))
    m2s = torch.tensor(
        np.stack([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(3) for p in parts])
    )
    n, mean, m2 = combine_moments(counts, means, m2s)
    full = np.concatenate(parts)
    assert int(n) == len(full)
    assert_close(mean, full.mean(0), atol=1e-9, rtol=1e-14, what="mean")
    assert_close(m2 / len(full), full.var(0), atol=1e-9, rtol=1e-9, what="biased var")


def test_combine_all_empty_is_zero() -> None:
    n, mean, m2 = combine_moments(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 3))
    assert int(n) == 0
    assert torch.equal(mean, torch.zeros(3)) and torch.equal(m2, torch.zeros(3))


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 5), (4, 3, 2, 2), (2, 3, 2, 2, 2)])
def test_without_process_group_is_plain_batchnorm(
    shape: tuple[int, ...], assert_close: Callable[..., None]
) -> None:
    assert not dist.is_initialized()
    sync = bnlab.SyncBatchNorm(3, dtype=torch.float64)
    plain = nn.BatchNorm1d(3, dtype=torch.float64)  # torch checks the rank; F-level is the same
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    y = sync(x)
    yr = torch.nn.functional.batch_norm(
        xr, plain.running_mean, plain.running_var, plain.weight, plain.bias, True, 0.1, 1e-5
    )
    assert_close(y, yr, atol=1e-12, what="output")
    y.sum().backward()
    yr.sum().backward()
    assert_close(x.grad, xr.grad, atol=1e-12, what="input grad")
    assert_close(sync.running_var, plain.running_var, atol=1e-12, what="running_var")


def test_functional_needs_a_process_group() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        sync_batch_norm(torch.randn(4, 3), None, None)


def test_input_checks() -> None:
    sync = bnlab.SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"expected 2D or 3D or 4D or 5D input \(got 1D input\)"):
        sync(torch.randn(3))
    with pytest.raises(ValueError, match="expected input with 3 channels"):
        sync(torch.randn(4, 5))


def test_convert_swaps_every_bn_and_shares_tensors() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2), bnlab.BatchNorm1d(2, momentum=None)),
        nn.BatchNorm1d(2, affine=False, track_running_stats=False),
    )
    model[1].eval()
    weight, running_mean = model[1].weight, model[1].running_mean
    group = object()  # any object: converting must not touch the process group
    out = bnlab.convert_sync_batchnorm(model, process_group=group)  # type: ignore[arg-type]
    assert out is model
    syncs = [m for m in model.modules() if isinstance(m, bnlab.SyncBatchNorm)]
    assert len(syncs) == 3
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())
    assert model[1].weight is weight and model[1].running_mean is running_mean
    assert not model[1].training and model[2][2].training
    assert model[2][2].momentum is None
    assert model[3].weight is None and model[3].running_mean is None
    assert all(m.process_group is group for m in syncs)


def test_convert_layer_itself_and_rejects_non_modules() -> None:
    bn = nn.BatchNorm3d(5, eps=1e-3)
    new = bnlab.convert_sync_batchnorm(bn)
    assert isinstance(new, bnlab.SyncBatchNorm) and new.eps == 1e-3
    with pytest.raises(TypeError, match=r"expected an nn\.Module, got int"):
        bnlab.convert_sync_batchnorm(3)  # type: ignore[arg-type]


def test_constructor_signature_is_torchs() -> None:
    def parameters(cls: type) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]

    assert parameters(bnlab.SyncBatchNorm) == parameters(nn.SyncBatchNorm)


@pytest.mark.parametrize("source", [nn.BatchNorm2d, bnlab.BatchNorm2d, nn.SyncBatchNorm])
def test_convert_carries_a_missing_bias(source: type[nn.Module]) -> None:
    """bias=False stays bias=False: a weight Parameter (the same object) and bias None."""
    bn: Any = source(4, bias=False)
    weight = bn.weight
    new: Any = bnlab.convert_sync_batchnorm(bn)
    assert isinstance(new, bnlab.SyncBatchNorm)
    assert new.weight is weight and new.bias is None
    assert list(new.state_dict()) == [
        "weight",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    assert "bias=False" in repr(new)
    y = new(torch.randn(3, 4, 2, 2))  # no process group: plain batch norm
    assert torch.isfinite(y).all()
