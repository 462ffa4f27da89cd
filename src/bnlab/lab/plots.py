"""Figures from run records and probe results (matplotlib; PNG and SVG).

Figures are built as ``matplotlib.figure.Figure`` objects and saved with the Agg/SVG canvases
directly, never through pyplot: no GUI backend, no global figure state, safe on a headless box.

Every function takes records (:class:`bnlab.lab.record.Record`, as :func:`load_record` reads
them) or probe results (the JSON :class:`bnlab.lab.probes.RunProbes` saves under
``runs/<name>/probes/run-<k>.json``), draws one figure and writes ``<stem>.png`` and
``<stem>.svg`` into ``out_dir``; each returns the PNG path, or None when the records hold
nothing to draw (e.g. a learning-rate sweep needs at least two learning rates).

Conventions: "with BN" is drawn in blue, "without BN" in orange; a band is the 95% confidence
interval of the mean over seeds (Student t, as summary.csv computes it); a *diverged* run (a
loss not finite or exploded: ``bnlab.lab.verdict``) is drawn as a red-edged X in its
network's colour at the bottom of the axis, never dropped; epochs are whole numbers on every
axis.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bnlab.lab.record import Record
from bnlab.lab.stats import mean_ci95
from bnlab.lab.verdict import run_diverged

__all__ = [
    "EpochTimes",
    "activations_figure",
    "epoch_time_stats",
    "epoch_times",
    "landscape_figure",
    "learning_curves",
    "lr_sweep",
    "save",
    "shift_figure",
]

BN_COLOR = "#1f77b4"
NO_BN_COLOR = "#ff7f0e"
DIVERGED_COLOR = "#d62728"
_OTHER = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _nan0(stat: tuple[float, float]) -> tuple[float, float]:
    """(mean, half-width) with an undefined half-width (one seed) drawn as no band."""
    return stat[0], 0.0 if math.isnan(stat[1]) else stat[1]


def save(fig: Figure, out_dir: Path | str, stem: str) -> Path:
    """Write ``stem.png`` (110 dpi) and ``stem.svg``; return the PNG path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{stem}.png"
    with warnings.catch_warnings():
        # A name in a script the fonts lack (CJK, without a CJK font installed) is drawn as
        # boxes; matplotlib would warn once per glyph and file. The report's text shows it.
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        fig.savefig(png, dpi=110, bbox_inches="tight")
        fig.savefig(out / f"{stem}.svg", bbox_inches="tight")
    return png


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _color(params: dict[str, Any], label: str, palette: dict[str, str]) -> str:
    if label not in palette:
        bn = params.get("bn")
        if bn is True and BN_COLOR not in palette.values():
            palette[label] = BN_COLOR
        elif bn is False and NO_BN_COLOR not in palette.values():
            palette[label] = NO_BN_COLOR
        else:
            used = set(palette.values())
            palette[label] = next((c for c in _OTHER if c not in used), "#333333")
    return palette[label]


def _groups(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """label -> {"params", "runs": {run name: [rows by epoch]}} over all records."""
    many = len(records) > 1
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        for row in rec.rows:
            label = f"{rec.name}: {row['group']}" if many else str(row["group"])
            g = out.setdefault(label, {"params": row, "runs": defaultdict(list)})
            g["runs"][row["name"]].append(row)
    return out


def learning_curves(
    records: Sequence[Record], out_dir: Path | str, stem: str = "curves"
) -> Path | None:
    """Training and test loss and headline metric per epoch; mean and 95% band over seeds."""
    groups = _groups(records)
    if not groups:
        return None
    metric = records[0].metric
    panels = [
        ("loss", "training loss"),
        ("test_loss", "test loss"),
        (metric, f"training {metric}"),
        (f"test_{metric}", f"test {metric}"),
    ]
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    palette: dict[str, str] = {}
    for ax, (col, title) in zip(axes.flat, panels, strict=True):
        for label, g in groups.items():
            color = _color(g["params"], label, palette)
            by_epoch: dict[int, list[float]] = defaultdict(list)
            for rows in g["runs"].values():
                for r in rows:
                    by_epoch[int(r["epoch"])].append(r.get(col, math.nan))
            epochs = sorted(by_epoch)
            stats = [_nan0(mean_ci95(by_epoch[e])) for e in epochs]
            means = [m for m, _ in stats]
            lo = [m - h for m, h in stats]
            hi = [m + h for m, h in stats]
            n = len(g["runs"])
            ax.plot(epochs, means, color=color, marker="o", ms=3, label=f"{label} (n={n})")
            if n > 1:
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=8)
    name = ", ".join(r.name for r in records)
    fig.suptitle(f"{name}: mean over seeds, band = 95% CI")
    return save(fig, out_dir, stem)


