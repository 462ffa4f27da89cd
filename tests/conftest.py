"""Shared test fixtures: deterministic seeding and a comparison that prints the max difference."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same seeds."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def assert_close_impl(
    actual: object, expected: object, *, atol: float, rtol: float = 0.0, what: str = ""
) -> None:
    a = torch.as_tensor(actual).detach().to(torch.float64).cpu()
    e = torch.as_tensor(expected).detach().to(torch.float64).cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    if a.numel() == 0:
        return
    diff = (a - e).abs()
    both_nan = torch.isnan(a) & torch.isnan(e)
    diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    allowed = atol + rtol * e.abs()
    bad = ~(diff <= allowed)
    if bad.any():
        worst = float(diff.nan_to_num(float("inf")).max())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {a.numel()} values differ; max |difference| = {worst:.3e} "
            f"(atol={atol:g}, rtol={rtol:g})"
        )


@pytest.fixture
def assert_close() -> Callable[..., None]:
    """``assert_close(actual, expected, atol=..., rtol=..., what=...)``; reports the max difference."""
    return assert_close_impl
