"""The real-model benchmark on the lab's small networks: it runs, profiles, prints within 80
columns and writes well-formed JSON. Ratios are not asserted: timing targets live in the
benchmark's figures, not in tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from rich.console import Console
from torch import nn

import bnlab
from bnlab import cli
from bnlab.bench import models

QUICK = ["--quick", "--models", "lizard-cnn", "mpg-mlp", "--reps", "1", "--warmup", "0"]


def test_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench_models.json"
    assert models.main([*QUICK, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "models" and data["reps"] == 1 and data["warmup"] == 0
    assert data["threads"] == torch.get_num_threads() and data["skipped"] == {}
    assert data["memory"] == [], "--quick measures no memory"
    assert len(data["load_average"]) == 2
    rows = data["rows"]
    assert [(r["model"], r["mode"], r["batch"], r["input"]) for r in rows] == [
        ("lizard-cnn", "train", 2, [1, 28, 28]),
        ("lizard-cnn", "eval", 2, [1, 28, 28]),
        ("mpg-mlp", "train", 2, [9]),
        ("mpg-mlp", "eval", 2, [9]),
    ]
    lizard_train, _, mpg_train, mpg_eval = rows
    # lizard-cnn: BN after a max-pool and after a ReLU, nothing to fuse; mpg-mlp: Linear, BN, ReLU
    assert lizard_train["bn_layers"] == 2 and lizard_train["fused_layers"] == {
        "torch": 0,
        "bnlab": 0,
    }
    assert lizard_train["unavailable"] == {"fused": "no BN followed by an activation to fuse"}
    assert mpg_train["fused_layers"] == {"torch": 0, "bnlab": 0, "fused": 2}
    assert set(mpg_train["times_ms"]) == set(models.TRAIN_PEERS)
    assert set(mpg_eval["times_ms"]) == set(models.EVAL_PEERS)
    for r in rows:
        assert r["ratios"]["torch"] == 1.0
        assert all(t > 0 and math.isfinite(t) for t in r["times_ms"].values())
        assert set(r["profile"]) == set(r["times_ms"])
        for peer, p in r["profile"].items():
            assert p["step_ms"] > 0 and 0 <= p["bn_share"] < 1
            has_bn = peer not in ("fold", "fx_fuse") or r["model"] == "lizard-cnn"
            assert (p["bn_ms"] > 0) == has_bn, (r["model"], peer, p)  # lizard: BN after pools
    assert [p.name for p in out.parent.iterdir()] == ["bench_models.json"], "temporary file left"
    printed = capsys.readouterr().out
    assert "training step" in printed and "eval forward" in printed and "mpg-mlp" in printed


def test_bnlab_bench_models_is_the_same_benchmark(tmp_path):
    out = tmp_path / "b.json"
    argv = ["bench", *QUICK[:3], "--modes", "eval", "--reps", "1", "--json", str(out)]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["mode"]) for r in rows] == [("lizard-cnn", "eval")]


def test_tables_fit_80_columns():
    long_name = max(models.NETWORKS, key=len)
    peers = {p: 1.2345 for p in models.EVAL_PEERS}
    profile = {p: {"step_ms": 10.0, "bn_ms": 1.0, "bn_share": 0.1, "conv_ms": 5.0} for p in peers}
    row = {
        "model": long_name, "batch": 1000, "input": [3, 224, 224],
        "times_ms": {**peers, "torch": 31234.56}, "ratios": peers, "profile": profile,
    }  # fmt: skip
    result = {
        "bnlab_version": "0.1.0", "torch_version": "2.13.0+cpu", "threads": 2,
        "numba_threads": 2, "numba_threading_layer": "omp", "reps": 7, "load_average": [0.5, 1],
        "rows": [{**row, "mode": "train"}, {**row, "mode": "eval"}],
        "memory": [{"model": long_name, "mode": "train", "batch": 32, "input": [3, 224, 224],
                    "peak_mb": {p: 12345.6 for p in peers}}],
        "skipped": {},
    }  # fmt: skip
    console = Console(width=80, record=True)
    models.print_tables(result, console)
    text = console.export_text()
    assert "…" not in text and long_name in text and "31234.6" in text
    tables = text.split("training step")[1]
    assert max(len(line.rstrip()) for line in tables.splitlines()) <= 80


def test_profile_counts_batch_norm_and_convolutions(capfd):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
    x, target = torch.randn(4, 3, 8, 8), torch.randn(4, 8 * 36)
    for peer in (model, bnlab.convert(model)):
        for mode in ("train", "eval"):
            p = models.profile_step(peer, models.step_function(peer, mode, x, target))
            assert 0 < p["bn_ms"] < p["step_ms"] and 0 < p["conv_ms"] < p["step_ms"]
    no_bn = models.profile_step(model[0], models.step_function(model[0], "eval", x, target))
    assert no_bn["bn_ms"] == 0 and no_bn["conv_ms"] > 0
    native = capfd.readouterr()
    assert "profiler_start" not in native.err + native.out, "the profiler's C++ lines leaked"


def test_grid_configs():
    grid = models.Grid(batches=(8, 1), sizes=(224, 64))
    assert grid.configs(models.NETWORKS["tv-resnet18"]) == [(1, 64), (1, 224), (8, 64), (8, 224)]
    assert grid.configs(models.NETWORKS["lizard-cnn"]) == [(1, 0), (8, 0), (1000, 0)]
    assert models.QUICK_GRID.configs(models.NETWORKS["lizard-cnn"]) == [(2, 0)]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_peak_memory_in_a_fresh_process():
    """lizard-cnn at batch 1000 keeps at least its first activations (1000 x 6 x 24 x 24
    float32: 14 MB) for the backward."""
    peak = models.peak_memory_mb("lizard-cnn", "train", "bnlab", 1000, 0)
    assert isinstance(peak, float) and 14 < peak < 2000, peak


def test_peak_memory_of_a_peer_that_is_not_there(capsys):
    models._peak_memory_child("lizard-cnn:train:fused:1000:0")  # what the fresh process runs
    reason = json.loads(capsys.readouterr().out)
    assert reason == {"unavailable": "no BN followed by an activation to fuse"}


def test_sizes_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--models", "--sizes", "0"])
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_threads_option_holds(tmp_path):
    """Numba's pool, started by the first large kernel call, resets the OpenMP thread count it
    shares with torch: ``--threads`` must be set after it (a fresh process, pool not started)."""
    out = tmp_path / "t.json"
    argv = ["--models", "lizard-cnn", "--batches", "1000", "--modes", "eval", "--threads", "1"]
    argv += ["--reps", "1", "--warmup", "0", "--no-memory", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bnlab.bench.models", *argv], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["threads"] == 1


def test_batch_one_into_batchnorm1d_is_skipped_not_fatal(tmp_path):
    """Training mpg-mlp at batch 1 puts one value per channel into BatchNorm1d, which torch
    and bnlab refuse: that configuration is reported as skipped, and the others are kept."""
    out = tmp_path / "bench_models.json"
    argv = ["--models", "mpg-mlp", "--batches", "1", "2", "--modes", "train", "--reps", "1"]
    assert models.main([*argv, "--warmup", "0", "--no-memory", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rows"][0]["batch"] == 2  # then the preset's own batch
    (key,) = data["skipped"]
    assert key.startswith("mpg-mlp train batch 1") and "1 value per channel" in data["skipped"][key]
