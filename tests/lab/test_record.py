"""The record's columns are the run parameters' fields; records written before the rename of
``momentum`` (version 1) still load, show, report and resume; bad records are user errors."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from bnlab.cli import main
from bnlab.lab.errors import UsageError
from bnlab.lab.grid import RENAMED_PARAMS, RunParams
from bnlab.lab.record import PARAM_KEYS, RECORD_JSON, VERSION, columns, load_record
from bnlab.lab.report import build_report

# A record written by bnlab before the rename (record version 1): `bnlab compare mlp --dataset
# digits --epochs 2 --limit-train 100 --limit-test 50 --batch-size 50` (its `out` cleared).
V1_RECORD = Path(__file__).parent / "records" / "v1-mlp"


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_param_keys_are_the_run_params_fields():
    names = tuple(f.name for f in fields(RunParams))
    assert names == PARAM_KEYS
    assert tuple(asdict(RunParams())) == names  # a row's parameters, in the same order
    assert columns("accuracy")[-len(names) :] == list(names)
    assert {"sgd_momentum", "bn_momentum", "bn_eps"} <= set(PARAM_KEYS)
    assert not set(RENAMED_PARAMS) & set(PARAM_KEYS)


def test_version_1_record_loads_with_the_new_names():
    raw = json.loads((V1_RECORD / RECORD_JSON).read_text())
    assert raw["version"] == 1 and "momentum" in raw["param_keys"]  # the fixture is old
    record = load_record(V1_RECORD)
    assert "momentum" not in record.param_keys and "sgd_momentum" in record.param_keys
    assert record.param_keys.index("sgd_momentum") == raw["param_keys"].index("momentum")
    assert record.grid["sgd_momentum"] == [0.9] and "momentum" not in record.grid
    assert record.config["grid"]["sgd_momentum"] == [0.9]
    assert all(r["sgd_momentum"] == 0.9 and "momentum" not in r for r in record.rows)
    assert all(r["params"]["sgd_momentum"] == 0.9 for r in record.runs)
    assert all(s["sgd_momentum"] == 0.9 for s in record.summary)  # computed from the rows
    # no BN momentum/eps columns: version 1 records did not have them
    assert "bn_momentum" not in record.param_keys and "bn_momentum" not in record.rows[0]
    assert [r["loss"] for r in record.rows] == [r["loss"] for r in raw["rows"]]


def test_version_1_record_shows_reports_and_resumes(tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(V1_RECORD, folder)
    assert main(["show", str(folder)]) == 0
    assert "No winner on test accuracy" in capsys.readouterr().out  # one seed: no interval
    html = build_report([folder]).read_text()
    assert "<th>sgd_momentum</th>" in html and "<th>momentum</th>" not in html
    # a finished experiment resumed: nothing to train, saved again in the current version
    args = ["compare", "mlp", "--dataset", "digits", "--epochs", "2", "--batch-size", "50"]
    args += ["--limit-train", "100", "--limit-test", "50", "--progress", "off", "--no-report"]
    assert main([*args, "--out", str(folder), "--resume"]) == 0
    saved = json.loads((folder / RECORD_JSON).read_text())
    assert saved["version"] == VERSION and "sgd_momentum" in saved["param_keys"]
    with open(folder / "record.csv") as handle:
        header = next(csv.reader(handle))
    assert "sgd_momentum" in header and "momentum" not in header


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "is not valid JSON"),
        ('{"format": "other"}', "is not a bnlab run record"),
        ('{"format": "bnlab-record", "version": 99}', "version 99, expected one of 1, 2, 3"),
        ('{"format": "bnlab-record", "version": 2}', "incomplete bnlab run record: no name, "),
        (b"\xff\xfe", "is not valid JSON"),
    ],
)
def test_bad_records_are_usage_errors(tmp_path, text, match):
    path = tmp_path / RECORD_JSON
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_record(tmp_path)
    with pytest.raises(UsageError, match="no bnlab run record"):
        load_record(tmp_path / "missing")
