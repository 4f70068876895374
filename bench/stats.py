"""Percentiles and repetition summaries. Pure functions, no I/O.

A message that was never delivered counts as infinitely late: the p99 of a run in
which more than 1 % of the expected messages did not arrive is ``inf`` (reported
as "not delivered"), never the p99 of the lucky ones.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Summary", "json_float", "percentile", "ratio", "summarize"]


def percentile(values: Sequence[float], q: float, *, expected: int | None = None) -> float:
    """The ``q``-th percentile (0-100, nearest rank) of ``values``.

    With ``expected`` greater than ``len(values)``, the missing values count as
    ``inf``. Returns ``nan`` when there is nothing to rank.
    """
    total = len(values) if expected is None else max(expected, len(values))
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100 * total))
    if rank > len(values):
        return math.inf
    return sorted(values)[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, min and max of one metric over repetitions (``n`` finite values)."""

    median: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": json_float(self.median),
            "min": json_float(self.low),
            "max": json_float(self.high),
            "n": self.n,
        }


def json_float(value: float) -> float | str | None:
    """``value`` for JSON: ``nan`` becomes null and ``inf`` the string ``"inf"``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf"
    return value


def summarize(values: Iterable[float | None]) -> Summary:
    """Median/min/max of ``values``; ``None``/``nan`` are skipped, ``inf`` is kept."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return Summary(math.nan, math.nan, math.nan, 0)
    return Summary(statistics.median(kept), min(kept), max(kept), len(kept))


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; ``nan`` when either is missing or the baseline is zero."""
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    if math.isinf(value) and math.isinf(baseline):
        return math.nan
    return value / baseline
