"""The SyncBatchNorm overhead benchmark runs end to end on 2 processes and reports each shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnlab.distributed import bench


def test_bench_writes_one_row_per_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sync.json"
    argv = ["--shape", "6x3", "--shape", "4x2x3x3", "--repeats", "2", "--warmup", "1"]
    argv += ["--json", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows] == ["6x3", "4x2x3x3"]
    for r in rows:
        assert r["local_ms"] > 0 and r["sync_ms"] > 0
        assert r["ratio"] == pytest.approx(r["sync_ms"] / r["local_ms"])


@pytest.mark.parametrize("bad", ["7", "3x0", "1x2x3x4x5x6", "ax3"])
def test_bench_rejects_bad_shapes(bad: str) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--shape", bad])


def test_bench_needs_two_processes() -> None:
    with pytest.raises(SystemExit, match="at least 2"):
        bench.main(["--nproc", "1"])


def test_bnlab_bench_sync_runs_this_benchmark(tmp_path: Path) -> None:
    from bnlab.cli import main as cli_main

    out = tmp_path / "sync.json"
    argv = ["bench", "--sync", "--shape", "6x3", "--repeats", "1", "--warmup", "0"]
    assert cli_main([*argv, "--json", str(out)]) == 0
    assert [r["shape"] for r in json.loads(out.read_text())["rows"]] == ["6x3"]
