"""The SyncBatchNorm overhead benchmark runs end to end on 2 processes and reports each shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab.bench import sync


def test_bench_writes_one_row_per_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sync.json"
    argv = ["--shape", "6x3", "--shape", "4x2x3x3", "--repeats", "2", "--warmup", "1"]
    argv += ["--json", str(out)]
    assert sync.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows] == ["6x3", "4x2x3x3"]
    for r in rows:
        assert r["local_ms"] > 0 and r["sync_ms"] > 0
        assert r["ratio"] == pytest.approx(r["sync_ms"] / r["local_ms"])


@pytest.mark.parametrize("bad", ["7", "3x0", "1x2x3x4x5x6", "ax3"])
def test_bench_rejects_bad_shapes(bad: str) -> None:
    with pytest.raises(SystemExit):
        sync.main(["--shape", bad])


def test_bench_needs_two_processes() -> None:
    with pytest.raises(SystemExit, match="at least 2"):
        sync.main(["--nproc", "1"])


def test_runs_as_a_module(tmp_path: Path) -> None:
    """``python -m bnlab.bench.sync`` (the README's command), without warm-up steps."""
    out = tmp_path / "sync.json"
    cmd = [sys.executable, "-m", "bnlab.bench.sync", "--shape", "6x3", "--repeats", "1"]
    cmd += ["--warmup", "0", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SyncBatchNorm vs local BatchNorm" in done.stdout
    assert [r["shape"] for r in json.loads(out.read_text())["rows"]] == ["6x3"]
