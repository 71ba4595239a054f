"""Percentiles and distributions: the statistics every metric summary reports."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import UsageError

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)
"""The percentiles every summary reports."""


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) by linear interpolation; None for no values.

    Numpy's default method (``'linear'``, Hyndman & Fan type 7), computed with the same float
    operations as ``numpy.percentile``, so results agree bit for bit: the virtual index is
    ``(n − 1) · q/100`` between the sorted values around it.

    Args:
        values: the sample (any order).
        q: the percentile, from 0 to 100.

    Raises:
        UsageError: ``q`` is outside 0–100.
    """
    if not 0 <= q <= 100:
        raise UsageError(f"percentile q={q!r} is invalid: must be from 0 to 100")
    xs = sorted(values)
    return _sorted_percentile(xs, q)


def _sorted_percentile(xs: Sequence[float], q: float) -> float | None:
    n = len(xs)
    if n == 0:
        return None
    virtual = (n - 1) * (q / 100)
    lo = math.floor(virtual)
    if lo >= n - 1:
        return float(xs[-1])
    a, b = float(xs[lo]), float(xs[lo + 1])
    t = virtual - lo
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end, so t = 1 gives b exactly.
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def weighted_percentile(pairs: Iterable[tuple[float, float]], q: float) -> float | None:
    """The ``q``-th percentile (0–100) of weighted values by the inverted CDF, as GuideLLM does.

    Equal values are merged, weights normalised, and the result is the smallest value whose
    cumulative weight reaches ``q/100`` (GuideLLM's ``Percentiles.from_pdf``: a ``searchsorted``
    on the cumulative probabilities). With unit weights this is the nearest-rank percentile
    (numpy's ``'inverted_cdf'``): no interpolation. Zero-weight values are dropped.

    Args:
        pairs: ``(value, weight)`` pairs.
        q: the percentile, from 0 to 100.
    """
    if not 0 <= q <= 100:
        raise UsageError(f"percentile q={q!r} is invalid: must be from 0 to 100")
    merged: dict[float, float] = {}
    for value, weight in pairs:
        merged[value] = merged.get(value, 0.0) + weight
    items = sorted((v, w) for v, w in merged.items() if w > 0)
    if not items:
        return None
    total = math.fsum(w for _, w in items)
    target = q / 100
    cumulative = 0.0
    for value, weight in items:
        cumulative += weight / total
        if cumulative >= target:
            return value
    return items[-1][0]  # rounding left the last cumulative a hair below 1


@dataclass(frozen=True, slots=True)
class Distribution:
    """How a metric is spread: count, mean and the :data:`PERCENTILES` (None when empty).

    Attributes:
        count: how many values (for a weighted distribution, the number of values with weight).
        mean: arithmetic mean (weighted mean for a weighted distribution).
        p50, p90, p95, p99: percentiles.
        max: the largest value.
    """

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        """The fields as a plain dict."""
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
        }


EMPTY_DISTRIBUTION = Distribution(0, None, None, None, None, None, None)


def distribution(values: Iterable[float]) -> Distribution:
    """Count, mean and linear-interpolation percentiles of ``values`` (vLLM's statistics)."""
    xs = sorted(values)
    if not xs:
        return EMPTY_DISTRIBUTION
    p50, p90, p95, p99 = (_sorted_percentile(xs, q) for q in PERCENTILES)
    return Distribution(len(xs), math.fsum(xs) / len(xs), p50, p90, p95, p99, xs[-1])


def weighted_distribution(pairs: Sequence[tuple[float, float]]) -> Distribution:
    kept = [(v, w) for v, w in pairs if w > 0]
    if not kept:
        return EMPTY_DISTRIBUTION
    total = math.fsum(w for _, w in kept)
    mean = math.fsum(v * w for v, w in kept) / total
    p50, p90, p95, p99 = (weighted_percentile(kept, q) for q in PERCENTILES)
    return Distribution(len(kept), mean, p50, p90, p95, p99, max(v for v, _ in kept))
