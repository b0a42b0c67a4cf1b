"""Number formatting shared by every view, so a value reads the same everywhere."""

from __future__ import annotations

import math


def num(x: float | None, digits: int = 4) -> str:
    """Significant digits; '—' for missing, '∞' for infinite."""
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def pct(x: float | None, decimals: int = 1) -> str:
    """A fraction in [0, 1] as a percentage."""
    if x is None or math.isnan(float(x)):
        return "—"
    return f"{100 * float(x):.{decimals}f} %"


def count(n: int) -> str:
    return f"{int(n):,}"
