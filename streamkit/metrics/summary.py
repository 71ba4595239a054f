"""Per-request metrics and the run summary under streamkit's (vLLM's) definitions, with SLOs."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import UsageError
from ..result import OutputTokensSource
from ._display import DISTRIBUTION_HEADER, distribution_rows
from .distributions import Distribution, distribution
from .recorder import RequestRecorder, RequestStatus, run_window


@dataclass(frozen=True, slots=True)
class SLO:
    """Service-level objectives for goodput, in seconds; ``None`` means no objective.

    A request is *good* when it completed and every objective given holds (``metric <= limit``).
    As in vLLM, a request with one output token (TPOT undefined) meets a TPOT objective.

    Args:
        ttft: the most time to first token.
        tpot: the most time per output token after the first.
        e2e: the most end-to-end latency.

    Raises:
        UsageError: a limit is not a positive number, or none is given.
    """

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft", "tpot", "e2e"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise UsageError(f"SLO {name}={value!r} is invalid: must be seconds > 0 or None")
        if self.ttft is None and self.tpot is None and self.e2e is None:
            raise UsageError("an SLO needs at least one of ttft=, tpot=, e2e= (in seconds)")

    def met_by(self, metrics: RequestMetrics) -> bool:
        """Whether a request completed within every objective given."""
        if metrics.status != "completed":
            return False
        if self.ttft is not None and (metrics.ttft is None or metrics.ttft > self.ttft):
            return False
        if self.tpot is not None and metrics.tpot is not None and metrics.tpot > self.tpot:
            return False
        return not (self.e2e is not None and (metrics.e2e is None or metrics.e2e > self.e2e))


@dataclass(frozen=True, slots=True, repr=False)
class RequestMetrics:
    """One request's metrics under streamkit's (vLLM's) definitions; seconds, None if undefined.

    Absolute times (``sent_at``…``ended_at``) are ``perf_counter`` seconds; the DataFrame exports
    make them relative to the collector's origin.
    """

    id: int
    label: str
    model: str
    status: RequestStatus
    finish_reason: str | None
    error_kind: str | None
    error_message: str | None
    sent_at: float
    first_byte_at: float | None
    first_token_at: float | None
    last_token_at: float | None
    ended_at: float | None
    ttfb: float | None
    ttft: float | None
    tpot: float | None
    e2e: float | None
    itl: list[float]
    output_tokens: int
    output_tokens_source: OutputTokensSource
    prompt_tokens: int | None
    chunks: int
    chars: int
    tokens_per_second: float | None
    retries: int
    retry_causes: tuple[str, ...]
    render_lag_mean: float | None
    render_lag_max: float | None
    tags: Mapping[str, object] = field(default_factory=dict)
    ttft_answer: float | None = None
    reasoning_chunks: int = 0
    tool_call_chunks: int = 0

    @property
    def ok(self) -> bool:
        """True when the server completed the stream."""
        return self.status == "completed"

    def __repr__(self) -> str:
        """One line: ``<RequestMetrics 3 'request 3' completed sim-small · 64 tokens · …>``."""
        parts = [f"{self.output_tokens} tokens"]
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.tpot is not None:
            parts.append(f"TPOT {self.tpot * 1000:.1f} ms")
        if self.error_kind is not None and self.status != "completed":
            parts.append(self.error_kind)
        model = f" {self.model}" if self.model else ""
        return (
            f"<RequestMetrics {self.id} {self.label!r} {self.status}{model} · "
            + " · ".join(parts)
            + ">"
        )

    def _repr_html_(self) -> str:
        """A compact table of the request's metrics, every value escaped."""
        from .. import _html

        rows: list[tuple[str, object]] = [
            ("status", self.status),
            ("model", self.model or None),
        ]
        if self.error_kind is not None and self.status != "completed":
            rows.append(("error", f"{self.error_kind}: {self.error_message}"))
        speed = self.tokens_per_second
        rows += [
            ("TTFB", _html.ms(self.ttfb)),
            ("TTFT", _html.ms(self.ttft)),
            ("TPOT", _html.ms(self.tpot, 2)),
            ("tokens/s", None if speed is None else f"{speed:.1f}"),
            ("E2E", _html.ms(self.e2e)),
            ("output tokens", f"{self.output_tokens} ({self.output_tokens_source})"),
            ("prompt tokens", self.prompt_tokens),
            ("finish reason", self.finish_reason),
            ("retries", self.retries),
        ]
        if self.render_lag_mean is not None:
            rows.append(
                (
                    "render lag",
                    f"mean {_html.ms(self.render_lag_mean)}, max {_html.ms(self.render_lag_max)}",
                )
            )
        rows += [(str(k), v) for k, v in self.tags.items()]
        table = _html.key_value_table("RequestMetrics", rows, note=f"{self.id} · {self.label}")
        return _html.wrap(table)


def request_metrics(rec: RequestRecorder) -> RequestMetrics:
    """Compute one request's metrics from its raw log (see the module docstring)."""
    times = rec.kept_times()
    sent = rec.send_time
    first = times[0] if times else None
    last = times[-1] if times else None
    n_out, source = rec.output_tokens()
    ttft = first - sent if first is not None else None
    e2e = last - sent if last is not None else None
    tpot = None
    if ttft is not None and e2e is not None and n_out > 1:
        tpot = (e2e - ttft) / (n_out - 1)
    speed = None
    if first is not None and last is not None and n_out > 1 and last > first:
        speed = (n_out - 1) / (last - first)
    lags = rec.render_lags
    reasoning, tools, first_answer = rec.kept_kinds()
    return RequestMetrics(
        id=rec.id,
        label=rec.label,
        model=rec.model,
        status=rec.status,
        finish_reason=rec.finish_reason,
        error_kind=rec.error.kind if rec.error is not None else None,
        error_message=rec.error.message if rec.error is not None else None,
        sent_at=sent,
        first_byte_at=rec.first_byte_at,
        first_token_at=first,
        last_token_at=last,
        ended_at=rec.ended_at,
        ttfb=rec.first_byte_at - sent if rec.first_byte_at is not None else None,
        ttft=ttft,
        tpot=tpot,
        e2e=e2e,
        itl=rec.itl(),
        output_tokens=n_out,
        output_tokens_source=source,
        prompt_tokens=rec.usage.prompt_tokens if rec.usage is not None else None,
        chunks=len(times),
        chars=sum(rec.chars[rec.kept_from :]),
        tokens_per_second=speed,
        retries=len(rec.retries) + rec.sdk_retries,
        retry_causes=tuple(r.cause for r in rec.retries),
        render_lag_mean=math.fsum(lags) / len(lags) if lags else None,
        render_lag_max=max(lags) if lags else None,
        tags=rec.tags,
        ttft_answer=first_answer - sent if first_answer is not None else None,
        reasoning_chunks=reasoning,
        tool_call_chunks=tools,
    )


# -- run summary -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class RunSummary:
    """A run under streamkit's (vLLM's) definitions: counts, throughputs, distributions.

    Distributions cover completed requests only; ``itl`` pools every gap of every completed
    request. Throughputs divide by ``duration``, the run's wall time in seconds.
    """

    requests: int
    completed: int
    failed: int
    stopped: int
    running: int
    duration: float
    output_tokens: int
    output_throughput: float | None
    request_throughput: float | None
    goodput: float | None
    good_requests: int | None
    slo: SLO | None
    ttfb: Distribution
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    tokens_per_second: Distribution
    retries: int
    retry_causes: dict[str, int]
    errors: dict[str, int]

    def distributions(self) -> dict[str, Distribution]:
        """The per-request distributions by metric name."""
        return {
            "ttfb": self.ttfb,
            "ttft": self.ttft,
            "tpot": self.tpot,
            "itl": self.itl,
            "e2e": self.e2e,
            "tokens_per_second": self.tokens_per_second,
        }

    def __str__(self) -> str:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value * 1000:.1f} ms"

        lines = [
            f"{self.requests} requests: {self.completed} completed, {self.failed} failed, "
            f"{self.stopped} stopped, {self.running} running; {self.duration:.2f} s",
            f"output {self.output_tokens} tokens, "
            + (
                f"{self.output_throughput:.1f} tok/s, {self.request_throughput:.2f} req/s"
                if self.output_throughput is not None and self.request_throughput is not None
                else "no throughput yet"
            ),
            f"TTFT p50 {ms(self.ttft.p50)} p99 {ms(self.ttft.p99)} · "
            f"TPOT p50 {ms(self.tpot.p50)} · ITL p50 {ms(self.itl.p50)} p99 {ms(self.itl.p99)} · "
            f"E2E p50 {ms(self.e2e.p50)}",
        ]
        if self.goodput is not None:
            lines.append(f"goodput {self.goodput:.2f} req/s ({self.good_requests} good)")
        if self.retries or self.errors:
            causes = ", ".join(f"{k} ×{v}" for k, v in sorted(self.retry_causes.items()))
            errors = ", ".join(f"{k} ×{v}" for k, v in sorted(self.errors.items()))
            lines.append(f"retries {self.retries} ({causes or '-'}); errors: {errors or 'none'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        """One line: ``<RunSummary 10 requests: 10 completed, 0 failed · 2.31 s · 277.1 tok/s ·
        TTFT p50 85 ms>``; ``print(summary)`` gives the full text."""
        parts = [
            f"{self.requests} requests: {self.completed} completed, {self.failed} failed",
            f"{self.duration:.2f} s",
        ]
        if self.output_throughput is not None:
            parts.append(f"{self.output_throughput:.1f} tok/s")
        if self.ttft.p50 is not None:
            parts.append(f"TTFT p50 {self.ttft.p50 * 1000:.0f} ms")
        if self.goodput is not None:
            parts.append(f"goodput {self.goodput:.2f} req/s")
        return f"<RunSummary {' · '.join(parts)}>"

    def _repr_html_(self) -> str:
        """Counts and throughputs, then one row per distribution (completed requests)."""
        from .. import _html

        def rate(value: float | None, unit: str, digits: int) -> str | None:
            return None if value is None else f"{value:.{digits}f} {unit}"

        rows: list[tuple[str, object]] = [
            (
                "requests",
                f"{self.requests}: {self.completed} completed, {self.failed} failed, "
                f"{self.stopped} stopped, {self.running} running",
            ),
            ("duration", f"{self.duration:.2f} s"),
            ("output tokens", self.output_tokens),
            ("output throughput", rate(self.output_throughput, "tok/s", 1)),
            ("request throughput", rate(self.request_throughput, "req/s", 2)),
        ]
        if self.slo is not None:
            limits = ", ".join(
                f"{name} ≤ {limit * 1000:g} ms"
                for name, limit in (
                    ("TTFT", self.slo.ttft),
                    ("TPOT", self.slo.tpot),
                    ("E2E", self.slo.e2e),
                )
                if limit is not None
            )
            rows.append(
                (
                    "goodput",
                    f"{rate(self.goodput, 'req/s', 2) or _html.MISSING} "
                    f"({self.good_requests} good; {limits})",
                )
            )
        if self.retries or self.retry_causes:
            causes = ", ".join(f"{k} ×{v}" for k, v in sorted(self.retry_causes.items()))
            rows.append(("retries", f"{self.retries} ({causes})" if causes else self.retries))
        if self.errors:
            rows.append(("errors", ", ".join(f"{k} ×{v}" for k, v in sorted(self.errors.items()))))
        counts = _html.key_value_table("RunSummary", rows)
        spread = _html.grid(
            "distributions",
            DISTRIBUTION_HEADER,
            distribution_rows(self.distributions()),
            note="completed requests",
        )
        return _html.wrap(counts, spread)


def summarize(
    recs: Sequence[RequestRecorder],
    *,
    slo: SLO | None = None,
    duration: float | None = None,
) -> RunSummary:
    """Summarise requests under streamkit's (vLLM's) definitions.

    Args:
        recs: the raw logs (e.g. ``collector.requests``).
        slo: objectives for goodput; None reports no goodput.
        duration: the run's wall time in seconds; default first send to last end.
    """
    metrics = [request_metrics(r) for r in recs]
    completed = [m for m in metrics if m.status == "completed"]
    if duration is None:
        window = run_window(recs)
        duration = window[1] - window[0] if window else 0.0
    itl_pool = [gap for m in completed for gap in m.itl]
    total_out = sum(m.output_tokens for m in completed)
    good = sum(1 for m in completed if slo.met_by(m)) if slo is not None else None
    retry_causes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for m in metrics:
        retry_causes.update(m.retry_causes)
        if m.error_kind is not None and m.status != "completed":
            errors[m.error_kind] += 1
    return RunSummary(
        requests=len(metrics),
        completed=len(completed),
        failed=sum(1 for m in metrics if m.status == "failed"),
        stopped=sum(1 for m in metrics if m.status == "stopped"),
        running=sum(1 for m in metrics if m.status in ("pending", "streaming")),
        duration=duration,
        output_tokens=total_out,
        output_throughput=total_out / duration if duration > 0 else None,
        request_throughput=len(completed) / duration if duration > 0 else None,
        goodput=good / duration if good is not None and duration > 0 else None,
        good_requests=good,
        slo=slo,
        ttfb=distribution(m.ttfb for m in completed if m.ttfb is not None),
        ttft=distribution(m.ttft for m in completed if m.ttft is not None),
        tpot=distribution(m.tpot for m in completed if m.tpot is not None),
        itl=distribution(itl_pool),
        e2e=distribution(m.e2e for m in completed if m.e2e is not None),
        tokens_per_second=distribution(
            m.tokens_per_second for m in completed if m.tokens_per_second is not None
        ),
        retries=sum(m.retries for m in metrics),
        retry_causes=dict(retry_causes),
        errors=dict(errors),
    )
