"""LoadResult: what a load experiment measured, its reports, and the warnings that doubt it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._vllm import DEFAULT_METRIC_PERCENTILES, DEFAULT_PERCENTILE_METRICS, vllm_result
from ..errors import UsageError
from ..metrics import Distribution, MetricsCollector, RunSummary
from .spec import LoadSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LAGGING", "SATURATED", "LoadResult", "warnings_of"]

SATURATED = 0.85
"""Client CPU, as a fraction of one core, above which a run warns that the client may be what it
measured (asyncio runs on one core: past this, events wait for the loop)."""
LAGGING = 0.1
"""Event-loop lag (p99, seconds) above which a run of a second or more warns: a client busy in
bursts (a thousand requests opened at once) can delay events by this much without averaging near
a full core. Shorter runs have too few lag samples for a p99 (their first requests also pay for
imports and connections)."""


@dataclass
class LoadResult:
    """What a load experiment measured.

    Attributes:
        spec: the experiment.
        collector: every request's raw log (the metrics, tables and exports come from it).
        target: where the requests went (base URL, or the balancer's endpoints).
        transport: the client's transport, when known.
        wall_seconds: from the first send to the last request's end.
        client_cpu_seconds: CPU time of the event loop's thread over the run: the client's own
            cost (a bundled server in the same process runs on another thread).
        loop_lag: the event loop's lag in seconds (how late a 20 Hz ticker woke): ``p50``,
            ``p99``, ``max``. Tens of ms mean events waited for a busy client.
        scheduled_rate: for an open loop, the rate of the drawn arrival times (requests/s).
        warnings: what makes the figures doubtful (a saturated client, failed requests).
        processes: how many client processes sent the load (more than 1 when distributed).
    """

    spec: LoadSpec
    collector: MetricsCollector
    target: str = ""
    transport: str | None = None
    wall_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    loop_lag: dict[str, float] = field(default_factory=dict)
    scheduled_rate: float | None = None
    warnings: list[str] = field(default_factory=list)
    processes: int = 1

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"<LoadResult {s.completed}/{s.requests} completed in {self.wall_seconds:.2f} s, "
            f"{self.spec.mode}, client CPU {self.client_cpu:.0%}>"
        )

    @property
    def client_cpu(self) -> float:
        """The client's CPU use in cores (1.0 = one core busy all the time; a distributed run
        sums its processes, so it can exceed 1)."""
        return self.client_cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def summary(self) -> RunSummary:
        """The run under streamkit's (vLLM's) definitions, with the spec's SLO for goodput."""
        return self.collector.summary(self.spec.slo)

    @property
    def send_rate(self) -> float | None:
        """Requests actually sent per second: (n − 1) over the time from first to last send."""
        sends = sorted(r.send_time for r in self.collector.requests if r.sent_at is not None)
        if len(sends) < 2 or sends[-1] <= sends[0]:
            return None
        return (len(sends) - 1) / (sends[-1] - sends[0])

    @property
    def max_in_flight(self) -> int:
        """The most requests in flight at once (sent, not yet ended): the concurrency the run
        actually reached, which a ramp-up or a slow client can keep below the spec's."""
        edges: list[tuple[float, int]] = []
        for r in self.collector.requests:
            if r.sent_at is None:
                continue
            edges.append((r.send_time, 1))
            end = r.ended_at
            edges.append((end if end is not None else math.inf, -1))
        edges.sort()  # at a tie an end (-1) sorts first: back-to-back requests do not overlap
        peak = now = 0
        for _, step in edges:
            now += step
            peak = max(peak, now)
        return peak

    @property
    def first_error(self) -> str | None:
        """The first failed request's error as one line (``"ConnectError: cannot connect…"``),
        or None when none failed."""
        for m in self.collector.request_metrics():
            if m.status == "failed":
                message = " ".join((m.error_message or "").split())
                return f"{m.error_kind}: {message}" if message else str(m.error_kind)
        return None

    def requests_df(self) -> pd.DataFrame:
        """One row per request (see :meth:`MetricsCollector.requests_df`), with ``good`` when
        the spec has an SLO."""
        return self.collector.requests_df(self.spec.slo)

    def summary_df(self) -> pd.DataFrame:
        """One row per metric with count, mean and percentiles (seconds)."""
        return self.collector.summary_df(self.spec.slo)

    def chunks_df(self) -> pd.DataFrame:
        """One row per content chunk."""
        return self.collector.chunks_df()

    def to_dict(self) -> dict[str, Any]:
        """The run's figures as plain data (for ``--json`` and notebooks)."""
        s = self.summary
        return {
            "target": self.target,
            "transport": self.transport,
            "mode": self.spec.mode,
            "ramp_up_s": self.spec.ramp_seconds,
            "max_in_flight": self.max_in_flight,
            "requests": s.requests,
            "completed": s.completed,
            "failed": s.failed,
            "duration_s": s.duration,
            "request_throughput": s.request_throughput,
            "output_throughput": s.output_throughput,
            "output_tokens": s.output_tokens,
            "goodput": s.goodput,
            "errors": dict(s.errors),
            "retries": s.retries,
            "send_rate": self.send_rate,
            "scheduled_rate": self.scheduled_rate,
            "client_cpu": self.client_cpu,
            "client_cpu_seconds": self.client_cpu_seconds,
            "processes": self.processes,
            "loop_lag": dict(self.loop_lag),
            "latency_s": {
                name: d.to_dict()
                for name, d in s.distributions().items()
                if name in ("ttft", "tpot", "itl", "e2e")
            },
            "warnings": list(self.warnings),
        }

    def to_vllm_dict(
        self,
        *,
        percentiles: Sequence[float] = DEFAULT_METRIC_PERCENTILES,
        metrics: Sequence[str] = DEFAULT_PERCENTILE_METRICS,
        detailed: bool = False,
        backend: str = "openai-chat",
        label: str | None = None,
        model_id: str | None = None,
        tokenizer_id: str | None = None,
        date: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The run under ``vllm bench serve --save-result``'s key names, for vLLM dashboards.

        ``date``, ``backend``, ``model_id``, ``num_prompts``, ``request_rate`` (``"inf"`` for
        a closed loop, which is vLLM's infinite rate under a concurrency cap), ``burstiness``,
        ``max_concurrency``, ``duration``, ``completed``, ``failed``, token totals,
        ``request_throughput``, ``request_goodput``, ``output_throughput``,
        ``total_token_throughput``, ``latencies``, ``queue_times``, the peaks, and
        ``mean_/median_/std_/p{NN}_{metric}_ms`` for each metric and percentile chosen. Values
        come from this run's records under streamkit's definitions; units are vLLM's (ms,
        tokens/s, requests/s; per-request arrays in seconds). Input tokens are the server's
        ``usage.prompt_tokens``.

        Args:
            percentiles: the percentiles to report (vLLM's ``--metric-percentiles``).
            metrics: some of ``ttft``, ``tpot``, ``itl``, ``e2el`` (``--percentile-metrics``).
            detailed: add the per-request arrays (``--save-detailed``): ``input_lens``,
                ``output_lens``, ``ttfts``, ``itls``, ``start_times`` (seconds from the first
                send), ``generated_texts`` (empty unless ``LoadSpec(keep_text=True)``),
                ``errors``.
            backend, label, model_id, tokenizer_id, date: the run's description, as vLLM's
                flags give it (``model_id`` defaults to the spec's or the served model).
            metadata: ``--metadata`` pairs, saved as top-level keys.
        """
        return vllm_result(
            self,
            percentiles=percentiles,
            metrics=metrics,
            detailed=detailed,
            backend=backend,
            label=label,
            model_id=model_id,
            tokenizer_id=tokenizer_id,
            date=date,
            metadata=metadata,
        )

    def _repr_html_(self) -> str:
        """A compact table of the headline figures (Jupyter's rich display), escaped."""
        from .. import _html

        s = self.summary

        def rate(value: float | None, unit: str) -> str | None:
            return None if value is None else f"{value:,.2f} {unit}"

        def spread(d: Distribution) -> str:
            return f"p50 {_html.ms(d.p50)} · p99 {_html.ms(d.p99)}"

        rows: list[tuple[str, object]] = [
            ("target", self.target or None),
            ("arrivals", self.spec.mode),
            ("requests", f"{s.completed} completed, {s.failed} failed of {s.requests}"),
            ("duration", f"{s.duration:.2f} s"),
            ("output throughput", rate(s.output_throughput, "tok/s")),
            ("request throughput", rate(s.request_throughput, "req/s")),
            ("TTFT", spread(s.ttft)),
            ("TPOT", spread(s.tpot)),
            ("ITL", spread(s.itl)),
            ("E2E", spread(s.e2e)),
        ]
        if s.goodput is not None:
            rows.append(("goodput", rate(s.goodput, "req/s")))
        if s.failed:
            errors = ", ".join(f"{k} ×{v}" for k, v in sorted(s.errors.items()))
            first = _html.one_line(self.first_error or "", 200)
            rows.append(("errors", f"{errors}; first: {first}"))
        rows.append(("client CPU", f"{self.client_cpu:.0%} of a core"))
        rows += [("warning", w) for w in self.warnings]
        note = self.transport or None
        return _html.wrap(_html.key_value_table("LoadResult", rows, note=note))

    def table(
        self,
        percentiles: Sequence[float] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> str:
        """A plain-text report like ``vllm bench serve``'s: counts, throughputs, latencies.

        Args:
            percentiles: the latency percentiles to show (vLLM's ``--metric-percentiles``);
                with ``metrics``, the latency rows follow vLLM's report: mean, median and
                these, for the metrics chosen. Default: mean, p50, p90, p99 and max of all.
            metrics: some of ``ttft``, ``tpot``, ``itl``, ``e2el`` (``--percentile-metrics``).
        """
        s = self.summary

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:,.1f}"

        def num(v: float | None, unit: str) -> str:
            return "-" if v is None else f"{v:,.2f} {unit}"

        rows = [
            ("target", self.target),
            ("transport", self.transport or "-"),
            ("arrivals", self.spec.mode),
            ("in flight", f"at most {self.max_in_flight} at once"),
            ("requests", f"{s.completed} completed, {s.failed} failed, {s.stopped} stopped"),
            ("duration", f"{s.duration:.2f} s"),
            ("request throughput", num(s.request_throughput, "req/s")),
            ("output throughput", num(s.output_throughput, "tok/s")),
            ("output tokens", f"{s.output_tokens:,}"),
        ]
        prompt_tokens = [
            m.prompt_tokens
            for m in self.collector.request_metrics()
            if m.ok and m.prompt_tokens is not None
        ]
        if prompt_tokens:
            rows.append(("input tokens", f"{sum(prompt_tokens):,} (server's usage)"))
        if self.spec.request_rate is not None and not math.isinf(self.spec.request_rate):
            rows.append(
                (
                    "send rate",
                    f"{num(self.send_rate, 'req/s')} (asked {self.spec.request_rate:g}, "
                    f"drawn {num(self.scheduled_rate, 'req/s')})",
                )
            )
        if s.goodput is not None:
            rows.append(("goodput", f"{s.goodput:,.2f} req/s ({s.good_requests} good)"))
        rows.append(
            (
                "client CPU",
                (
                    f"{self.client_cpu:.0%} of a core"
                    if self.processes == 1
                    else f"{self.client_cpu / self.processes:.0%} of a core in each of "
                    f"{self.processes} processes"
                )
                + "; loop lag p99 "
                f"{ms(self.loop_lag.get('p99'))} ms, max {ms(self.loop_lag.get('max'))} ms",
            )
        )
        width = max(len(k) for k, _ in rows)
        lines = ["streamkit bench".center(width + 40, "=")]
        lines += [f"{k:<{width}}  {v}" for k, v in rows]
        lines.append(" latency (ms) ".center(width + 40, "-"))
        if percentiles is None and metrics is None:
            lines.append(f"{'':<8}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}")
            for name, d in (("TTFT", s.ttft), ("TPOT", s.tpot), ("ITL", s.itl), ("E2E", s.e2e)):
                lines.append(
                    f"{name:<8}"
                    + "".join(f"{ms(v):>10}" for v in (d.mean, d.p50, d.p90, d.p99, d.max))
                )
        else:
            lines += self._selected_latencies(percentiles, metrics)
        errors = ", ".join(f"{k} ×{v}" for k, v in sorted(s.errors.items())) or "none"
        causes = ", ".join(f"{k} ×{v}" for k, v in sorted(s.retry_causes.items()))
        lines.append(f"errors: {errors}; retries: {s.retries}" + (f" ({causes})" if causes else ""))
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("=" * (width + 40))
        return "\n".join(lines)

    def _selected_latencies(
        self, percentiles: Sequence[float] | None, metrics: Sequence[str] | None
    ) -> list[str]:
        """vLLM's latency rows: mean, median and the chosen percentiles (ms; "-" when there
        are no values, where vLLM would print 0)."""
        from .._vllm import (
            PERCENTILE_METRICS,
            metric_samples,
            percentile_key,
            stats_ms,
        )

        chosen = tuple(metrics) if metrics is not None else DEFAULT_PERCENTILE_METRICS
        points = tuple(percentiles) if percentiles is not None else DEFAULT_METRIC_PERCENTILES
        for name in chosen:
            if name not in PERCENTILE_METRICS:
                raise UsageError(f"metric {name!r} is invalid: use some of {PERCENTILE_METRICS}")
        samples = metric_samples(m for m in self.collector.request_metrics() if m.ok)
        heads = ["mean", "median", *(percentile_key(p) for p in points)]
        lines = [f"{'':<8}" + "".join(f"{h:>10}" for h in heads)]
        for name in chosen:
            values = samples[name]
            mean, median, _, at = stats_ms(values, points)
            cells = [mean, median, *(v for _, v in at)]
            lines.append(
                f"{name.upper():<8}"
                + "".join(f"{'-' if not values else f'{v:,.1f}':>10}" for v in cells)
            )
        return lines

    def save(self, path: str | Path) -> Path:
        """Write the per-request table: ``.csv``, ``.jsonl`` or ``.parquet`` by the extension.

        Raises:
            UsageError: another extension, or Parquet without pyarrow.
        """
        path = Path(path)
        if path.suffix == ".csv":
            return self.collector.to_csv(path)
        if path.suffix == ".parquet":
            return self.collector.to_parquet(path)
        if path.suffix == ".jsonl":
            self.requests_df().to_json(path, orient="records", lines=True)
            return path
        raise UsageError(f"{path}: write results as .csv, .jsonl or .parquet")


def warnings_of(result: LoadResult) -> list[str]:
    """What makes the run's figures doubtful: a saturated or lagging client, failed requests."""
    out = []
    s = result.summary
    lag = result.loop_lag.get("p99", 0.0)
    if s.requests and s.completed == 0:
        # Nothing was measured, so nothing was mismeasured: a run of instant failures (a
        # refused connection) keeps the loop busy opening sockets and is no client saturation.
        pass
    elif result.client_cpu / result.processes >= SATURATED:
        leaner = ""
        if result.transport not in ("fast-sse", "ws"):
            leaner = "a leaner transport ('fast-sse' or 'ws'), "
        out.append(
            f"the client used {result.client_cpu / result.processes:.0%} of a core (loop lag p99 "
            f"{lag * 1000:.0f} ms): latencies measure the client as "
            f"much as the server. Use {leaner}fewer concurrent streams per process, or spread "
            "them over processes on free cores (streamkit bench --workers N, "
            "streamkit.distributed.run_load_distributed)"
        )
    elif lag >= LAGGING and result.wall_seconds >= 1.0:
        out.append(
            f"the client's event loop ran up to {lag * 1000:.0f} ms late (p99) at "
            f"{result.client_cpu / result.processes:.0%} of a core: bursts of client work "
            "(many requests opened at once) delayed events, so short latencies (ITL, TTFT) "
            "include the client's wait. Start the streams over a longer ramp (--ramp-up S, "
            "LoadSpec(ramp_up=S)), use a request_rate, or spread the streams over processes "
            "(--workers N)"
        )
    if s.failed:
        kinds = ", ".join(f"{k} ×{v}" for k, v in sorted(s.errors.items()))
        out.append(f"{s.failed} of {s.requests} requests failed ({kinds}); see requests_df()")
    return out
