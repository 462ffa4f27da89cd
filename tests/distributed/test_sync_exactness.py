"""SyncBatchNorm on per-rank shards == single-process BatchNorm on the concatenated batch.

2 and 3 gloo processes on 127.0.0.1 (one spawn each, many cases per spawn); the workers live in
``syncbn_workers.py``. Tolerances: 1e-5 for float32, 1e-10 for float64; weight/bias gradients
are sums over the batch, so their tolerance scales with the batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import syncbn_workers as W


@pytest.fixture(scope="module")
def world2(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    return W.spawn(W.worker_2, 2, tmp_path_factory.mktemp("world2"))


@pytest.fixture(scope="module")
def world3(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    return W.spawn(W.worker_3, 3, tmp_path_factory.mktemp("world3"))


def _check(results: dict[int, dict[str, Any]], name: str, ranks: list[int]) -> None:
    failures = []
    for rank in ranks:
        got = results[rank].get(name)
        assert got is not None, f"rank {rank} wrote no result for {name}"
        if isinstance(got, str):
            failures.append(f"rank {rank}: {got}")
            continue
        assert got, f"rank {rank}: no quantities checked for {name}"
        for quantity, (diff, tol) in got.items():
            if not diff <= tol:
                failures.append(f"rank {rank} {quantity}: max |diff| {diff:.3e} > {tol:.0e}")
    assert not failures, f"{name}:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", [c.name for c in W.CASES_2] + W.EXTRA_2)
def test_two_processes(world2: dict[int, dict[str, Any]], name: str) -> None:
    _check(world2, name, [0, 1])


@pytest.mark.parametrize("name", [c.name for c in W.CASES_3])
def test_three_processes(world3: dict[int, dict[str, Any]], name: str) -> None:
    _check(world3, name, [0, 1, 2])


def test_subgroup(world3: dict[int, dict[str, Any]]) -> None:
    _check(world3, W.SUBGROUP_CASE.name, [0, 2])
    assert W.SUBGROUP_CASE.name not in world3[1], "rank 1 is outside the subgroup"


def test_workers_wrote_every_case(world2: dict[int, dict[str, Any]], tmp_path: Path) -> None:
    expected = {c.name for c in W.CASES_2} | set(W.EXTRA_2)
    assert set(world2[0]) == expected
