"""A run's default thread count: one for a small model (counted by its forward FLOPs, which the
count leaves untouched), torch's for a large one, the user's when given."""

from __future__ import annotations

import torch
from torch import nn

from bnlab.lab import threads
from bnlab.lab.models import build_model
from bnlab.lab.threads import TORCH_DEFAULT, forward_flops, run_threads


def test_forward_flops_count_the_matrix_products():
    """mpg-mlp is 9 -> 50 -> 25 -> 1: a multiply and an add per weight and sample."""
    model = build_model("mpg-mlp", True, "bnlab", (9,), 1, seed=0)
    assert forward_flops(model, torch.randn(32, 9)) == 2 * 32 * (9 * 50 + 50 * 25 + 25 * 1)


def test_counting_changes_nothing_in_the_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.randn(16, 4)
    rng = torch.get_rng_state()
    forward_flops(model, batch)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew nothing
    model.eval()
    forward_flops(model, batch)
    assert not model.training


def test_one_thread_for_small_models_torchs_default_for_large_ones(monkeypatch):
    model = build_model("lizard-cnn", True, "bnlab", (1, 28, 28), 10, seed=0)
    batch = torch.randn(1000, 1, 28, 28)  # the preset's batch: 4.6e8 forward FLOPs
    assert run_threads(0, model, batch) == 1
    monkeypatch.setattr(threads, "SERIAL_FLOPS", 1e8)
    assert run_threads(0, model, batch) == TORCH_DEFAULT
    assert run_threads(3, model, batch) == 3  # the user's choice, whatever the model
