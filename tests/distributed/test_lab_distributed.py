"""Distributed lab runs: ``bnlab compare --nproc 2 --sync-bn`` reproduces the one-process run,
only rank 0 writes, and a rank (``bnlab worker``) that is killed or hangs ends the run with an
error naming it while the finished epochs stay on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlab.cli import main as cli_main
from bnlab.lab.distributed_run import shard_sizes, strip_nproc
from bnlab.lab.errors import UsageError
from bnlab.lab.launch import free_port
from bnlab.lab.record import load_record

SMALL = ["--dataset", "digits", "--batch-size", "50", "--limit-train", "300", "--limit-test"]
SMALL += ["100", "--progress", "off", "--no-report"]


def _rows(folder: Path) -> list[dict]:
    return load_record(folder).rows


def test_sync_bn_on_two_ranks_reproduces_one_process(tmp_path: Path) -> None:
    dist_out, local_out = tmp_path / "dist", tmp_path / "local"
    cmd = [sys.executable, "-m", "bnlab", "compare", "mlp", "--epochs", "2", *SMALL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "--nproc", "2", "--sync-bn", "--out", str(dist_out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert cli_main(["compare", "mlp", "--epochs", "2", *SMALL, "--out", str(local_out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "local"]  # rank 1 wrote nothing
    record = json.loads((dist_out / "record.json").read_text())
    assert record["environment"]["distributed"]["world_size"] == 2
    assert record["environment"]["distributed"]["sync_bn"] is True
    got, want = _rows(dist_out), _rows(local_out)
    assert [(r["group"], r["epoch"]) for r in got] == [(r["group"], r["epoch"]) for r in want]
    for g, w in zip(got, want, strict=True):
        for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
            diff = abs(g[key] - w[key])
            assert diff < 1e-4, f"{g['group']} epoch {g['epoch']} {key}: |diff| {diff:.2e}"


def _start_ranks(tmp_path: Path, out: Path, timeout_s: float) -> list[subprocess.Popen[str]]:
    """Two ranks started the way torchrun starts them (its environment variables)."""
    port = free_port()
    cmd = [sys.executable, "-m", "bnlab", "worker", "compare", "mlp", "--epochs", "500", *SMALL]
    cmd += ["--out", str(out), "--dist-timeout", str(timeout_s)]
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "TORCH_CPP_LOG_LEVEL": "ERROR",
            "COLUMNS": "200",
        }
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def _wait_for_epochs(out: Path, procs: list[subprocess.Popen[str]], epochs: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a rank ended early:\n{p.communicate()[0]}")
        try:
            if len(_rows(out)) >= epochs:
                return
        except (FileNotFoundError, UsageError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"no {epochs} epochs on disk after 180 s")


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_lost_rank_ends_run_naming_it_and_keeps_epochs(tmp_path: Path, fault: str) -> None:
    out = tmp_path / "run"
    timeout_s = 5.0  # a killed peer is noticed at once, a hung one after the timeout
    procs = _start_ranks(tmp_path, out, timeout_s)
    try:
        _wait_for_epochs(out, procs, 2)
        os.kill(procs[1].pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        started = time.monotonic()
        output, _ = procs[0].communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = " ".join(output.split())
    assert procs[0].returncode != 0, text
    assert "rank 1 stopped answering (died, or hung past the timeout)" in text, text
    assert f"Every epoch finished before that is saved in {out}" in text, text
    assert waited < 2 * timeout_s + 30, f"rank 0 took {waited:.0f} s to give up"
    record = load_record(out)
    assert record.status == "failed"
    assert len(record.rows) >= 2 and record.runs[0]["epochs_done"] >= 2


def test_shard_sizes_and_strip_nproc() -> None:
    assert shard_sizes(7, 3) == [3, 2, 2]
    assert shard_sizes(1, 2) == [1, 0]
    assert strip_nproc(["compare", "mlp", "--nproc", "2", "--sync-bn"]) == [
        "compare",
        "mlp",
        "--sync-bn",
    ]
    assert strip_nproc(["run", "a.toml", "--nproc=3"]) == ["run", "a.toml"]


def test_sync_bn_without_processes_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["compare", "mlp", "--sync-bn", *SMALL]) == 2
    assert "--sync-bn needs several processes" in capsys.readouterr().err
