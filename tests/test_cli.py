"""The bnlab command: list, compare, run, show, bench; user errors exit 2 with one clear line
on stderr, internal errors exit 1 with their traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bnlab import cli
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
    header = next(line for line in out.splitlines() if "preset" in line and "network" in line)
    assert "tutorial" in header and "seed" not in header  # "seed" is for random seeds only
    assert "tutorial 001:" in out and "seed 00" not in out


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
    assert "already exists" in capsys.readouterr().err
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
    assert "unknown key 'epochz'" in capsys.readouterr().err
    config.write_text('threads = "two"\n')
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'threads'" in err and "must be int" in err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    config.write_text("[grid]\nlr = [0.1]\nmomentum = [0.9]\n")
    assert main(["run", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: parameter 'momentum' in [grid] of {config} was renamed 'sgd_momentum' "
        "(SGD momentum; BN's is 'bn_momentum')\n"
    )
    config.write_text("[grid]\nlr = -1\n")
    assert main(["run", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: parameter 'lr' in [grid] of {config} must be > 0, got -1.0\n"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-1"], "--lr must be > 0, got -1.0"),
        (["--epochs", "0"], "--epochs must be > 0, got 0"),
        (["--bn-eps", "0"], "--bn-eps must be > 0, got 0.0"),
        (["--bn-momentum", "2"], "--bn-momentum must be in [0, 1] or 'cumulative', got 2.0"),
        (["--sgd-momentum", "-0.1"], "--sgd-momentum must be >= 0, got -0.1"),
        (["--seeds", "1,1"], "--seeds lists a value twice: [1, 1]"),
        (["--threads", "-2"], "--threads must be >= 0, got -2"),
        (["--limit-train", "-5"], "--limit-train must be >= 0, got -5"),
        (["--probe", "bogus"], "--probe: unknown probe(s) ['bogus']"),
        (["--dataset", "cifar"], "--dataset must be one of"),
    ],
)
def test_run_setting_errors_name_their_flag(flags, message, capsys):
    assert main(["compare", "mlp", *flags, "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_bn_flags_reach_the_grid(tmp_path, capsys):
    out_dir = tmp_path / "bn"
    args = ["compare", "keras-mlp", *FAST, "--out", str(out_dir)]
    assert main([*args, "--bn-momentum", "cumulative", "--bn-eps", "1e-4"]) == 0
    record = json.loads((out_dir / "record.json").read_text())
    assert record["grid"]["bn_momentum"] == ["cumulative"] and record["grid"]["bn_eps"] == [1e-4]
    assert {(r["bn_momentum"], r["bn_eps"]) for r in record["rows"]} == {("cumulative", 1e-4)}
    with pytest.raises(SystemExit):
        main(["compare", "mlp", "--bn-momentum", "fast"])
    assert "expected a number in [0, 1] or 'cumulative', got 'fast'" in capsys.readouterr().err


def test_errors_are_one_clear_line(tmp_path, capsys, monkeypatch):
    assert main(["compare", "no-such-preset"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: unknown preset 'no-such-preset'; expected one of lizard-cnn")
    assert err.count("\n") == 1 and out == ""
    assert main(["show", str(tmp_path)]) == 2
    assert "no bnlab run record" in capsys.readouterr().err
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "cache"))
    args = ["compare", "mlp", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "mnist not found" in err and "--data-dir" in err
    with pytest.raises(SystemExit) as exited:
        main(["compare", "mlp", "--seeds", "many"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        main(["compare", "mlp", "--nproc", "0"])
    assert "--nproc: expected a positive integer, got '0'" in capsys.readouterr().err
    assert main(["compare", "mlp", *FAST, "--out", str(tmp_path / "none"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no experiment to resume at") and "Traceback" not in err


def test_internal_error_exits_1_with_its_traceback(monkeypatch, capsys):
    def broken(args, console):
        raise RuntimeError("a bug in a command")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert "RuntimeError: a bug in a command" in err and "internal error" in err
    assert "error: a bug in a command" not in err  # not dressed as the user's mistake


def test_a_value_error_outside_the_input_checks_is_internal(monkeypatch, capsys):
    def broken(args, console):
        raise ValueError("an unexpected value deep in a run")

    monkeypatch.setitem(cli.COMMANDS, "show", broken)
    assert main(["show", "anywhere"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args, console):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "list", interrupted)
    assert main(["list"]) == 130
    assert (
        "interrupted: every finished epoch is saved; --resume continues" in capsys.readouterr().err
    )


def test_python_m_bnlab_is_the_command(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "bnlab", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "lizard-cnn" in done.stdout and "fashion-mnist" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "bnlab", "show", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.startswith("error: no bnlab run record")


def test_missing_lab_dependency_is_one_line(tmp_path):
    """Without rich (the lab's extra), one line says how to install it."""
    code = "import sys; sys.modules['rich'] = None; from bnlab.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, "list"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == 'error: rich is not installed: pip install "bnlab[lab]"\n'


def test_bench_is_a_subcommand_with_the_kernel_benchmarks_options(monkeypatch):
    seen = []
    monkeypatch.setattr(cli.kernel_bench, "run_from_args", lambda args: seen.append(args) or 0)
    assert main(["bench", "--quick", "--cases", "10x5", "--reps", "3"]) == 0
    (args,) = seen
    assert args.quick and args.reps == 3 and args.cases[0].shape == (10, 5)
    assert args.json == "bench.json" and args.warmup == 10
    with pytest.raises(SystemExit):
        main(["bench", "--no-such-option"])


def test_worker_needs_the_torchrun_environment(monkeypatch, capsys):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert main(["worker", "compare", "mlp", *FAST]) == 2
    err = capsys.readouterr().err
    assert "bnlab worker is one rank" in err and "--nproc N" in err
    with pytest.raises(SystemExit):  # a worker starts no ranks
        main(["worker", "compare", "mlp", "--nproc", "2"])


def test_torchrun_environment_without_worker_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "mlp", *FAST]) == 2
    assert "start each rank as `bnlab worker compare ...`" in capsys.readouterr().err
