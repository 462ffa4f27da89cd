"""Timing peers fairly in one process: interleaved round by round, the order reversed each round.

A shared machine drifts (other jobs, CPU frequency, caches). Timing all of A and then all of B
would fold that drift into the comparison; here every round runs each peer once, so a slow
spell hits all of them alike, and every other round runs them in reverse order, so that no
peer always goes first (colder caches) or always follows the same peer. Report the ratio of
the medians: a median ignores the rounds a burst of load spoiled (the minimum is the least
disturbed figure).

A *runner* takes the round number and returns its own duration in seconds: an epoch runner
trains that epoch (same number, same shuffled batches for every peer), a distributed one
returns the slowest rank's time. ``timed(fn)`` makes a runner of a plain function.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Runner", "describe", "interleave", "medians", "ratio_of_medians", "report", "timed"]

#: takes the round number (warm-up rounds first, from 0), returns its duration in seconds.
Runner = Callable[[int], float]


def timed(fn: Callable[[], Any]) -> Runner:
    """A runner that calls ``fn()`` once and returns its wall time (``time.perf_counter``)."""

    def run(_round: int) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def interleave(
    runners: Mapping[str, Runner], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Each runner's durations in ``rounds`` timed rounds, after ``warmup`` untimed ones.

    The runners see the round numbers 0 .. warmup + rounds - 1, warm-up first: warm-up rounds
    absorb first-call costs (allocator growth, compiled kernels, lazy imports). Warm-up rounds
    and even timed rounds (counting from 0) run the peers in ``runners``' order, odd ones in
    reverse.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for number in range(warmup + rounds):
        timed_round = number - warmup
        for name in names[::-1] if timed_round % 2 and timed_round > 0 else names:
            seconds = runners[name](number)
            if timed_round >= 0:
                times[name].append(seconds)
    return times


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The median of each peer's durations."""
    return {name: statistics.median(t) for name, t in times.items()}


def ratio_of_medians(a: Sequence[float], b: Sequence[float]) -> float:
    """median(a) / median(b): below 1, a is faster."""
    return statistics.median(a) / statistics.median(b)


def describe(label: str, seconds: Sequence[float], digits: int = 3) -> str:
    """``"<label> median 0.123 s  [0.121, 0.123, 0.13]"``: the median, then every duration."""
    rounded = [round(x, digits) for x in seconds]
    return f"{label} median {statistics.median(seconds):.{digits}f} s  {rounded}"


def report(
    header: str, times: Mapping[str, Sequence[float]], verdict: str, digits: int = 3
) -> None:
    """Print a comparison: ``header``, one ``describe`` line per peer, then ``verdict``."""
    print(header)
    for label, seconds in times.items():
        print(f"  {describe(label, seconds, digits)}")
    print(f"  {verdict}")
