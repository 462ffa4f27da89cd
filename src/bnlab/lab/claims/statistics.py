"""What a claim's runs measured, the statistic with its 95% interval, and the verdict by rule.

Every statistic is a **paired difference over seeds**: for each seed ``s`` a measure gives two
numbers ``a_s`` and ``b_s`` from that seed's runs (the runs of one seed share their initial
weights and their batches), and the statistic is the mean of ``a_s - b_s`` with Student's t
95% interval (:func:`bnlab.lab.stats.paired_difference`; a seed with a missing side is left
out). ``a`` and ``b`` may themselves be differences (an interaction: C3, C5, C10) or read a
whole sweep (C2, C4).

The verdict follows from the interval and the claimed sign of ``a - b`` alone:

- **supported**: the interval excludes zero on the claimed side;
- **contradicted**: it excludes zero on the other side;
- **inconclusive**: it contains zero, or there is no interval (fewer than two seeds).

:func:`verdict_of` maps :class:`bnlab.lab.stats.Difference`'s verdict to these words;
:func:`rule_verdict` recomputes one from the interval's numbers alone, and
:func:`check_ledger` checks every verdict of a ledger (a file's too) against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnlab.lab.numbers import number
from bnlab.lab.stats import Difference, paired_difference
from bnlab.lab.verdict import run_diverged

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
#: a classifier *trains* (C2) when no loss diverged and its final test accuracy reaches this:
#: five times chance on ten classes
TRAINS_AT = 0.5


@dataclass(frozen=True)
class RunResult:
    """One finished run as a claim reads it: its per-epoch rows and its probe results."""

    folder: Path
    params: dict[str, Any]
    metric: str  # "accuracy" or "mae"
    rows: tuple[dict[str, Any], ...]  # one per epoch, in order
    probes: dict[str, Any] = field(default_factory=dict)

    def test(self, epoch: int | None = None) -> float:
        """The test metric (eval mode) after ``epoch`` (default: the last)."""
        return float(self._row(epoch)[f"test_{self.metric}"])

    def train(self, epoch: int | None = None) -> float:
        """The training metric over ``epoch`` (train mode; default: the last)."""
        return float(self._row(epoch)[self.metric])

    @property
    def diverged(self) -> bool:
        """A loss not finite or beyond :data:`bnlab.lab.verdict.DIVERGED_LOSS`."""
        return run_diverged(self.rows)

    def epochs_to(self, threshold: float) -> float:
        """The first epoch whose test metric reaches ``threshold``; ``epochs + 1`` if none
        does (a run censored at its end counts as one epoch late)."""
        for row in self.rows:
            if float(row[f"test_{self.metric}"]) >= threshold:
                return float(row["epoch"])
        return float(len(self.rows) + 1)

    def _row(self, epoch: int | None) -> dict[str, Any]:
        if epoch is None:
            return self.rows[-1]
        return next(r for r in self.rows if int(r["epoch"]) == epoch)


def _log10(value: float) -> float:
    return math.log10(value) if value > 0 and math.isfinite(value) else math.nan


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


# -- readouts of one run's probes --------------------------------------------------------------


def smoothness(run: RunResult, key: str) -> float:
    """The mean over epochs of log10 of a smoothness figure along -grad (Santurkar et al.'s
    Fig. 4, ``bnlab.lab.probes.landscape``): ``max_beta``, ``max_grad_change``, ``loss_range``."""
    return _mean(_log10(float(e[key])) for e in run.probes.get("smoothness") or [])


def input_drift(run: RunResult) -> float:
    """The tutorials' covariate shift of the probed layer's input (``shift.drift``)."""
    drift = (run.probes.get("shift") or {}).get("drift")
    return math.nan if drift is None else float(drift)


def ics(run: RunResult, key: str = "rel_l2") -> float:
    """Santurkar et al.'s ICS of the probed layer, mean over the measured steps."""
    return _mean(float(m[key]) for m in run.probes.get("ics") or [] if m.get(key) is not None)


