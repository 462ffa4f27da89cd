"""Run grid expansion and names, typed config checks, TOML round trip, presets, stats."""

from __future__ import annotations

import math

import pytest

from bnlab.lab.config import Config, config_from_dict, load_config
from bnlab.lab.grid import RunParams, expand
from bnlab.lab.presets import PRESETS
from bnlab.lab.stats import mean_ci95


def test_expand_orders_and_names_runs():
    runs = expand({"lr": [0.1, 0.01], "bn": [False, True], "seed": [0, 1]})
    assert len(runs) == 8 and [r.index for r in runs] == list(range(1, 9))
    assert runs[0].name == "lr=0.1,no_bn,seed=0" and runs[0].group == "lr=0.1,no_bn"
    assert runs[-1].params == RunParams(lr=0.01, bn=True, seed=1)
    assert runs[1].params.seed == 1 and runs[2].params.bn  # last key varies fastest


def test_expand_single_values_are_not_in_the_name():
    runs = expand({"lr": [0.1], "bn": [False, True]})
    assert [r.name for r in runs] == ["no_bn", "bn"]


@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        ({"learning_rate": [0.1]}, ValueError, "unknown parameter 'learning_rate'"),
        ({"lr": ["fast"]}, TypeError, "parameter 'lr' in grid must be float, got str"),
        ({"batch_size": [3.5]}, TypeError, "'batch_size' in grid must be int"),
        ({"bn": [1]}, TypeError, "'bn' in grid must be bool, got int"),
        ({"epochs": [True]}, TypeError, "'epochs' in grid must be int, got bool"),
        ({"optimizer": ["rmsprop"]}, ValueError, "must be one of adam, sgd"),
        ({"lr": [-1.0]}, ValueError, "'lr' in grid must be > 0"),
        ({"seed": []}, ValueError, "empty list"),
        ({"seed": [1, 1]}, ValueError, "lists a value twice"),
    ],
)
def test_grid_rejects_bad_values(grid, error, match):
    with pytest.raises(error, match=match):
        expand(grid)


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'epoch' in config"):
        config_from_dict({"epoch": 3})
    with pytest.raises(TypeError, match="key 'threads' in config must be int, got str"):
        config_from_dict({"threads": "2"})
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[grid]\nlr = [0.1]\nbatchsize = [2]\n')
    with pytest.raises(ValueError, match=r"unknown parameter 'batchsize' in \[grid\]"):
        load_config(path)
    path.write_text("name = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown preset"):
        Config(preset="resnet")


def test_toml_round_trip_of_resolved_config(tmp_path):
    config = Config(
        name='odd "name"', preset="mlp", threads=1, mirrors=["http://a/"], grid={"lr": [0.1]}
    )
    grid = config.resolved_grid()
    assert grid["bn"] == [False, True] and grid["lr"] == [0.1] and grid["optimizer"] == ["sgd"]
    resolved = Config(**{**config.to_dict(), "grid": grid})
    path = tmp_path / "c.toml"
    path.write_text(resolved.to_toml())
    assert load_config(path) == resolved


def test_presets_match_the_seeds():
    lizard = PRESETS["lizard-cnn"].params
    assert lizard["lr"] == [0.01] and lizard["batch_size"] == [1000]
    assert lizard["normalization"] == ["normal"] and lizard["optimizer"] == ["adam"]
    mlp = PRESETS["mlp"].params
    assert mlp["optimizer"] == ["sgd"] and mlp["momentum"] == [0.9] and mlp["batch_size"] == [64]
    assert PRESETS["keras-mlp"].params["batch_size"] == [32]
    assert "Softmax" in PRESETS["keras-mlp"].description


def test_mean_ci95_against_numpy_t_table():
    values = [0.91, 0.93, 0.92]
    mean, half = mean_ci95(values)
    # t(0.975, 2) = 4.302652729911275 (tables); s = 0.01
    assert math.isclose(mean, 0.92, abs_tol=1e-12)
    assert math.isclose(half, 4.302652729911275 * 0.01 / math.sqrt(3), rel_tol=1e-9)
    assert math.isnan(mean_ci95([0.5])[1]) and mean_ci95([0.5])[0] == 0.5
    assert math.isnan(mean_ci95([])[0])
    assert mean_ci95([1.0, float("nan"), 3.0])[0] == 2.0
