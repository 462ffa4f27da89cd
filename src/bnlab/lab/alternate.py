"""Timing two training loops fairly in one process: epochs alternate, and their order flips.

A shared machine drifts (other jobs, frequency, caches); running A's epochs and then B's would
fold that drift into the comparison. Here epoch k runs A then B when k is odd and B then A when
it is even, each on its own model, and each is given the same epoch number (hence the same
shuffled batches). The figure to report is the ratio of the medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

#: an epoch runner: takes the epoch number (0 = warm-up), returns its duration in seconds.
EpochRunner = Callable[[int], float]


def alternate(a: EpochRunner, b: EpochRunner, repeats: int) -> tuple[list[float], list[float]]:
    """Durations of ``repeats`` epochs of each, after one untimed warm-up epoch each.

    The warm-up absorbs first-call costs (allocator growth, compiled kernels, lazy imports).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    a(0)
    b(0)
    times_a: list[float] = []
    times_b: list[float] = []
    for epoch in range(1, repeats + 1):
        if epoch % 2:
            times_a.append(a(epoch))
            times_b.append(b(epoch))
        else:
            times_b.append(b(epoch))
            times_a.append(a(epoch))
    return times_a, times_b


def median_ratio(times_a: list[float], times_b: list[float]) -> float:
    """median(a) / median(b)."""
    return statistics.median(times_a) / statistics.median(times_b)
