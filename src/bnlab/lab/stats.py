"""Mean and 95% confidence interval of the mean over seeds.

The interval is Student's t: ``mean +- t(0.975, n-1) * s / sqrt(n)`` with the sample standard
deviation ``s`` (ddof=1). With n < 2 there is no interval (NaN). t quantiles come from SciPy
(a scikit-learn dependency, so always installed with bnlab).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% CI); NaN values are ignored; (nan, nan) if empty."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, t_quantile(n - 1) * math.sqrt(var / n)
