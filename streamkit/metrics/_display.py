"""Rows of the distribution tables the HTML reprs show (shared by summaries and conventions)."""

from __future__ import annotations

from collections.abc import Mapping

from .distributions import Distribution

DISTRIBUTION_HEADER = ("metric", "count", "mean", "p50", "p90", "p95", "p99", "max")


def distribution_rows(dists: Mapping[str, Distribution]) -> list[list[object]]:
    """One table row per distribution: times in ms, rates (``…per_second…``) in tokens/s."""
    rows: list[list[object]] = []
    for name, d in dists.items():
        per_second = "per_second" in name
        label = f"{name} (tokens/s)" if per_second else f"{name} (ms)"
        k, digits = (1.0, 1) if per_second else (1000.0, 2)
        values = (d.mean, d.p50, d.p90, d.p95, d.p99, d.max)
        rows.append(
            [label, d.count, *(None if v is None else f"{v * k:.{digits}f}" for v in values)]
        )
    return rows
