"""The trainer-overhead measurement runs both loops on the same model and batches."""

from __future__ import annotations

from bnlab.bench.trainer_overhead import measure
from bnlab.lab.data import load_dataset
from bnlab.lab.grid import RunParams


def test_trainer_and_bare_loop_are_both_timed():
    dataset = load_dataset("digits", normalization="normal").subset(200, 1)
    params = RunParams(network="mlp", bn=True, optimizer="sgd", lr=0.01, batch_size=50, seed=0)
    trainer_s, bare_s, trainer_times, bare_times = measure(dataset, params, repeats=3)
    assert len(trainer_times) == len(bare_times) == 3
    assert sorted(trainer_times)[1] == trainer_s and sorted(bare_times)[1] == bare_s
    assert trainer_s > 0 and bare_s > 0
