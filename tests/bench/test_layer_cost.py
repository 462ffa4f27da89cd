"""The in-place cost tool: its stand-ins compute what they claim, it refuses networks it would
misread, and a run writes well-formed JSON and prints within 80 columns. Costs are not asserted:
timing figures live in the tool's output, not in tests."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console
from torch import nn

from bnlab.bench import layer_cost
from bnlab.bench.models import NETWORKS


def _network() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 6 * 6, 5), nn.BatchNorm1d(5),
    )  # fmt: skip
    with torch.no_grad():  # running statistics and affine parameters away from their defaults
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return model


def test_stand_ins_compute_what_they_say():
    reference = _network()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        out = {s: layer_cost.stand_in_network(reference, s)(x) for s in layer_cost.STAND_INS}
    # the batch norms: bnlab's kernels, bnlab's layer and torch's op agree with torch's layer
    for s in ("kernel", "bnlab", "torch_op"):
        diff = (out[s] - out["torch"]).abs().max().item()
        assert diff < 1e-5, (s, diff)
    # the stand-ins that normalize nothing pass their input on, as the identity does
    assert torch.equal(out["copy"], out["identity"]) and torch.equal(out["call"], out["identity"])
    assert (out["identity"] - out["torch"]).abs().max().item() > 0.1, "BN must matter here"
    assert reference[1].training, "the reference is left as it was (copies are made)"


def test_refuses_what_it_would_misread():
    class BatchNormAct(nn.BatchNorm2d):  # timm's kind: the activation lives in the layer
        pass

    with pytest.raises(ValueError, match=r"plain BatchNorm1d/2d/3d.*'1' is a BatchNormAct"):
        layer_cost.stand_in_network(nn.Sequential(nn.Conv2d(3, 4, 1), BatchNormAct(4)), "copy")
    no_stats = nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="needs running statistics; '0' keeps none"):
        layer_cost.stand_in_network(no_stats, "kernel")
    with pytest.raises(ValueError, match="stand_in must be one of identity, copy"):
        layer_cost.stand_in_network(_network(), "allocate")
    with pytest.raises(ValueError, match=r"expected reps >= 1.*got reps 0"):
        layer_cost.run(["lizard-cnn"], [2], 28, 0, 0)


def test_run_writes_json_and_prints_within_80_columns(tmp_path, capsys):
    out = tmp_path / "lc.json"
    argv = ["--models", "lizard-cnn", "--batches", "2", "3", "--size", "28", "--reps", "2"]
    assert layer_cost.main([*argv, "--warmup", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["reps"], data["warmup"], data["size"]) == (2, 1, 28)
    assert [(r["model"], r["batch"], r["input"]) for r in data["rows"]] == [
        ("lizard-cnn", 2, [1, 28, 28]),
        ("lizard-cnn", 3, [1, 28, 28]),
    ]
    for r in data["rows"]:
        assert r["bn_layers"] == sum(
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            for m in NETWORKS[r["model"]].build().modules()
        )
        assert set(r["times_ms"]) == set(layer_cost.STAND_INS)
        assert all(t > 0 and math.isfinite(t) for t in r["times_ms"].values())
        assert r["us_per_layer"]["identity"] == 0 and r["ratios"]["torch"] == 1
    capsys.readouterr()
    console = Console(file=io.StringIO(), width=80)
    widest = max(NETWORKS, key=len)  # the table must hold every network's name
    data["rows"][1]["model"] = widest
    layer_cost.print_table(data, console)
    text = console.file.getvalue()
    assert "lizard-cnn" in text and widest in text and "ratio" in text
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text, text
