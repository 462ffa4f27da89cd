"""The terminal's tables at 80 columns and piped: every value shown whole, names told apart;
huge numbers in a few characters; a cut table says so; progress lines when piped."""

from __future__ import annotations

import io
import re
from pathlib import Path

from report_fixtures import make_record
from rich.console import Console

from bnlab.cli import main
from bnlab.lab import experiment
from bnlab.lab.config import Config
from bnlab.lab.display import Column, fit_columns, record_table
from bnlab.lab.experiment import run_experiment
from bnlab.lab.numbers import number, plus_minus

HUGE = 12345678901234567890.0


def _grid_2x2(folder: Path):
    """An lr x bn grid, two seeds, one run's loss exploded to 1.2e19."""
    rec = make_record(folder.with_name("draft"), lrs=(0.001, 0.01), seeds=(0, 1))
    for row in rec.rows:
        if row["group"] == "no_bn,lr=0.01" and row["epoch"] == 2:
            row["loss"] = HUGE
    rec.save(folder)  # another folder: written whole (in one folder, rows are only appended)
    return rec


def test_a_2x2_grid_shows_every_value_at_80_columns_piped(tmp_path, monkeypatch, capsys):
    rec = _grid_2x2(tmp_path / "grid")
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["show", str(tmp_path / "grid")]) == 0
    out = capsys.readouterr().out  # captured: not a terminal, as when piped
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out
    assert not re.search(r"\d{8}", out)  # no number written as a long run of digits
    assert number(HUGE) == "1.235e+19" and number(HUGE) in out
    for group in ("no_bn,lr=0.001", "no_bn,lr=0.01", "bn,lr=0.001", "bn,lr=0.01"):
        assert re.search(rf"^{re.escape(group)} ", out, re.M), group  # whole, at a row start
    m = rec.metric
    for row in rec.summary:
        if row["epoch"] != 3:
            continue
        for key in ("loss", m, "test_loss", f"test_{m}"):
            mean, half = row[f"{key}_mean"], row[f"{key}_ci95"]
            assert number(mean) in out and f"± {number(half, 3)}" in out, (key, row["group"])
    for row in rec.rows:  # the per-epoch table: every value of every row
        for key in ("loss", m, "test_loss", f"test_{m}"):
            assert number(row[key]) in out
    assert "no_bn,lr=0.01 (2 of 2 runs)" in " ".join(out.split())  # exploded runs flagged


def test_names_wrap_after_commas_and_columns_continue_with_their_labels():
    names = ["no_bn,lr=0.001,batch_size=128,seed=0", "bn,lr=0.01,batch_size=32,seed=1"]
    columns = [Column("name", names, label=True, names=True)]
    columns += [Column(f"value {k}", [plus_minus(1.23456, 0.5), "7"]) for k in range(8)]
    parts = fit_columns(columns, 60)
    assert len(parts) > 1
    for part in parts:
        assert part[0].header == "name"
        assert sum(c.width() for c in part) + 2 * (len(part) - 1) <= 60
        assert all(",\n" in cell or "," not in cell for cell in part[0].cells[:1])
    assert {c.header for part in parts for c in part[1:]} == {f"value {k}" for k in range(8)}
    assert [cell.replace("\n", "") for cell in parts[0][0].cells] == names


def test_a_cut_record_table_says_so_and_how_to_see_it_all(tmp_path):
    rec = make_record(tmp_path / "run")
    console = Console(width=80, file=io.StringIO())
    for table in record_table(rec, 80, last=4, folder=tmp_path / "run"):
        console.print(table)
    text = console.file.getvalue()
    assert f"the last 4 of {len(rec.rows)} rows" in text
    assert f"`bnlabshow{tmp_path / 'run'}`" in "".join(text.split())  # wrapped, centred
    whole = record_table(rec, 80)
    assert "every run and epoch" in str(whole[0].title)


def test_progress_on_prints_plain_lines_when_piped(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment._Progress, "PLAIN_EVERY_S", 0.0)
    config = Config(
        name="tiny", progress="on", limit_train=128,
        grid={"network": ["keras-mlp"], "dataset": ["digits"], "bn": [False, True],
              "epochs": [2], "batch_size": [64]},
    )  # fmt: skip
    out = io.StringIO()
    run_experiment(config, root=tmp_path, console=Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    assert "no_bn: epoch 1" in lines and "bn: epoch 1" in lines  # a line as each run starts
    batches = [line for line in lines if re.fullmatch(r"(no_)?bn: epoch \d, batch \d/2, .*", line)]
    assert len(batches) == 2 * 2 * 2  # every batch, with the period set to zero
