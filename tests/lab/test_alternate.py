"""Fair in-process timing of two training loops, and the end-to-end bn_impl comparison."""

from __future__ import annotations

import pytest

from bnlab.lab.alternate import alternate, median_ratio
from bnlab.lab.data import load_dataset
from bnlab.lab.grid import RunParams
from bnlab.lab.impl_bench import measure


def test_alternate_flips_the_order_and_gives_each_the_same_epochs():
    calls: list[tuple[str, int]] = []

    def runner(name: str, seconds: float):
        def run(epoch: int) -> float:
            calls.append((name, epoch))
            return seconds

        return run

    a, b = alternate(runner("a", 2.0), runner("b", 1.0), repeats=3)
    assert a == [2.0] * 3 and b == [1.0] * 3
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]
    assert median_ratio(a, b) == 2.0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        alternate(runner("a", 1.0), runner("b", 1.0), repeats=0)


def test_impl_bench_trains_both_implementations_like_for_like():
    dataset = load_dataset("digits", normalization="normal").subset(300, 1)
    params = RunParams(network="mlp", bn=True, optimizer="sgd", lr=0.05, batch_size=50, seed=3)
    result = measure(dataset, params, repeats=2)
    assert len(result["bnlab_s"]) == 2 and len(result["torch_s"]) == 2
    assert result["ratio"] > 0
    losses = result["last_loss"]
    # same seed, same batches, same BN maths: the training losses agree closely
    assert abs(losses["bnlab"] - losses["torch"]) < 1e-4 * max(1.0, abs(losses["torch"])), losses