def lr_sweep(records: Sequence[Record], out_dir: Path | str, stem: str = "lr_sweep") -> Path | None:
    """Final test metric against learning rate (log axis), with vs without BN; diverged marked."""
    runs: dict[tuple[Any, float], list[list[dict[str, Any]]]] = defaultdict(list)
    for rec in records:
        by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rec.rows:
            by_run[row["name"]].append(row)
        for rows in by_run.values():
            p = rows[0]
            if _finite(p.get("lr")):
                runs[(p.get("bn"), float(p["lr"]))].append(rows)
    if len({lr for _, lr in runs}) < 2:
        return None
    metric = records[0].metric
    col = f"test_{metric}"
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    palette: dict[str, str] = {}
    diverged_pts: list[tuple[float, str, str]] = []
    for bn in sorted({b for b, _ in runs}, key=str):
        label = {True: "with BN", False: "without BN"}.get(bn, f"bn={bn}")
        color = _color({"bn": bn}, label, palette)
        xs, ys, es = [], [], []
        for lr in sorted(lr for b, lr in runs if b == bn):
            finals = []
            for rows in runs[(bn, lr)]:
                if run_diverged(rows):
                    diverged_pts.append((lr, color, label))
                else:
                    finals.append(max(rows, key=lambda r: r["epoch"]).get(col, math.nan))
            if finals:
                m, h = _nan0(mean_ci95(finals))
                xs.append(lr)
                ys.append(m)
                es.append(h)
        if xs:
            ax.errorbar(xs, ys, yerr=es, color=color, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    if diverged_pts:
        bottom = ax.get_ylim()[0]
        seen: set[str] = set()
        for lr, color, name in diverged_pts:
            ax.scatter(
                [lr],
                [bottom],
                marker="X",
                s=90,
                color=color,
                edgecolors=DIVERGED_COLOR,
                linewidths=1.5,
                zorder=5,
                label=f"{name}: diverged (loss NaN/inf)" if name not in seen else None,
            )
            seen.add(name)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"final test {metric}")
    ax.set_title("learning-rate sweep: final test metric (mean, 95% CI)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, out_dir, stem)


@dataclass(frozen=True)
class EpochTimes:
    """One group's training-epoch durations, in seconds: ``later`` is the (mean, 95% half-width)
    over every epoch after the first of every run (None when no run got past its first), and
    ``first`` the mean first epoch, kept apart: it includes loading the compiled kernels (and,
    on a fresh machine, compiling them)."""

    later: tuple[float, float] | None
    first: float


def epoch_time_stats(rows: Sequence[dict[str, Any]]) -> EpochTimes:
    """:class:`EpochTimes` of a group's rows (the epoch-time figure and the report's table)."""
    first = [r["epoch_duration"] for r in rows if int(r["epoch"]) == 1]
    later = [r["epoch_duration"] for r in rows if int(r["epoch"]) > 1]
    return EpochTimes(mean_ci95(later) if later else None, mean_ci95(first)[0])


def epoch_times(
    records: Sequence[Record], out_dir: Path | str, stem: str = "epoch_time"
) -> Path | None:
    """Mean training-epoch duration per network after the first epoch (see
    :class:`EpochTimes`), with its 95% CI over those epochs and seeds; the error bars stop at
    zero. Runs of one epoch are drawn with their first epoch, and the title says so."""
    groups = _groups(records)
    if not groups:
        return None
    stats = {
        label: epoch_time_stats([r for rows in g["runs"].values() for r in rows])
        for label, g in groups.items()
    }
    after_first = any(t.later is not None for t in stats.values())
    fig = Figure(figsize=(max(4.0, 1.4 * len(groups) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    palette: dict[str, str] = {}
    for i, (label, times) in enumerate(stats.items()):
        later = times.later if after_first else (times.first, math.nan)
        if later is None:  # this group has only first epochs: no bar to compare
            continue
        m, h = _nan0(later)
        ax.bar(
            i,
            m,
            yerr=[[min(h, m)], [h]],  # a duration is never negative: the bar stops at zero
            capsize=4,
            color=_color(groups[label]["params"], label, palette),
        )
        ax.annotate(
            f"{m:.3g} s",
            (i, m),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_xticks(range(len(stats)), list(stats), rotation=15, fontsize=8)
    ax.set_ylabel("seconds per training epoch")
    ax.set_ylim(bottom=0)
    which = "epochs after the first" if after_first else "first epoch only (includes loading)"
    ax.set_title(f"epoch time per network, {which} (mean, 95% CI)")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, out_dir, stem)


# ----------------------------------------------------------------------------- probe figures

ProbeRuns = Sequence[tuple[str, bool | None, dict[str, Any]]]  # (label, bn, probe result)


def _probe_color(bn: bool | None, label: str, palette: dict[str, str]) -> str:
    return _color({"bn": bn}, label, palette)


def activations_figure(
    runs: ProbeRuns, out_dir: Path | str, stem: str = "activations"
) -> Path | None:
    """15/50/85th percentiles of a unit's input over training (BN paper Fig. 1), and the
    histograms of the watched layer's input at the first and the last recorded step."""
    runs = [r for r in runs if r[2].get("activations", {}).get("percentiles")]
    if not runs:
        return None
    fig = Figure(figsize=(11, 3.6 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 2, squeeze=False)
    palette: dict[str, str] = {}
    for (label, bn, res), (ax_p, ax_h) in zip(runs, axes, strict=True):
        a = res["activations"]
        color = _probe_color(bn, label, palette)
        steps = a["steps"]
        # show the watched unit with the widest 15-85 range (a dead ReLU unit shows nothing)
        n_units = len(a["units"])
        unit = max(
            range(n_units),
            key=lambda u: sum(step[u][2] - step[u][0] for step in a["percentiles"]),
        )
        q = [[step[unit][k] for step in a["percentiles"]] for k in range(3)]
        ax_p.fill_between(steps, q[0], q[2], color=color, alpha=0.25, lw=0, label="15th-85th")
        ax_p.plot(steps, q[1], color=color, lw=1.2, label="median")
        ax_p.set_title(f"{label}: input of {a['layer_spec']}, unit {a['units'][unit]}")
        ax_p.set_xlabel("training step")
        ax_p.legend(fontsize=8)
        ax_p.grid(alpha=0.3)
        for key, style, name in (
            ("hist_first", "--", "first step"),
            ("hist_last", "-", "last step"),
        ):
            h = a.get(key)
            if h and h["edges"]:
                centers = [
                    (x0 + x1) / 2 for x0, x1 in zip(h["edges"][:-1], h["edges"][1:], strict=True)
                ]
                ax_h.plot(centers, h["counts"], style, color=color, label=name)
        ax_h.set_title(f"{label}: histogram of the input of {a['layer_spec']} (all units)")
        ax_h.set_ylabel("density")
        ax_h.legend(fontsize=8)
        ax_h.grid(alpha=0.3)
    return save(fig, out_dir, stem)


def shift_figure(runs: ProbeRuns, out_dir: Path | str, stem: str = "shift") -> Path | None:
    """Covariate shift two ways: a layer's input mean/variance over steps (the tutorials'),
    and Santurkar's ICS (L2 distance and cosine of G, G') over steps."""
    runs = [r for r in runs if r[2].get("shift", {}).get("mean") or r[2].get("ics")]
    if not runs:
        return None
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    (ax_m, ax_v), (ax_l2, ax_cos) = fig.subplots(2, 2)
    palette: dict[str, str] = {}
    for label, bn, res in runs:
        color = _probe_color(bn, label, palette)
        s = res.get("shift") or {}
        if s.get("mean"):
            drift = s.get("drift")
            tag = f"{label} (drift {drift:.3f})" if drift is not None else label
            for ax, key, name in ((ax_m, "mean", tag), (ax_v, "var", label)):
                for u in range(min(3, len(s[key][0]))):
                    ax.plot(
                        s["steps"],
                        [step[u] for step in s[key]],
                        color=color,
                        lw=0.8,
                        alpha=1 - 0.25 * u,
                        label=name if u == 0 else None,
                    )
        ics = res.get("ics") or []
        if ics:
            steps = [d["step"] for d in ics]
            ax_l2.plot(steps, [d["l2"] for d in ics], color=color, marker=".", lw=0.8, label=label)
            ax_cos.plot(
                steps, [d["cosine"] for d in ics], color=color, marker=".", lw=0.8, label=label
            )
    layer = next((r[2].get("config", {}).get("layer") for r in runs), "")
    ax_m.set_title(f"batch mean of the input of {layer} (units 0-2)")
    ax_v.set_title(f"batch variance of the input of {layer}")
    ax_l2.set_title("ICS (Santurkar): ||G - G'||, earlier layers updated first")
    ax_cos.set_title("ICS (Santurkar): cos(G, G')")
    for ax in (ax_m, ax_v, ax_l2, ax_cos):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if any(d["l2"] > 0 for _, _, res in runs for d in res.get("ics") or []):
        ax_l2.set_yscale("log")  # the first layer has no earlier layers: its ICS is 0
    return save(fig, out_dir, stem)


def _clip(grid: list[list[float]], cap: float = 1e6) -> list[list[float]]:
    return [[min(v, cap) if math.isfinite(v) else cap for v in row] for row in grid]


def landscape_figure(runs: ProbeRuns, out_dir: Path | str, stem: str = "landscape") -> Path | None:
    """2D loss contours around the final weights (filter-normalized directions), side by side,
    and the loss / gradient change along the gradient per step size (Santurkar Fig. 4)."""
    runs = [r for r in runs if r[2].get("landscape") or r[2].get("smoothness")]
    if not runs:
        return None
    fig = Figure(figsize=(4.6 * len(runs) + 4.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(runs) + 1, squeeze=False)[0]
    palette: dict[str, str] = {}
    # one colour scale for every panel, so the contours compare at a glance
    grids = {
        i: _clip(r[2]["landscape"]["loss"]) for i, r in enumerate(runs) if r[2].get("landscape")
    }
    lo = min((min(min(row) for row in z) for z in grids.values()), default=0.0)
    hi = max((max(max(row) for row in z) for z in grids.values()), default=1.0)
    levels = [lo + (hi - lo) * k / 20 for k in range(21)] if hi > lo else 20
    for i, (ax, (label, _bn, res)) in enumerate(zip(axes[:-1], runs, strict=True)):
        land = res.get("landscape")
        if land:
            z = grids[i]
            cs = ax.contourf(land["alphas"], land["betas"], z, levels=levels, cmap="viridis")
            ax.contour(land["alphas"], land["betas"], z, levels=levels, colors="k", linewidths=0.3)
            fig.colorbar(cs, ax=ax, label="loss")
            ax.plot([0], [0], "r*", ms=10)
        ax.set_title(f"{label}: loss around the final weights")
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
    ax = axes[-1]
    for label, bn, res in runs:
        color = _probe_color(bn, label, palette)
        sm = res.get("smoothness") or []
        if sm:
            last = sm[-1]
            ax.plot(
                last["step_sizes"],
                last["grad_change"],
                color=color,
                marker="o",
                label=f"{label}: ||g(w - eta g) - g(w)||",
            )
            ax.plot(
                last["step_sizes"],
                [abs(v - last["loss0"]) for v in last["loss"]],
                color=color,
                ls="--",
                marker="s",
                label=f"{label}: |loss change|",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step size eta along -grad")
    ax.set_title("smoothness along the gradient (last epoch)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return save(fig, out_dir, stem)
