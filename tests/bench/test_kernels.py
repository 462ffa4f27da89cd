"""Smoke test of the kernel benchmark on tiny cases: it runs, prints, and writes well-formed JSON."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from bnlab.bench import kernels


def test_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    code = kernels.main(
        ["--quick", "--cases", "6x4x3x3_cl", "10x5", "--reps", "2", "--json", str(out)]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["bandwidth_gbs"]["copy"] > 0 and data["bandwidth_gbs"]["read"] > 0
    rows = data["rows"]
    assert [(r["case"], r["op"]) for r in rows] == [
        (case, op) for case in ("6x4x3x3_cl", "10x5") for op in kernels.OPS
    ]
    for r in rows:
        assert r["times_ms"]["torch"] > 0 and r["times_ms"]["bnlab"] > 0
        assert math.isfinite(r["speedup"]) and r["roofline_x"] > 0
        assert set(r["peak_extra_mb"]) == set(r["times_ms"])
    assert "bnlab_then_relu" in rows[4]["times_ms"]
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"], "temporary file left behind"
    printed = capsys.readouterr().out
    assert "speedup" in printed and "10x5" in printed


def test_case_parsing():
    assert kernels._parse_case("256x64x28x28_cl") == kernels.Case((256, 64, 28, 28), True)
    assert kernels._parse_case("1000x120").shape == (1000, 120)
    with pytest.raises(argparse.ArgumentTypeError, match="a case is like"):
        kernels._parse_case("axb")
    with pytest.raises(argparse.ArgumentTypeError, match="channels_last"):
        kernels._parse_case("10x5_cl")


def test_reps_must_be_positive():
    with pytest.raises(SystemExit, match="--reps must be >= 1, got 0"):
        kernels.main(["--quick", "--reps", "0"])
