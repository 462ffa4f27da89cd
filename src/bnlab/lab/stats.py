"""Mean and 95% confidence interval of the mean over seeds.

The interval is Student's t: ``mean +- t(0.975, n-1) * s / sqrt(n)`` with the sample standard
deviation ``s`` (ddof=1). With n < 2 there is no interval (NaN). t quantiles come from SciPy
(a scikit-learn dependency, so always installed with bnlab).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@functools.lru_cache(maxsize=1024)
def t_quantile(df: float, q: float = 0.975) -> float:
    """Student's t quantile; ``df`` may be fractional (Welch-Satterthwaite). Cached: a summary
    asks for the same few degrees of freedom at every epoch of every group."""
    from scipy.stats import t

    return float(t.ppf(q, df))


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% CI); NaN values are ignored; (nan, nan) if empty."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, t_quantile(n - 1) * math.sqrt(var / n)


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its 95% interval, and what the interval lets us say.

    ``verdict`` is the one rule bnlab uses everywhere (CLI, report, claims ledger):
    ``"a"`` or ``"b"`` when the interval excludes zero on that side (taking
    ``higher_is_better`` into account), ``"tie"`` when it contains zero, ``"unknown"``
    when there is no interval (fewer than two finite values on a side).
    """

    estimate: float
    ci_low: float
    ci_high: float
    verdict: str


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _decide(estimate: float, low: float, high: float, higher_is_better: bool) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "unknown"
    if low <= 0.0 <= high:
        return "tie"
    a_larger = low > 0.0
    return "a" if a_larger == higher_is_better else "b"


def welch_difference(
    a: Sequence[float], b: Sequence[float], higher_is_better: bool = True
) -> Difference:
    """Welch's t interval for ``mean(a) - mean(b)`` (unpaired; unequal variances)."""
    xs, ys = _finite(a), _finite(b)
    if not xs or not ys:
        return Difference(math.nan, math.nan, math.nan, "unknown")
    ma, mb = sum(xs) / len(xs), sum(ys) / len(ys)
    estimate = ma - mb
    if len(xs) < 2 or len(ys) < 2:
        return Difference(estimate, math.nan, math.nan, "unknown")
    va = sum((x - ma) ** 2 for x in xs) / (len(xs) - 1) / len(xs)
    vb = sum((y - mb) ** 2 for y in ys) / (len(ys) - 1) / len(ys)
    se2 = va + vb
    if se2 == 0.0:
        half = 0.0
    else:
        df = se2**2 / (va**2 / (len(xs) - 1) + vb**2 / (len(ys) - 1))
        half = t_quantile(df) * math.sqrt(se2)
    low, high = estimate - half, estimate + half
    return Difference(estimate, low, high, _decide(estimate, low, high, higher_is_better))


def paired_difference(
    a: Sequence[float], b: Sequence[float], higher_is_better: bool = True
) -> Difference:
    """Student's t interval for the mean of ``a[i] - b[i]`` (pairs with a NaN side dropped)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs equal lengths, got {len(a)} and {len(b)}")
    diffs = [
        float(x) - float(y)
        for x, y in zip(a, b, strict=True)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    mean, half = mean_ci95(diffs)
    if math.isnan(mean):
        return Difference(math.nan, math.nan, math.nan, "unknown")
    low, high = mean - half, mean + half
    return Difference(mean, low, high, _decide(mean, low, high, higher_is_better))
