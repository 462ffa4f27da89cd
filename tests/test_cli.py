"""The bnlab command: list, compare, run, show, bench; user errors exit 2 with one clear line
on stderr, internal errors exit 1 with their traceback."""

from __future__ import annotations

import errno
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab import cli
from bnlab.cli import main
from bnlab.lab.record import load_record

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
    assert "inner on test accuracy at epoch 1" in out  # "Winner ..." or "No winner ..."
    assert f"Files: {out_dir}/" in out
    assert "every run and epoch" in out and "⠋" not in out  # tables, no bar: not a terminal
    record = load_record(out_dir)
    assert record.grid["seed"] == [0, 1] and record.grid["dataset"] == ["digits"]
    assert len(record.rows) == 4 and record.status == "complete"

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
    record = load_record(out_dir)
    assert record.grid["bn_momentum"] == ["cumulative"] and record.grid["bn_eps"] == [1e-4]
    assert {(r["bn_momentum"], r["bn_eps"]) for r in record.rows} == {("cumulative", 1e-4)}
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


def test_ctrl_c_outside_training_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args, console):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "list", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


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


def test_bench_is_a_subcommand_with_the_kernel_benchmarks_options(monkeypatch, capsys):
    from bnlab.bench import kernels

    seen = []
    monkeypatch.setattr(kernels, "run_from_args", lambda args: seen.append(args) or 0)
    assert main(["bench", "--quick", "--cases", "10x5", "--reps", "3"]) == 0
    (args,) = seen
    assert args.quick and args.reps == 3 and args.cases[0].shape == (10, 5)
    # quick mode's rows say nothing about the kernels: one line says so
    assert capsys.readouterr().out.replace("\n", " ").startswith("Note: --quick times tiny")
    assert main(["bench", "--cases", "10x5"]) == 0
    assert "Note" not in capsys.readouterr().out
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


