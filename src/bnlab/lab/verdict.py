"""Which group of runs won, by one rule, in the words the terminal and the report share.

The rule: groups (the runs that differ only by seed) are compared on the test-set headline
metric (model in eval mode) at the last epoch every one of them reached, one value per run.
The group with the best mean is the *winner* when the 95% interval of its difference to every
other group (:func:`bnlab.lab.stats.welch_difference`) excludes zero. Otherwise there is no
winner: the interval that contains zero is "not a clear difference", and a group with one
seed has no interval at all.

A run has *diverged* when a recorded loss, training or test, is not finite or exceeds
:data:`DIVERGED_LOSS`. A group with a diverged run is never the winner: it is left out of the
comparison, and the verdict says so.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bnlab.lab.numbers import number, plus_minus
from bnlab.lab.record import Record
from bnlab.lab.stats import Difference, mean_ci95, welch_difference

__all__ = ["DIVERGED_LOSS", "Verdict", "decide", "diverged_groups", "run_diverged", "sentences"]

#: a loss above this has exploded. The lab's networks start near ln(10) = 2.3 (cross-entropy
#: over ten classes) or about 600 (squared error on Auto MPG), and healthy runs only go down
#: from there: 1e6 is more than a thousand times any of them.
DIVERGED_LOSS = 1e6


def run_diverged(rows: Sequence[dict[str, Any]]) -> bool:
    """True when one run's rows record a training or test loss that is not finite or exceeds
    :data:`DIVERGED_LOSS` (see the module docstring)."""
    for row in rows:
        for key in ("loss", "test_loss"):
            value = row.get(key)
            if isinstance(value, (int, float)) and not -DIVERGED_LOSS <= value <= DIVERGED_LOSS:
                return True  # NaN fails every comparison: caught here too
    return False


def _runs_by_group(record: Record) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """group -> run name -> the run's rows, in the record's order."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in record.rows:
        groups[str(row["group"])][str(row["name"])].append(row)
    return groups


def diverged_groups(record: Record) -> dict[str, tuple[int, int]]:
    """group -> (diverged runs, runs), for the groups with at least one diverged run."""
    out = {}
    for group, runs in _runs_by_group(record).items():
        bad = sum(run_diverged(rows) for rows in runs.values())
        if bad:
            out[group] = (bad, len(runs))
    return out


@dataclass(frozen=True)
class Verdict:
    """The comparison behind the sentences: ``best`` (the best mean) against ``other`` (the
    runner-up, or the group it cannot be told apart from) at ``epoch``; ``winner`` is ``best``
    or None."""

    metric: str
    higher_is_better: bool
    epoch: int
    best: str
    other: str
    values: dict[str, list[float]]  # group -> test metric per run at ``epoch``
    train: dict[str, list[float]]  # group -> training metric per run at ``epoch``
    difference: Difference  # best minus other
    winner: str | None


def decide(record: Record) -> Verdict | None:
    """The verdict by the module's rule; None when fewer than two groups can be compared."""
    m = record.metric
    diverged = diverged_groups(record)
    candidates = {g: runs for g, runs in _runs_by_group(record).items() if g not in diverged}
    if len(candidates) < 2:
        return None
    epoch = min(max(int(r["epoch"]) for rows in runs.values() for r in rows)
                for runs in candidates.values())  # fmt: skip

    def at_epoch(runs: dict[str, list[dict[str, Any]]], key: str) -> list[float]:
        return [float(r[key]) for rows in runs.values() for r in rows if int(r["epoch"]) == epoch]

    values = {g: at_epoch(runs, f"test_{m}") for g, runs in candidates.items()}
    values = {g: v for g, v in values.items() if any(math.isfinite(x) for x in v)}
    if len(values) < 2:
        return None
    ranked = sorted(values, key=lambda g: mean_ci95(values[g])[0], reverse=record.higher_is_better)
    best = ranked[0]
    diffs = {g: welch_difference(values[best], values[g], record.higher_is_better) for g in ranked}
    unclear = [g for g in ranked[1:] if diffs[g].verdict != "a"]
    other = unclear[0] if unclear else ranked[1]
    return Verdict(
        metric=m,
        higher_is_better=record.higher_is_better,
        epoch=epoch,
        best=best,
        other=other,
        values=values,
        train={g: at_epoch(candidates[g], m) for g in (best, other)},
        difference=diffs[other],
        winner=None if unclear else best,
    )


def _amount(metric: str, diff: float) -> str:
    return f"{number(abs(diff) * 100, 3)} points" if metric == "accuracy" else number(abs(diff))


def sentences(record: Record) -> list[str]:
    """The verdict in plain sentences: the winner on the test metric or why there is none,
    the groups left out as diverged, and the training metric of the two groups compared."""
    lines = []
    diverged = diverged_groups(record)
    if diverged:
        listed = ", ".join(f"{g} ({bad} of {n} runs)" for g, (bad, n) in diverged.items())
        lines.append(
            f"Diverged (a loss above {number(DIVERGED_LOSS)} or not finite), never the winner: "
            f"{listed}."
        )
    verdict = decide(record)
    if verdict is None:
        if not record.rows:
            return ["No finished epoch: nothing to compare."]
        return [*lines, "Fewer than two groups of runs to compare: no winner."]
    v, d = verdict, verdict.difference
    m = v.metric

    def pm(group: str, values: dict[str, list[float]]) -> str:
        return plus_minus(*mean_ci95(values[group]))

    where = f"on test {m} at epoch {v.epoch} (model in eval mode)"
    pair = f"{v.best} {pm(v.best, v.values)} vs {v.other} {pm(v.other, v.values)}"
    interval = f"95% CI of the difference {number(d.ci_low)} to {number(d.ci_high)}, Welch's t"
    if v.winner is not None:
        way = "better" if v.higher_is_better else "lower"
        lines.append(
            f"Winner {where}: {pair}, {way} by {_amount(m, d.estimate)} ({interval}): "
            "a clear difference."
        )
    elif d.verdict == "tie":
        lines.append(
            f"No winner {where}: {pair}; the {interval}, contains zero: not a clear difference "
            "with these seeds."
        )
    else:
        lines.append(
            f"No winner {where}: {pair}; a group with fewer than two seeds has no confidence "
            "interval (use --seeds 3 or more)."
        )
    lines.append(
        f"On the training set ({m} over the epoch, train mode): {v.best} "
        f"{number(mean_ci95(v.train[v.best])[0])} vs {v.other} "
        f"{number(mean_ci95(v.train[v.other])[0])}."
    )
    return lines