def percentile_drift(run: RunResult, skip_first_epoch: bool = False) -> float:
    """How far the 15/50/85th percentiles of the probed layer's input wander over training, in
    units of the distribution's own width (Ioffe & Szegedy 2015, Fig. 1 made a number).

    For each watched unit and each percentile: the standard deviation over the recorded steps
    of the percentile, divided by the unit's mean width (85th minus 15th percentile); averaged
    over units and percentiles. ``skip_first_epoch`` leaves out the first epoch's steps.
    """
    act = run.probes.get("activations") or {}
    rows = act.get("percentiles") or []  # [step][unit][q]
    if skip_first_epoch and rows:
        rows = rows[len(rows) // max(len(run.rows), 1) :]
    if len(rows) < 2:
        return math.nan
    drifts = []
    for unit in range(len(rows[0])):
        series = [[step[unit][q] for step in rows] for q in range(len(rows[0][unit]))]
        width = _mean(hi - lo for lo, hi in zip(series[0], series[-1], strict=True))
        if not width > 0:
            continue
        for values in series:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            drifts.append(std / width)
    return _mean(drifts)


# -- one seed's runs, and the measures ---------------------------------------------------------


@dataclass(frozen=True)
class SeedRuns:
    """The runs of one seed of one case: by arm, and for a sweep by the swept value."""

    seed: int
    runs: dict[tuple[str, Any], RunResult]  # (arm label, swept value or None) -> run

    def run(self, arm: str, value: Any = None) -> RunResult:
        return self.runs[(arm, value)]

    def sweep(self, arm: str) -> list[tuple[Any, RunResult]]:
        """The arm's runs in sweep order."""
        return [(v, r) for (a, v), r in self.runs.items() if a == arm]


def largest_trained_lr(seed: SeedRuns, arm: str) -> float:
    """log10 of the largest learning rate of the sweep whose run trains (:data:`TRAINS_AT`,
    no diverged loss); NaN when none does."""
    trained = [lr for lr, r in seed.sweep(arm) if not r.diverged and r.test() >= TRAINS_AT]
    return math.log10(max(trained)) if trained else math.nan


def best_over_sweep(seed: SeedRuns, arm: str) -> float:
    return max((r.test() for _, r in seed.sweep(arm) if math.isfinite(r.test())), default=math.nan)


def spread_over_sweep(seed: SeedRuns, arm: str) -> float:
    """Best minus worst final test metric across the sweep (a diverged run counts as measured)."""
    values = [r.test() for _, r in seed.sweep(arm)]
    return max(values) - min(values) if all(math.isfinite(v) for v in values) else math.nan


def worst_over_sweep(seed: SeedRuns, arm: str) -> float:
    return min((r.test() for _, r in seed.sweep(arm)), default=math.nan)


Pair = Callable[[SeedRuns], tuple[float, float]]


@dataclass(frozen=True)
class Measure:
    """One statistic of a claim: per seed ``(a, b)`` from one case's runs; ``direction`` is
    the sign the claim gives ``a - b`` (+1 or -1)."""

    case: str  # the name of the case it reads
    statistic: str  # what a - b is, in words
    pair: Pair
    direction: int  # +1: the claim says a - b > 0; -1: a - b < 0
    unit: str = ""  # of the estimate, for the tables ("accuracy", "log10 lr", ...)
    sides: tuple[str, str] | None = None  # names of a and b; None: from "..., A - B"

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {self.direction!r}")

    @property
    def names(self) -> tuple[str, str]:
        """What ``a`` and ``b`` are, for a figure's axis."""
        if self.sides is not None:
            return self.sides
        a, _, b = self.statistic.rpartition(", ")[2].partition(" - ")
        return (a, b) if b else ("a", "b")


@dataclass(frozen=True)
class Outcome:
    """A measure's result: the estimate of mean(a - b), its 95% interval, the verdict."""

    case: str
    statistic: str
    direction: int
    unit: str
    estimate: float
    ci_low: float
    ci_high: float
    n_seeds: int  # seeds with both a and b
    verdict: str
    a: list[float]  # per seed, in seed order
    b: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "statistic": self.statistic,
            "claimed": "> 0" if self.direction > 0 else "< 0",
            "unit": self.unit,
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_seeds": self.n_seeds,
            "verdict": self.verdict,
            "a": self.a,
            "b": self.b,
        }


def verdict_of(difference: Difference, direction: int) -> str:
    """The claim's verdict from a :class:`Difference` of ``a - b`` computed with
    ``higher_is_better=True`` (its ``"a"`` then means an interval above zero)."""
    side = {"a": 1, "b": -1}.get(difference.verdict)
    if side is None:  # "tie" (the interval contains zero) or "unknown" (no interval)
        return INCONCLUSIVE
    return SUPPORTED if side == direction else CONTRADICTED


def rule_verdict(ci_low: float | None, ci_high: float | None, direction: int) -> str:
    """The verdict the module's rule gives an interval, from its numbers alone."""
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if ci_low > 0:
        side = 1
    elif ci_high < 0:
        side = -1
    else:
        return INCONCLUSIVE
    return SUPPORTED if side == direction else CONTRADICTED


def evaluate(measure: Measure, label: str, seeds: Sequence[SeedRuns]) -> Outcome:
    """``measure`` over the seeds of one case (``label`` names the case and its data)."""
    pairs = [measure.pair(s) for s in seeds]
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    diff = paired_difference(a, b, higher_is_better=True)
    n = sum(math.isfinite(x) and math.isfinite(y) for x, y in pairs)
    return Outcome(
        case=label,
        statistic=measure.statistic,
        direction=measure.direction,
        unit=measure.unit,
        estimate=diff.estimate,
        ci_low=diff.ci_low,
        ci_high=diff.ci_high,
        n_seeds=n,
        verdict=verdict_of(diff, measure.direction),
        a=a,
        b=b,
    )


def _direction(claimed: Any) -> int:
    if claimed in ("> 0", 1):
        return 1
    if claimed in ("< 0", -1):
        return -1
    raise ValueError(f"claimed must be '> 0' or '< 0', got {claimed!r}")


def check_ledger(ledger: dict[str, Any]) -> list[str]:
    """Every verdict of a ledger (``ledger.json``'s content) that its interval and claimed
    direction do not give by the rule, as messages; an empty list when all follow."""
    problems = []
    for claim in ledger.get("claims", []):
        lines = [claim, *claim.get("secondary", [])]
        for line in lines:
            where = f"{claim.get('id')} ({line.get('case', '?')}: {line.get('statistic', '?')})"
            if line.get("verdict") not in VERDICTS:
                problems.append(
                    f"{where}: verdict {line.get('verdict')!r} is not one of {VERDICTS}"
                )
                continue
            expected = rule_verdict(
                line.get("ci_low"), line.get("ci_high"), _direction(line.get("claimed"))
            )
            if line["verdict"] != expected:
                problems.append(
                    f"{where}: verdict {line['verdict']!r}, but the interval "
                    f"[{line.get('ci_low')}, {line.get('ci_high')}] with claimed "
                    f"{line.get('claimed')} gives {expected!r}"
                )
    return problems


def interval(estimate: float | None, low: float | None, high: float | None) -> str:
    """``estimate [low, high]`` in the lab's number format (None: not finite)."""
    if estimate is None:
        return "-"
    if low is None or high is None:
        return f"{number(estimate)} [no interval]"
    return f"{number(estimate)} [{number(low)}, {number(high)}]"
