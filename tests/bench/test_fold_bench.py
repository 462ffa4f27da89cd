"""The fold benchmark runs and its folded model has no BN left (timings are not asserted)."""

from __future__ import annotations

import bnlab
from bnlab.bench import fold


def test_fold_benchmark_runs_and_folds_everything() -> None:
    result = fold.bench_fold(batch=2, size=8, channels=4, depth=2, rounds=2)
    assert set(result) >= {"folded_over_conv", "unfolded_over_conv", "conv_s"}
    assert all(v > 0 for v in result.values())
    folded = bnlab.fold_batchnorm(fold._blocks(4, 2, True).eval())
    assert [m for m in folded.modules() if "BatchNorm" in type(m).__name__] == []
