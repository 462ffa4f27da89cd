"""Plots: every figure written as PNG and SVG from records in the documented layout."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pytest
from matplotlib.figure import Figure
from report_fixtures import make_record, probe_result

from bnlab.lab import plots
from bnlab.lab.stats import mean_ci95
from bnlab.lab.verdict import run_diverged


def _check_png_svg(png: Path | None) -> None:
    assert png is not None and png.exists()
    img = mpimg.imread(png)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0.01  # not a blank canvas
    svg = png.with_suffix(".svg")
    assert svg.exists() and svg.read_text().lstrip().startswith("<?xml")


def test_learning_curves_and_epoch_time(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "run")
    _check_png_svg(plots.learning_curves([rec], tmp_path / "figs"))
    _check_png_svg(plots.epoch_times([rec], tmp_path / "figs"))


def test_lr_sweep_marks_diverged_runs(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "run", lrs=(0.001, 0.01, 1.0), seeds=(0, 1), diverge=(False, 1.0))
    rows = [r for r in rec.rows if r["lr"] == 1.0 and r["bn"] is False]
    assert run_diverged(rows)
    png = plots.lr_sweep([rec], tmp_path / "figs")
    _check_png_svg(png)
    assert png is not None
    assert "diverged" in png.with_suffix(".svg").read_text()
    one_lr = make_record(tmp_path / "one")
    assert plots.lr_sweep([one_lr], tmp_path / "figs2") is None


def test_probe_figures(tmp_path: Path) -> None:
    runs = [("no_bn", False, probe_result(False)), ("bn", True, probe_result(True))]
    for fn in (plots.activations_figure, plots.shift_figure, plots.landscape_figure):
        _check_png_svg(fn(runs, tmp_path))
    assert plots.activations_figure([("x", None, {})], tmp_path) is None


def _figure_of(monkeypatch, draw) -> Figure:
    """The figure ``draw()`` saves (plots.save captured)."""
    saved: list[Figure] = []
    monkeypatch.setattr(plots, "save", lambda fig, out_dir, stem: saved.append(fig) or Path(stem))
    draw()
    return saved[0]


def test_epoch_time_leaves_out_the_first_epoch_and_never_goes_below_zero(tmp_path, monkeypatch):
    rec = make_record(tmp_path / "draft")
    for row in rec.rows:  # a slow first epoch (loading kernels), later epochs spread widely
        row["epoch_duration"] = 9.0 if row["epoch"] == 1 else [0.01, 0.5][row["seed"] % 2]
    times = plots.epoch_time_stats([r for r in rec.rows if r["bn"]])
    assert times.first == 9.0 and times.later is not None
    assert times.later == mean_ci95([r["epoch_duration"] for r in rec.rows if r["bn"]
                                     and r["epoch"] > 1])  # fmt: skip
    fig = _figure_of(monkeypatch, lambda: plots.epoch_times([rec], tmp_path))
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    later = [r["epoch_duration"] for r in rec.rows if r["epoch"] > 1 and not r["bn"]]
    assert heights[0] == pytest.approx(sum(later) / len(later))  # as the report's table
    lows = [seg[0][1] for c in ax.collections for seg in c.get_segments()]  # error bar ends
    assert lows and min(lows) >= 0.0
    assert mean_ci95(later)[1] > mean_ci95(later)[0]  # the interval would reach below zero


def test_learning_curves_have_whole_epoch_ticks(tmp_path, monkeypatch):
    rec = make_record(tmp_path / "run", epochs=3)
    fig = _figure_of(monkeypatch, lambda: plots.learning_curves([rec], tmp_path))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
