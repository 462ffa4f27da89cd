"""The thread-count measurement trains one model at both counts and restores torch's."""

from __future__ import annotations

import torch

from bnlab.bench.threads import measure
from bnlab.lab.data import load_dataset
from bnlab.lab.grid import RunParams
from bnlab.lab.threads import TORCH_DEFAULT


def test_threads_measure_times_both_counts():
    dataset = load_dataset("digits").subset(128, 1)
    params = RunParams(network="keras-mlp", bn=True, batch_size=32, seed=0)
    result = measure(dataset, params, threads=2, repeats=2)
    assert len(result["one_s"]) == 2 and len(result["many_s"]) == 2 and result["ratio"] > 0
    assert result["flops"] == 2 * 32 * (64 * 64 + 64 * 10)  # digits: 8x8 images
    assert torch.get_num_threads() == TORCH_DEFAULT
