"""A figure's spread across the rounds of a run: min, median and max.

A ratio between two variants is computed round by round (the rounds are
interleaved, so round *i* of each variant ran under the same conditions), and
reported as its median with the lowest and highest round beside it, so a reader
sees when a difference is within the run's noise.

Example::

    >>> ratio_rounds([120.0, 100.0, 110.0], [100.0, 100.0, 100.0])
    [1.2, 1.0, 1.1]
    >>> text(spread([1.2, 1.0, 1.1]))
    '1.10x (1.00-1.20, 3 rounds)'
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ("ratio_rounds", "spread", "text")


def ratio_rounds(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[i] / denominators[i]`` for every round both measured (a zero is skipped)."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d]


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any] | None:
    """``{"min", "median", "max", "rounds"}`` of ``values``; None when there are none."""
    if not values:
        return None
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits), "rounds": len(values)}  # fmt: skip


def text(figures: dict[str, Any] | None, unit: str = "x", digits: int = 2) -> str:
    """``"1.10x (1.00-1.20, 3 rounds)"``; one round says so instead of a range."""
    if not figures:
        return "-"
    median = f"{figures['median']:.{digits}f}{unit}"
    if figures["rounds"] < 2:
        return f"{median} (1 round: no spread)"
    return (f"{median} ({figures['min']:.{digits}f}-{figures['max']:.{digits}f}, "
            f"{figures['rounds']} rounds)")  # fmt: skip
