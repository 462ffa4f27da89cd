"""Run grid expansion and names, typed config checks (errors name the key, where it came from and
the value; renamed keys name the new one), TOML round trip, presets, BN axes, stats."""

from __future__ import annotations

import math

import pytest

from bnlab.lab.config import Config, config_from_dict, load_config
from bnlab.lab.errors import UsageError
from bnlab.lab.grid import RunParams, check_value, expand
from bnlab.lab.models import BN_IMPLS, NETWORKS, build_model
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
    ("grid", "match"),
    [
        ({"learning_rate": [0.1]}, "unknown parameter 'learning_rate'"),
        ({"lr": ["fast"]}, "parameter 'lr' in grid must be float, got str"),
        ({"batch_size": [3.5]}, "'batch_size' in grid must be int"),
        ({"bn": [1]}, "'bn' in grid must be bool, got int"),
        ({"epochs": [True]}, "'epochs' in grid must be int, got bool"),
        ({"optimizer": ["rmsprop"]}, "must be one of adam, sgd"),
        ({"lr": [-1.0]}, "'lr' in grid must be > 0, got -1.0"),
        ({"lr": [float("nan")]}, "'lr' in grid must be > 0, got nan"),
        ({"seed": []}, "empty list"),
        ({"seed": [1, 1]}, "lists a value twice"),
        ({"sgd_momentum": [-0.5]}, "'sgd_momentum' in grid must be >= 0, got -0.5"),
        (
            {"bn_momentum": [1.5]},
            r"'bn_momentum' in grid must be in \[0, 1\] or 'cumulative', got 1.5",
        ),
        ({"bn_momentum": [-0.1]}, r"'bn_momentum' in grid must be in \[0, 1\]"),
        ({"bn_momentum": ["slow"]}, "'bn_momentum' in grid must be float or 'cumulative', got str"),
        ({"bn_momentum": [None]}, "'bn_momentum' in grid must be float or 'cumulative', got None"),
        ({"bn_eps": [0.0]}, "'bn_eps' in grid must be > 0, got 0.0"),
        ({"bn_eps": [-1e-5]}, "'bn_eps' in grid must be > 0, got -1e-05"),
        (
            {"momentum": [0.9]},
            "parameter 'momentum' in grid was renamed 'sgd_momentum' "
            r"\(SGD momentum; BN's is 'bn_momentum'\)",
        ),
    ],
)
def test_grid_rejects_bad_values(grid, match):
    with pytest.raises(UsageError, match=match):
        expand(grid)


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    with pytest.raises(UsageError, match="unknown key 'epoch' in config"):
        config_from_dict({"epoch": 3})
    with pytest.raises(UsageError, match="key 'threads' in config must be int, got str"):
        config_from_dict({"threads": "2"})
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[grid]\nlr = [0.1]\nbatchsize = [2]\n')
    with pytest.raises(
        UsageError, match=r"unknown parameter 'batchsize' in \[grid\] of .*bad.toml"
    ):
        load_config(path)
    path.write_text("name = \n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(UsageError, match="unknown preset"):
        Config(preset="resnet")


def test_config_errors_name_the_file_section_key_and_value(tmp_path):
    path = tmp_path / "sweep.toml"
    cases = [
        ("[grid]\nlr = [0.1, -1]\n", f"parameter 'lr' in [grid] of {path} must be > 0, got -1.0"),
        ("[grid]\nbn_eps = 0\n", f"parameter 'bn_eps' in [grid] of {path} must be > 0, got 0.0"),
        ("threads = -1\n", f"key 'threads' in {path} must be >= 0, got -1"),
        ('progress = "never"\n', f"key 'progress' in {path} must be 'auto', 'on' or 'off'"),
        ('preset = "resnet"\n', f"key 'preset' in {path}: unknown preset 'resnet'"),
        ('probes = ["bogus"]\n', f"key 'probes' in {path}: unknown probe(s) ['bogus']"),
        ("lr = 0.1\n", f"key 'lr' in {path} is a run parameter: put it in the [grid] table"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(UsageError) as caught:
            load_config(path)
        assert str(caught.value).startswith(message), (text, str(caught.value))


def test_an_unknown_place_is_left_out_not_printed_empty():
    with pytest.raises(UsageError) as caught:
        check_value("lr", -1.0, where="")
    assert str(caught.value) == "parameter 'lr' must be > 0, got -1.0"


def test_renamed_keys_name_the_new_key(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('preset = "mlp"\n[grid]\nmomentum = [0.9]\n')
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"parameter 'momentum' in [grid] of {path} was renamed 'sgd_momentum' "
        "(SGD momentum; BN's is 'bn_momentum')"
    )
    path.write_text("momentum = 0.9\n")
    with pytest.raises(UsageError, match=r"config key 'momentum' in .* was renamed 'sgd_momentum'"):
        load_config(path)


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


@pytest.mark.parametrize(
    "name",
    ["smile 🙂", "日本語の実験", 'quote " and \\ backslash', "tab\tnew\nline", "\x7f\x01 controls"],
)
def test_toml_round_trip_of_any_name(tmp_path, name):
    """Every string reads back, also those outside the Basic Multilingual Plane (an emoji was
    written as a JSON surrogate pair, which TOML rejects) and control characters."""
    config = Config(
        name=name, data_dir=name, grid={"lr": [0.1], "bn_momentum": ["cumulative", 0.1]}
    )
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    assert load_config(path) == config


def test_presets_match_the_tutorials():
    lizard = PRESETS["lizard-cnn"].params
    assert lizard["lr"] == [0.01] and lizard["batch_size"] == [1000]
    assert lizard["normalization"] == ["normal"] and lizard["optimizer"] == ["adam"]
    mlp = PRESETS["mlp"].params
    assert mlp["optimizer"] == ["sgd"] and mlp["sgd_momentum"] == [0.9]
    assert mlp["batch_size"] == [64]
    assert PRESETS["keras-mlp"].params["batch_size"] == [32]
    assert "Softmax" in PRESETS["keras-mlp"].description
    assert [p.tutorial[:3] for p in PRESETS.values()] == ["001", "000", "002", "003"]
    for preset in PRESETS.values():
        expand(preset.params)  # every preset's parameters pass the grid's checks


def test_bn_momentum_and_eps_default_to_the_networks_own():
    """keras-mlp keeps its tutorial's Keras defaults (0.01 in PyTorch's terms, 1e-3); every other
    network gets PyTorch's (0.1, 1e-5); a grid value applies to every network."""
    assert (RunParams().bn_momentum, RunParams().bn_eps) == (0.1, 1e-5)
    keras = RunParams(network="keras-mlp")
    assert (keras.bn_momentum, keras.bn_eps) == (0.01, 1e-3)
    runs = expand({"network": ["mlp", "keras-mlp"], "bn_eps": [1e-4]})
    assert [(r.params.bn_momentum, r.params.bn_eps) for r in runs] == [(0.1, 1e-4), (0.01, 1e-4)]
    assert [r.name for r in runs] == ["network=mlp", "network=keras-mlp"]
    runs = expand({"network": ["keras-mlp"], "bn_momentum": [0.1, "cumulative"], "bn_eps": 1})
    assert [r.name for r in runs] == ["bn_momentum=0.1", "bn_momentum=cumulative"]
    assert runs[1].params.bn_momentum == "cumulative" and runs[1].params.bn_eps == 1.0


def _bn_layers(model):
    kinds = tuple(c for pair in BN_IMPLS.values() for c in pair)
    return [m for m in model.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("bn_impl", list(BN_IMPLS))
@pytest.mark.parametrize("network", list(NETWORKS))
def test_bn_axes_reach_every_bn_layer(network, bn_impl):
    shape = (1, 28, 28)
    default = _bn_layers(build_model(network, True, bn_impl, shape, 10, seed=0))
    own = (0.01, 1e-3) if network == "keras-mlp" else (0.1, 1e-5)
    assert default and all((m.momentum, m.eps) == own for m in default)
    given = _bn_layers(build_model(network, True, bn_impl, shape, 10, 0, 0.05, 1e-4))
    assert len(given) == len(default) and all((m.momentum, m.eps) == (0.05, 1e-4) for m in given)
    cumulative = _bn_layers(build_model(network, True, bn_impl, shape, 10, 0, "cumulative"))
    assert all(m.momentum is None and m.eps == own[1] for m in cumulative)
    assert not _bn_layers(build_model(network, False, bn_impl, shape, 10, 0, 0.05, 1e-4))


def test_mean_ci95_against_numpy_t_table():
    values = [0.91, 0.93, 0.92]
    mean, half = mean_ci95(values)
    # t(0.975, 2) = 4.302652729911275 (tables); s = 0.01
    assert math.isclose(mean, 0.92, abs_tol=1e-12)
    assert math.isclose(half, 4.302652729911275 * 0.01 / math.sqrt(3), rel_tol=1e-9)
    assert math.isnan(mean_ci95([0.5])[1]) and mean_ci95([0.5])[0] == 0.5
    assert math.isnan(mean_ci95([])[0])
    assert mean_ci95([1.0, float("nan"), 3.0])[0] == 2.0
