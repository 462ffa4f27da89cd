"""How the lab writes a number, in the terminal and in the HTML report alike.

Four significant digits, in fixed or scientific notation, whichever Python's ``g`` format
picks: 0.8946, 22.69, 597.5, 1.235e+13. A huge loss is written whole in few characters, never
as a 20-digit integer a table then cuts; a missing value is ``-``, NaN ``nan``, an infinity
``inf``. A 95% interval's half-width gets three significant digits: ``22.69 ± 0.128``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["number", "plus_minus"]


def number(value: Any, digits: int = 4) -> str:
    """``value`` for a table cell or a sentence (see the module docstring); ints, bools and
    strings as they are."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def plus_minus(mean: float, half: float) -> str:
    """``mean ± half`` (a 95% interval), or the mean alone when there is no interval (NaN)."""
    if isinstance(half, float) and math.isfinite(half):
        return f"{number(mean)} ± {number(half, 3)}"
    return number(mean)
