"""Summaries of repeated timings: median and p95, nothing fancier."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least pct % of the samples at or below it."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float], unit: str = "s") -> dict[str, Any]:
    """``{"n", "median", "p95", "min", "max", "unit", "samples"}``; samples rounded to 0.1 ms."""
    if not values:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None, "unit": unit, "samples": []}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "unit": unit,
        "samples": [round(v, 4) for v in values],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator
