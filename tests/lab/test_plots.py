"""Plots: every figure written as PNG and SVG from records in the documented layout."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
from report_fixtures import make_record, probe_result

from bnlab.lab import plots


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
    assert plots.run_diverged(rows)
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
