"""Other benchmarking tools' conventions (vLLM, genai-perf, GuideLLM), from the same raw log."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._display import DISTRIBUTION_HEADER, distribution_rows
from .distributions import Distribution, distribution, weighted_distribution
from .recorder import RequestRecorder
from .summary import summarize

if TYPE_CHECKING:
    import pandas as pd

    from .collector import MetricsCollector


@dataclass(frozen=True, slots=True, repr=False)
class ConventionMetrics:
    """One benchmarking tool's reading of a run.

    Attributes:
        convention: ``vllm``, ``genai-perf`` or ``guidellm``.
        requests: how many requests the convention counts.
        duration: the duration its throughputs divide by (seconds).
        output_throughput: output tokens per second over the run.
        request_throughput: requests per second over the run.
        metrics: distribution per metric name (``ttft``, ``tpot``, ``itl``, …; seconds).
        definitions: one line per metric saying how the convention computes it.
    """

    convention: str
    requests: int
    duration: float
    output_throughput: float | None
    request_throughput: float | None
    metrics: dict[str, Distribution]
    definitions: dict[str, str]

    def __repr__(self) -> str:
        """One line: ``<ConventionMetrics genai-perf · 50 requests · 2.31 s · 277.1 tok/s>``."""
        parts = [self.convention, f"{self.requests} requests", f"{self.duration:.2f} s"]
        if self.output_throughput is not None:
            parts.append(f"{self.output_throughput:.1f} tok/s")
        return f"<ConventionMetrics {' · '.join(parts)}>"

    def _repr_html_(self) -> str:
        """Throughputs, then one row per metric with its definition under this convention."""
        from .. import _html

        out = self.output_throughput
        req = self.request_throughput
        rows = [
            ("requests", self.requests),
            ("duration", f"{self.duration:.2f} s"),
            ("output throughput", None if out is None else f"{out:.1f} tok/s"),
            ("request throughput", None if req is None else f"{req:.2f} req/s"),
            ("throughput is", self.definitions.get("throughput")),
        ]
        counts = _html.key_value_table("ConventionMetrics", rows, note=self.convention)
        spread = _html.grid(
            "distributions",
            [*DISTRIBUTION_HEADER, "definition"],
            [
                [*cells, self.definitions.get(name, "")]
                for name, cells in zip(self.metrics, distribution_rows(self.metrics), strict=True)
            ],
            align="l" + "r" * (len(DISTRIBUTION_HEADER) - 1) + "l",
        )
        return _html.wrap(counts, spread)


def vllm_metrics(
    recs: Sequence[RequestRecorder], *, duration: float | None = None
) -> ConventionMetrics:
    """streamkit's own definitions (vLLM ``bench serve``), shaped like the other conventions."""
    s = summarize(recs, duration=duration)
    return ConventionMetrics(
        convention="vllm",
        requests=s.completed,
        duration=s.duration,
        output_throughput=s.output_throughput,
        request_throughput=s.request_throughput,
        metrics={"ttft": s.ttft, "tpot": s.tpot, "itl": s.itl, "e2e": s.e2e},
        definitions={
            "ttft": "first content chunk − send",
            "tpot": "(E2E − TTFT) / (N_out − 1), per request, N_out > 1",
            "itl": "every gap between content chunks, pooled over requests",
            "e2e": "last content chunk − send",
            "throughput": "Σ N_out / (first send → last end); completed requests",
        },
    )


def genai_perf_metrics(recs: Sequence[RequestRecorder]) -> ConventionMetrics:
    """NVIDIA genai-perf's definitions, derived from the same raw log.

    From ``genai_perf/profile_data_parser/llm_profile_data_parser.py``: responses without content
    are dropped first (so a role-only chunk never counts); every request that returned content
    counts (the parser does not look at how it ended). Per request: TTFT = first content
    response − send; request latency = last content response − send; **ITL = (latency − TTFT) /
    (N − 1)**, one *average per request* (vLLM's TPOT), so the first token is excluded and each
    request weighs the same;
    time to second token = second − first response; per-request output throughput = N / latency
    (TTFT included). Run duration = last response − first send; throughputs divide by it.
    Percentiles: ``np.percentile`` (linear). genai-perf re-tokenizes the text for N; here N is
    N_out (usage, else counted).
    """
    started = [r for r in recs if r.status != "pending" or r.finished]
    kept = [r for r in started if len(r.times) > r.kept_from]
    ttfts: list[float] = []
    latencies: list[float] = []
    itls: list[float] = []
    ttst: list[float] = []
    per_request: list[float] = []
    total = 0
    for rec in kept:
        sent = rec.send_time
        times = rec.kept_times()
        first, last = times[0], times[-1]
        n, _ = rec.output_tokens()
        ttft, latency = first - sent, last - sent
        ttfts.append(ttft)
        latencies.append(latency)
        if len(times) > 1:
            ttst.append(times[1] - first)
        if n > 1:
            itls.append((latency - ttft) / (n - 1))
        if latency > 0:
            per_request.append(n / latency)
        total += n
    duration = 0.0
    if kept:
        duration = max(r.kept_times()[-1] for r in kept) - min(r.send_time for r in kept)
    return ConventionMetrics(
        convention="genai-perf",
        requests=len(kept),
        duration=duration,
        output_throughput=total / duration if duration > 0 else None,
        # genai-perf divides the count of every request sent, content or not.
        request_throughput=len(started) / duration if duration > 0 else None,
        metrics={
            "ttft": distribution(ttfts),
            "time_to_second_token": distribution(ttst),
            "itl": distribution(itls),
            "e2e": distribution(latencies),
            "output_tokens_per_second_per_request": distribution(per_request),
        },
        definitions={
            "ttft": "first non-empty response − send",
            "time_to_second_token": "second − first non-empty response",
            "itl": "(latency − TTFT) / (N − 1), averaged per request (= vLLM TPOT)",
            "e2e": "request latency: last non-empty response − send",
            "output_tokens_per_second_per_request": "N / request latency (TTFT included)",
            "throughput": "Σ N / (first send → last response); requests that returned content",
        },
    )


