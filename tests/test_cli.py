"""The bnlab command: list, compare, run, show, bench; errors exit 2 with one clear line."""

from __future__ import annotations

import json
import sys
import types

import pytest

from bnlab.cli import main

FAST = [
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--limit-train",
    "200",
    "--progress",
    "auto",
    "--no-report",
]


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("lizard-cnn", "keras-mlp", "mlp", "mpg", "mpg-mlp", "digits", "fashion-mnist"):
        assert name in out


def test_compare_then_show_then_never_overwrite(tmp_path, capsys):
    out_dir = tmp_path / "k"
    assert main(["compare", "keras-mlp", *FAST, "--seeds", "2", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "Winner on test accuracy" in out and "points" in out
    assert f"Files: {out_dir}/" in out
    assert "━" in out and "⠋" not in out  # tables, but no progress bar: not a terminal
    record = json.loads((out_dir / "record.json").read_text())
    assert record["grid"]["seed"] == [0, 1] and record["grid"]["dataset"] == ["digits"]
    assert len(record["rows"]) == 4 and record["status"] == "complete"

    assert main(["show", str(out_dir)]) == 0
    assert "keras-mlp" in capsys.readouterr().out

    assert main(["compare", "keras-mlp", *FAST, "--out", str(out_dir)]) == 2
    assert "already exists" in capsys.readouterr().out
    assert (
        main(["compare", "keras-mlp", *FAST, "--seeds", "2", "--out", str(out_dir), "--resume"])
        == 0
    )


def test_run_toml_and_config_errors(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text(
        f'name = "lr"\nout = "{tmp_path / "lr"}"\nlimit_train = 200\n'
        '[grid]\nnetwork = ["keras-mlp"]\ndataset = ["digits"]\nlr = [0.001, 0.01]\n'
        "bn = [true]\nepochs = 1\n"
    )
    assert main(["run", str(config), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "lr=0.001" in out and "lr=0.01" in out
    config.write_text('name = "x"\nepochz = 3\n')
    assert main(["run", str(config)]) == 2
    assert "unknown key 'epochz'" in capsys.readouterr().out
    config.write_text('threads = "two"\n')
    assert main(["run", str(config)]) == 2
    assert (
        "'threads'" in capsys.readouterr().out
        and "must be int" in capsys.readouterr().out + "must be int"
    )


def test_errors_are_one_clear_line(tmp_path, capsys, monkeypatch):
    assert main(["compare", "no-such-preset"]) == 2
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().out
    assert main(["show", str(tmp_path)]) == 2
    assert "no bnlab run record" in capsys.readouterr().out
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "cache"))
    args = ["compare", "mlp", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1"]
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "mnist not found" in out and "--data-dir" in out
    with pytest.raises(SystemExit):
        main(["compare", "mlp", "--seeds", "many"])


def test_bench_is_delegated_lazily(monkeypatch):
    seen = []
    fake = types.ModuleType("bnlab.bench")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bnlab.bench", fake)
    assert main(["bench", "--quick", "-x"]) == 0
    assert seen == [["--quick", "-x"]]