# -- errors on paths: one line, exit 2 ------------------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: creating anything in ``folder`` fails as on a read-only mount
    (EROFS), for every user (the tests may run as root, whom chmod does not stop)."""
    folders: list[str] = []
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path) -> None:
        if os.path.dirname(os.path.abspath(path)) in folders:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return lambda folder: folders.append(os.path.abspath(folder))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    assert main(["compare", "keras-mlp", *FAST, "--out", str(file)]) == 2
    assert f"{file} is a file, not a folder" in _one_line_error(capsys)
    assert main(["compare", "keras-mlp", *FAST, "--out", str(file / "run")]) == 2
    assert f"cannot write the experiment folder {file / 'run'}" in _one_line_error(capsys)
    assert file.read_text() == "mine"


def test_out_on_a_read_only_place_is_one_line(tmp_path, capsys, read_only):
    (tmp_path / "fixed").mkdir()  # an existing, empty folder that cannot be written
    read_only(tmp_path)
    read_only(tmp_path / "fixed")
    out = tmp_path / "new"
    assert main(["compare", "keras-mlp", *FAST, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"cannot write the experiment folder {out}: Read-only file system" in err
    assert main(["compare", "keras-mlp", *FAST, "--out", str(tmp_path / "fixed")]) == 2
    assert "Read-only file system; choose another --out" in _one_line_error(capsys)


def test_report_to_a_read_only_place_is_one_line(tmp_path, capsys, read_only):
    run_dir = tmp_path / "k"
    assert main(["compare", "keras-mlp", *FAST, "--out", str(run_dir)]) == 0
    capsys.readouterr()
    read_only(tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    assert main(["report", str(run_dir), "-o", str(tmp_path / "ro" / "report.html")]) == 2
    err = _one_line_error(capsys)
    assert f"cannot create files in {tmp_path / 'ro'}: Read-only file system" in err


def test_report_of_several_folders_needs_an_output(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        assert main(["compare", "keras-mlp", *FAST, "--out", str(folder)]) == 0
    capsys.readouterr()
    assert not (first / "report.html").exists()  # --no-report
    assert main(["report", str(first), str(second)]) == 2
    assert "needs -o FILE" in _one_line_error(capsys)
    assert not (first / "report.html").exists()  # A/report.html is A's own report
    assert main(["report", str(first), str(second), "-o", str(tmp_path / "both.html")]) == 0
    assert (tmp_path / "both.html").exists()


def test_internal_os_error_keeps_its_traceback(monkeypatch, capsys):
    """Only an OSError on a path the user can fix is one line: others are bugs."""

    def broken(args, console):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert main(["list"]) == 1
    assert "Traceback" in capsys.readouterr().err


# -- Ctrl-C: one line, with the exact command that continues ---------------------------------


def test_ctrl_c_prints_once_the_command_that_continues(tmp_path, capsys, monkeypatch):
    import bnlab.lab.experiment as experiment

    out_dir = tmp_path / "my runs" / "k"  # a space: the command must quote it
    args = ["compare", "keras-mlp", *FAST, "--epochs", "2", "--out", str(out_dir)]
    real = experiment.run_epoch
    epochs = []

    def interrupt_the_second_epoch(*a, **k):
        epochs.append(1)
        if len(epochs) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(experiment, "run_epoch", interrupt_the_second_epoch)
    assert main(args) == 130
    out, err = capsys.readouterr()
    assert "interrupted" not in out
    continue_with = (
        "bnlab compare keras-mlp --dataset digits --epochs 1 --limit-train 200 --progress auto "
        f"--no-report --epochs 2 --out '{out_dir}' --resume"
    )
    assert err == (
        f"interrupted: every finished epoch is saved in {out_dir}; continue with: {continue_with}\n"
    )
    monkeypatch.setattr(experiment, "run_epoch", real)
    assert main(shlex.split(continue_with)[1:]) == 0
    record = load_record(out_dir)
    assert record.status == "complete" and len(record.rows) == 4


def test_resume_command_of_a_distributed_run(monkeypatch, tmp_path):
    folder = tmp_path / "d"
    monkeypatch.delenv(cli.LAUNCH_ARGV_ENV, raising=False)
    worker = ["worker", "compare", "mlp", "--out=old", "--sync-bn"]
    assert cli.resume_command(worker, folder) == (
        f"torchrun ... -m bnlab worker compare mlp --sync-bn --out {folder} --resume"
    )
    monkeypatch.setenv(cli.LAUNCH_ARGV_ENV, json.dumps(["compare", "mlp", "--nproc", "2"]))
    assert cli.resume_command(worker, folder) == (
        f"bnlab compare mlp --nproc 2 --out {folder} --resume"
    )


# -- the saved config, a typo in --probe-layer, the MNIST fallback ---------------------------


def test_saved_config_reruns_as_its_first_line_says(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = 'smile 🙂 "quoted" back\\slash'
    args = ["compare", "keras-mlp", *FAST, "--name", name, "--out", str(tmp_path / "first")]
    assert main(args) == 0
    saved = tmp_path / "first" / "config.toml"
    assert "`bnlab run FILE` runs it again" in saved.read_text().splitlines()[0]
    assert main(["run", str(saved), "--no-report"]) == 0  # not "already exists"
    again = load_record(tmp_path / "runs" / name)
    assert again.name == name and again.status == "complete"
    assert (
        again.rows[-1]["test_accuracy"] == load_record(tmp_path / "first").rows[-1]["test_accuracy"]
    )


def test_probe_layer_typo_fails_before_any_folder(tmp_path, capsys):
    out_dir = tmp_path / "p"
    args = ["compare", "keras-mlp", *FAST, "--probe", "activations", "--out", str(out_dir)]
    assert main([*args, "--probe-layer", "Linearr#1"]) == 2
    err = _one_line_error(capsys)
    assert "'Linearr#1'" in err and "Linear#1" in err  # the layers that exist are listed
    assert not out_dir.exists()
    assert main([*args, "--probe-layer", "Linear#1"]) == 0  # corrected: simply run again
    assert (out_dir / "probes" / "run-1.json").exists()
    # resuming with another probe layer would measure another layer: refused, not ignored
    assert main([*args, "--probe-layer", "Linear#0", "--resume"]) == 2
    assert "probe_layer: saved 'Linear#1', now 'Linear#0'" in _one_line_error(capsys)


def test_mnist_missing_from_the_data_dir_given_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path / "cache"))
    args = ["compare", "mlp", "--data-dir", str(tmp_path), "--epochs", "1", "--no-report"]
    assert main(args) == 2  # no silent fallback to a Fashion-MNIST that is not there either
    err = _one_line_error(capsys)
    assert f"mnist not found in {tmp_path}: no train-images-idx3-ubyte[.gz]" in err
    assert "t10k-labels-idx1-ubyte[.gz]" in err and "fashion" not in err


def test_toml_settings_errors_name_the_file(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text("threads = -1\n[grid]\nlr = [0.1]\n")
    assert main(["run", str(config)]) == 2
    assert f"key 'threads' in {config} must be >= 0, got -1" in _one_line_error(capsys)


# -- help and discoverability ------------------------------------------------------------------


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_help_gives_each_flag_and_its_default(capsys):
    text = " ".join(_help(capsys, "compare").split())  # argparse wraps lines
    for flag in ("--epochs N", "--lr LR", "--batch-size N"):
        assert flag in text
    assert (
        "epochs per run (default: the preset's: lizard-cnn 5, keras-mlp 5, mlp 5, mpg 200)" in text
    )
    assert "learning rate (default: the preset's: lizard-cnn 0.01" in text
    assert "(default: the preset's: lizard-cnn 1000, keras-mlp 32, mlp 64, mpg 32)" in text
    assert "seconds to wait for a missing rank (default 300)" in text


def test_run_help_shows_a_config_that_loads(capsys, tmp_path):
    from bnlab.lab.config import load_config

    text = _help(capsys, "run")
    assert cli.TOML_EXAMPLE in text
    path = tmp_path / "example.toml"
    path.write_text(cli.TOML_EXAMPLE)
    config = load_config(path)
    assert config.preset == "lizard-cnn" and config.grid["lr"] == [0.001, 0.01, 0.1]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert cli.TOML_EXAMPLE in readme  # the README shows the same file


def test_bench_help_lists_every_option_and_the_other_benchmarks(capsys):
    text = _help(capsys, "bench")
    for option in ("--quick", "--cases", "--ops", "--reps", "--warmup", "--json"):
        assert option in text
    assert "python -m bnlab.bench.TOOL" in text and "sync " in text and "SyncBatchNorm" in text


def test_version(capsys):
    import bnlab

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"bnlab {bnlab.__version__}\n"


def test_help_imports_neither_torch_nor_the_lab_dependencies():
    code = (
        "import sys\n"
        "from bnlab.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('torch', 'numpy', 'numba', 'rich', 'matplotlib')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy), file=sys.stderr)\n"
    )
    for argv in (["--help"], ["compare", "--help"], ["run", "--help"], ["--version"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and done.stdout, done.stderr
        assert done.stderr.strip() == "[]", f"bnlab {' '.join(argv)} imported {done.stderr}"
