"""One rule names a winner, in the same words in the terminal and the report; its interval is
Welch's (checked against SciPy); a diverged run is never the winner."""

from __future__ import annotations

import html
import math
import tempfile
from pathlib import Path

import pytest
from report_fixtures import make_record
from scipy import stats

from bnlab.cli import main
from bnlab.lab.report import build_report
from bnlab.lab.verdict import DIVERGED_LOSS, decide, run_diverged, sentences


def _spread(folder, bn_gain: dict[int, float], name: str = "tiny-cnn"):
    """A record whose BN runs' final test accuracy is shifted per seed by ``bn_gain``."""
    rec = make_record(folder.with_name(folder.name + "-draft"), name=name)
    for row in rec.rows:
        if row["bn"]:
            row["test_accuracy"] += bn_gain.get(row["seed"], 0.0)
    rec.save(folder)
    return rec


@pytest.mark.parametrize(
    ("gains", "words"),
    [
        ({}, "Winner on test accuracy at epoch 3"),  # +0.05, sd 0.01: clear
        ({0: -0.2, 2: 0.1}, "not a clear difference"),  # BN's mean ahead, its spread wide
    ],
)
def test_terminal_and_report_say_the_same(tmp_path, capsys, monkeypatch, gains, words):
    monkeypatch.setenv("COLUMNS", "200")
    folder = tmp_path / "run"
    rec = _spread(folder, gains)
    lines = sentences(rec)
    assert words in lines[0] and lines[0].startswith("Winner" if "Winner" in words else "No ")
    assert main(["show", str(folder)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    page = html.unescape(build_report([folder]).read_text())
    for line in lines:
        assert line in printed and f"<p class='verdict'>{line}</p>" in page
    assert "wins" not in page


def test_the_interval_is_welchs():
    rec = make_record_in_memory(gains={0: -0.2, 2: 0.1})
    verdict = decide(rec)
    assert verdict is not None and verdict.best == "bn" and verdict.other == "no_bn"
    a, b = verdict.values["bn"], verdict.values["no_bn"]
    reference = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert verdict.difference.ci_low == pytest.approx(reference.low, abs=1e-12)
    assert verdict.difference.ci_high == pytest.approx(reference.high, abs=1e-12)
    assert verdict.winner is None and verdict.difference.verdict == "tie"


def make_record_in_memory(gains: dict[int, float]):
    with tempfile.TemporaryDirectory() as tmp:
        return _spread(Path(tmp) / "run", gains)


def test_a_diverged_run_is_never_the_winner(tmp_path):
    rec = make_record(tmp_path / "draft", lrs=(0.001, 1.0), seeds=(0, 1, 2))
    for row in rec.rows:  # the best test accuracy by far, but its loss exploded
        if row["group"] == "no_bn,lr=1.0":
            row["test_accuracy"] = 0.99
            row["loss"] = 1e13 if row["epoch"] == 2 else row["loss"]
    rec.save(tmp_path / "run")
    verdict = decide(rec)
    assert verdict is not None and verdict.best != "no_bn,lr=1.0"
    assert "no_bn,lr=1.0" not in verdict.values
    assert sentences(rec)[0].startswith("Diverged (a loss above 1e+06 or not finite)")
    assert "no_bn,lr=1.0 (3 of 3 runs)" in sentences(rec)[0]


@pytest.mark.parametrize(
    ("loss", "diverged"),
    [(2.3, False), (DIVERGED_LOSS, False), (DIVERGED_LOSS * 1.01, True), (1e13, True),
     (math.nan, True), (math.inf, True), (-math.inf, True)],
)  # fmt: skip
def test_diverged_is_a_loss_not_finite_or_above_the_limit(loss, diverged):
    rows = [{"loss": 1.0, "test_loss": 1.0}, {"loss": 1.0, "test_loss": loss}]
    assert run_diverged(rows) is diverged
    assert run_diverged([{"loss": loss, "test_loss": 1.0}]) is diverged