def guidellm_metrics(recs: Sequence[RequestRecorder]) -> ConventionMetrics:
    """GuideLLM's definitions, derived from the same raw log.

    From ``guidellm/schemas/request_stats.py`` (``GenerativeRequestStats``) and
    ``guidellm/benchmark/schemas/generative/metrics.py``, for successful requests: TTFT = first
    token iteration − request start; **TPOT = (last token − request start) / N**, which *includes*
    the first token and so the whole TTFT; ITL = (last token − first token) / (N − 1); request
    latency = request end (the response closed, after the usage chunk and ``[DONE]``) − start;
    per-request output tokens/s = N / request latency. N is ``usage.completion_tokens``, else the
    token iterations counted. Distributions are *token-weighted*: TPOT by N, ITL by N − 1, and
    percentiles read the weighted cumulative distribution without interpolation
    (:func:`weighted_percentile`). GuideLLM reports output tokens/s as a rate distribution over
    time; its overall figure is approximated here by Σ N / (first start → last end).
    """
    kept = [r for r in recs if r.status == "completed"]
    ttfts: list[float] = []
    tpot: list[tuple[float, float]] = []
    itl: list[tuple[float, float]] = []
    latency: list[float] = []
    per_request: list[float] = []
    total = 0
    for rec in kept:
        sent = rec.send_time
        n, _ = rec.output_tokens()
        total += n
        times = rec.kept_times()
        end = rec.ended_at if rec.ended_at is not None else (times[-1] if times else sent)
        latency.append(end - sent)
        if end > sent:
            per_request.append(n / (end - sent))
        if not times:
            continue
        first, last = times[0], times[-1]
        ttfts.append(first - sent)
        if n > 0:
            tpot.append(((last - sent) / n, float(n)))
        if n > 1:
            itl.append(((last - first) / (n - 1), float(n - 1)))
    duration = 0.0
    if kept:
        duration = max((r.ended_at if r.ended_at is not None else r.send_time) for r in kept) - min(
            r.send_time for r in kept
        )
    return ConventionMetrics(
        convention="guidellm",
        requests=len(kept),
        duration=duration,
        output_throughput=total / duration if duration > 0 else None,
        request_throughput=len(kept) / duration if duration > 0 else None,
        metrics={
            "ttft": weighted_distribution([(v, 1.0) for v in ttfts]),
            "tpot": weighted_distribution(tpot),
            "itl": weighted_distribution(itl),
            "e2e": weighted_distribution([(v, 1.0) for v in latency]),
            "output_tokens_per_second_per_request": weighted_distribution(
                [(v, 1.0) for v in per_request]
            ),
        },
        definitions={
            "ttft": "first token iteration − request start",
            "tpot": "(last token − start) / N, includes the first token; weighted by N",
            "itl": "(last − first token) / (N − 1); weighted by N − 1",
            "e2e": "request latency: response closed (after [DONE]) − start",
            "output_tokens_per_second_per_request": "N / request latency",
            "throughput": "Σ N / (first start → last end); successful requests",
        },
    )


def compare_conventions(
    source: MetricsCollector | Sequence[RequestRecorder], *, unit: Literal["s", "ms"] = "ms"
) -> pd.DataFrame:
    """vLLM, genai-perf and GuideLLM side by side, from the same raw log.

    Returns:
        One row per (convention, metric) with ``count``, ``mean``, ``p50``, ``p90``, ``p99`` (in
        ``unit``) and the ``definition``; throughput rows carry tokens/s in ``mean``.
    """
    import pandas as pd

    recs = list(source)  # a collector iterates over its requests
    scale = 1000.0 if unit == "ms" else 1.0
    rows: list[dict[str, object]] = []
    for conv in (vllm_metrics(recs), genai_perf_metrics(recs), guidellm_metrics(recs)):
        for name, dist in conv.metrics.items():
            per_second = name.startswith("output_tokens_per_second")
            k = 1.0 if per_second else scale
            rows.append(
                {
                    "convention": conv.convention,
                    "metric": name,
                    "count": dist.count,
                    "mean": _scaled(dist.mean, k),
                    "p50": _scaled(dist.p50, k),
                    "p90": _scaled(dist.p90, k),
                    "p99": _scaled(dist.p99, k),
                    "definition": conv.definitions.get(name, ""),
                }
            )
        rows.append(
            {
                "convention": conv.convention,
                "metric": "output_throughput",
                "count": conv.requests,
                "mean": conv.output_throughput,
                "p50": math.nan,
                "p90": math.nan,
                "p99": math.nan,
                "definition": conv.definitions.get("throughput", ""),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.astype({"count": "int64", "mean": "float64", "p50": "float64"})


def _scaled(value: float | None, k: float) -> float:
    return math.nan if value is None else value * k
