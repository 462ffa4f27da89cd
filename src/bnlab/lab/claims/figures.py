"""One figure per claim (matplotlib, PNG and SVG, the conventions of :mod:`bnlab.lab.plots`).

Each figure has two panels. On the left, what the runs did, by the claim's ``figure`` kind:

- ``curves``: the primary case's test metric after every epoch, per arm;
- ``sweep``: the primary case's final test metric over the swept value (log axis), per arm;
- ``pairs``: the primary statistic's two sides, seed by seed (one line per seed).

Arms and sides are drawn as the lab draws them: a band or bar is the 95% confidence interval
of the mean over seeds; "BN" in blue, "no BN" in orange. On the right, every statistic of the
claim in the primary's unit: its estimate and 95% interval against zero, coloured by verdict
(supported green, contradicted red, inconclusive grey), the primary on top.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from bnlab.lab.claims.statistics import CONTRADICTED, SUPPORTED, Outcome
from bnlab.lab.numbers import number
from bnlab.lab.plots import BN_COLOR, NO_BN_COLOR, save
from bnlab.lab.stats import mean_ci95

if TYPE_CHECKING:
    from bnlab.lab.claims.ledger import ClaimResult

VERDICT_COLORS = {SUPPORTED: "#2ca02c", CONTRADICTED: "#d62728"}
INCONCLUSIVE_COLOR = "#7f7f7f"
_ARM_COLORS = {"BN": BN_COLOR, "no BN": NO_BN_COLOR, "none": NO_BN_COLOR}
_OTHER = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _arm_color(label: str, index: int) -> str:
    return _ARM_COLORS.get(label, _OTHER[index % len(_OTHER)])


def _band(ax: Axes, xs: list[Any], samples: list[list[float]], color: str, label: str) -> None:
    """Mean over seeds with its 95% band (no band with one seed)."""
    stats = [mean_ci95(s) for s in samples]
    means = [m for m, _ in stats]
    halves = [0.0 if math.isnan(h) else h for _, h in stats]
    ax.plot(xs, means, color=color, marker="o", ms=3, label=label)
    ax.fill_between(
        xs,
        [m - h for m, h in zip(means, halves, strict=True)],
        [m + h for m, h in zip(means, halves, strict=True)],
        color=color,
        alpha=0.2,
        lw=0,
    )


def _curves(ax: Axes, result: ClaimResult) -> None:
    planned = next(p for p in result.planned if p.label == result.primary.case)
    metric = "test metric"
    by_arm: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (arm, _, _), spec in planned.specs.items():
        run = result.results[spec.key]
        metric = f"test {run.metric}"
        for row in run.rows:
            by_arm[arm][int(row["epoch"])].append(float(row[f"test_{run.metric}"]))
    for i, (arm, epochs) in enumerate(by_arm.items()):
        xs = sorted(epochs)
        _band(ax, xs, [epochs[e] for e in xs], _arm_color(arm, i), arm)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(planned.label)


def _sweep(ax: Axes, result: ClaimResult) -> None:
    planned = next(p for p in result.planned if p.label == result.primary.case)
    key = planned.case.sweep[0] if planned.case.sweep else "value"
    by_arm: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    metric = "test metric"
    for (arm, value, _), spec in planned.specs.items():
        run = result.results[spec.key]
        metric = f"final test {run.metric}"
        by_arm[arm][float(value)].append(run.test())
    swept: list[float] = []
    for i, (arm, values) in enumerate(by_arm.items()):
        swept = sorted(values)
        _band(ax, swept, [values[x] for x in swept], _arm_color(arm, i), arm)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(swept, [number(x, 3) for x in swept], rotation=45, fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(planned.label)


def _pairs(ax: Axes, result: ClaimResult, names: tuple[str, str]) -> None:
    primary: Outcome = result.primary
    for a, b in zip(primary.a, primary.b, strict=True):
        if math.isfinite(a) and math.isfinite(b):
            ax.plot([0, 1], [a, b], color="#999999", lw=0.8, marker="o", ms=3)
    for x, values, color in ((0, primary.a, BN_COLOR), (1, primary.b, NO_BN_COLOR)):
        mean, half = mean_ci95(values)
        if math.isfinite(mean):
            ax.errorbar(
                [x],
                [mean],
                yerr=[0.0 if math.isnan(half) else half],
                color=color,
                marker="s",
                ms=7,
                capsize=5,
                lw=2,
            )
    ax.set_xticks([0, 1], list(names))
    ax.set_xlim(-0.5, 1.5)
    ax.set_ylabel(primary.unit or "value")
    ax.set_title(f"{primary.case}: per seed (line), mean and 95% CI")


def _forest(ax: Axes, outcomes: list[Outcome]) -> None:
    shown = [o for o in outcomes if o.unit == outcomes[0].unit]
    for y, o in enumerate(reversed(shown)):
        color = VERDICT_COLORS.get(o.verdict, INCONCLUSIVE_COLOR)
        if math.isfinite(o.estimate):
            low = o.ci_low if math.isfinite(o.ci_low) else o.estimate
            high = o.ci_high if math.isfinite(o.ci_high) else o.estimate
            ax.plot([low, high], [y, y], color=color, lw=2.5)
            ax.plot([o.estimate], [y], color=color, marker="o", ms=6)
    ax.axvline(0.0, color="#333333", lw=1)
    labels = [
        f"{o.statistic}\n({o.case}; claimed {'> 0' if o.direction > 0 else '< 0'})"
        for o in reversed(shown)
    ]
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel(f"estimate and 95% CI ({outcomes[0].unit})")
    ax.set_title("statistics (green supported, red contradicted, grey inconclusive)", fontsize=9)


def claim_figure(result: ClaimResult, out_dir: Path | str) -> Path:
    """The figure of one evaluated claim (:class:`bnlab.lab.claims.ledger.ClaimResult`),
    written as ``<out_dir>/<id>.png`` and ``.svg``; returns the PNG's path."""
    claim = result.claim
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.2))
    if claim.figure == "curves":
        _curves(left, result)
    elif claim.figure == "sweep":
        _sweep(left, result)
    else:
        _pairs(left, result, claim.measures[0].names)
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    _forest(right, result.outcomes)
    right.grid(alpha=0.3, axis="x")
    source = "literature" if claim.tutorial == "literature" else f"tutorials {claim.tutorial}"
    fig.suptitle(f"{claim.id}: {claim.claim} ({source}): {result.primary.verdict}")
    return save(fig, out_dir, claim.id)
