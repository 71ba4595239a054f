"""Load experiments: many concurrent streams to an endpoint, measured like vLLM's ``bench serve``.

:func:`run_load` sends ``num_requests`` chat completions to a target (a :class:`~streamkit.Client`,
a :class:`~streamkit.balance.LoadBalancer`, or ``None`` for the bundled simulator) and records every
event in a :class:`~streamkit.metrics.MetricsCollector`, so the result has the metrics issue's
definitions, tables and live dashboard. Arrivals follow vLLM's two modes:

- **closed loop** (``request_rate=None``): ``concurrency`` users, each sending its next request as
  soon as its previous one ends;
- **open loop** (``request_rate=R``): requests arrive at random times, ``R`` per second on average,
  inter-arrival gaps drawn from a gamma distribution of shape ``burstiness`` (1 = a Poisson
  process), whatever the server's speed; ``concurrency`` still caps how many are in flight (a
  request that arrives at the cap waits, and its latency counts from when it is sent, as in vLLM).

The client must never be what is measured. The run reports the event loop's own CPU time (the
client's: a server in the same process runs on its own thread) and the loop's lag (how late a
20 Hz ticker wakes), and warns when the client used most of a core: latencies then measure the
client as much as the server. The cure is a leaner transport (``transport="fast-sse"`` or ``"ws"``),
fewer streams per process, or :func:`streamkit.distributed.run_load_distributed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from ._sync import run_sync
from .chat_run import ChatRun
from .errors import UsageError
from .metrics import SLO, Distribution, MetricsCollector, RunSummary, percentile
from .source import ChatSource, Prompt

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ChatSource",
    "LoadResult",
    "LoadSpec",
    "arrival_times",
    "load_prompts",
    "run_load",
    "run_load_sync",
    "synthetic_prompts",
]

Progress = bool | Literal["auto"]
SATURATED = 0.85
"""Client CPU, as a fraction of one core, above which a run warns that the client may be what it
measured (asyncio runs on one core: past this, events wait for the loop)."""
LAGGING = 0.1
"""Event-loop lag (p99, seconds) above which a run of a second or more warns: a client busy in
bursts (a thousand requests opened at once) can delay events by this much without averaging near
a full core. Shorter runs have too few lag samples for a p99 (their first requests also pay for
imports and connections)."""
_TICK = 0.05  # the loop-lag probe's period


# -- the experiment ----------------------------------------------------------------------------


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}={value!r} is invalid: must be an integer >= {minimum}")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load experiment: how many requests, how they arrive, what they ask. Plain data.

    Args:
        num_requests: requests to send (warm-up not included).
        concurrency: the most requests in flight; required for a closed loop (the number of
            users), optional for an open loop (None: no cap).
        request_rate: None for a closed loop; else the mean arrival rate in requests/s
            (``math.inf`` sends everything at once).
        burstiness: the gamma shape of inter-arrival gaps (1 = Poisson; < 1 burstier, > 1 more
            regular), as vLLM's ``--burstiness``.
        prompts: the prompts (strings or message lists), cycled; None: :func:`synthetic_prompts`.
        max_tokens: the most completion tokens per request (None: the server's choice).
        warmup: requests sent (closed loop, same concurrency) before the measured run and not
            recorded: they open connections and warm caches.
        seed: seeds the arrival times, the synthetic prompts and each request's ``seed``
            (``seed + start + i``), so a run is reproducible against a deterministic server.
        model: the model (default: the target's).
        extra_body: extra JSON fields sent with every request (e.g. the bundled simulator's
            ``{"streamkit": {"tokens_per_second": 50}}``).
        slo: objectives for goodput.
        start: the number of this spec's first request in a larger experiment (a shard's
            offset): request ``i`` asks prompt ``start + i`` with seed ``seed + start + i``, so
            shards together ask what the whole spec would, not the same prompts ``n`` times.
        output_lens: per-request completion limits, cycled like the prompts (request ``i``
            asks ``output_lens[(start + i) % len]``; pass one per prompt to pair them), in place
            of ``max_tokens``: vLLM's random dataset draws one per request.
        keep_text: keep each reply's text as the request's ``text`` tag (a column of
            ``requests_df()``; vLLM's ``generated_texts``). Off by default: it holds every
            reply in memory.

    Raises:
        UsageError: a value out of range, naming it.
    """

    num_requests: int = 100
    concurrency: int | None = 10
    request_rate: float | None = None
    burstiness: float = 1.0
    prompts: tuple[Prompt, ...] | None = None
    max_tokens: int | None = 128
    warmup: int = 0
    seed: int = 0
    model: str | None = None
    extra_body: Mapping[str, Any] | None = None
    slo: SLO | None = None
    start: int = 0
    output_lens: tuple[int, ...] | None = None
    keep_text: bool = False

    def __post_init__(self) -> None:
        _positive_int("num_requests", self.num_requests)
        if self.concurrency is not None:
            _positive_int("concurrency", self.concurrency)
        elif self.request_rate is None:
            raise UsageError(
                "concurrency=None needs a request_rate: a closed loop is `concurrency` users "
                "(pass e.g. concurrency=10), an open loop is a request_rate"
            )
        rate = self.request_rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
        ):
            raise UsageError(
                f"request_rate={rate!r} is invalid: must be requests/s > 0 (math.inf: all at "
                "once), or None for a closed loop"
            )
        b = self.burstiness
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 < b < math.inf:
            raise UsageError(f"burstiness={b!r} is invalid: must be a number > 0 (1 = Poisson)")
        if self.max_tokens is not None:
            _positive_int("max_tokens", self.max_tokens)
        _positive_int("warmup", self.warmup, 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UsageError(f"seed={self.seed!r} is invalid: must be an integer")
        if self.prompts is not None:
            if isinstance(self.prompts, str) or not len(self.prompts):
                raise UsageError("prompts must be a non-empty sequence of prompts (not one string)")
            object.__setattr__(self, "prompts", tuple(self.prompts))
            for number, item in enumerate(self.prompts):
                _prompt_of(item, f"prompts[{number}]")
        _positive_int("start", self.start, 0)
        if self.output_lens is not None:
            if isinstance(self.output_lens, str | int) or not len(self.output_lens):
                raise UsageError("output_lens must be a non-empty sequence of token counts")
            object.__setattr__(self, "output_lens", tuple(self.output_lens))
            for number, n in enumerate(self.output_lens):
                _positive_int(f"output_lens[{number}]", n)
        if not isinstance(self.keep_text, bool):
            raise UsageError(f"keep_text={self.keep_text!r} is invalid: must be True or False")
        if self.slo is not None and not isinstance(self.slo, SLO):
            raise UsageError(f"slo={self.slo!r} is invalid: pass streamkit.SLO(ttft=…, tpot=…)")

    @property
    def mode(self) -> str:
        """``closed loop, concurrency C``, ``open loop, R req/s (Poisson)…`` or ``open loop,
        all N at once…`` (an infinite rate), for reports."""
        if self.request_rate is None:
            return f"closed loop, concurrency {self.concurrency}"
        cap = f", at most {self.concurrency} in flight" if self.concurrency else ""
        if math.isinf(self.request_rate):
            return f"open loop, all {self.num_requests} at once{cap}"
        shape = "Poisson" if self.burstiness == 1 else f"gamma shape {self.burstiness:g}"
        return f"open loop, {self.request_rate:g} req/s ({shape}){cap}"

    def prompt(self, i: int) -> Prompt:
        """The ``i``-th request's prompt (``start + i`` of the experiment's, cycled)."""
        prompts = self.prompts or synthetic_prompts(256, self.seed)
        return prompts[(self.start + i) % len(prompts)]

    @property
    def arrival_seed(self) -> int | str:
        """The seed of this spec's arrival times: ``seed``, or ``"seed:start"`` for a shard."""
        return self.seed if self.start == 0 else f"{self.seed}:{self.start}"

    def shard(self, n: int) -> list[LoadSpec]:
        """``n`` specs that together make this one (for ``n`` processes or machines).

        Requests and concurrency are split as evenly as possible, the rate divided by ``n`` (the
        superposition of ``n`` Poisson processes at ``R/n`` is one at ``R``). Each shard starts
        where the one before it ends (``start``): together they ask every prompt and seed the
        whole spec would, and draw different arrival times.
        """
        _positive_int("n", n)
        if n > self.num_requests:
            raise UsageError(f"cannot split {self.num_requests} requests into {n} shards")
        out = []
        start = self.start
        for i in range(n):
            requests = self.num_requests // n + (i < self.num_requests % n)
            concurrency = None
            if self.concurrency is not None:
                concurrency = max(1, self.concurrency // n + (i < self.concurrency % n))
            rate = None if self.request_rate is None else self.request_rate / n
            out.append(
                replace(
                    self,
                    num_requests=requests,
                    concurrency=concurrency,
                    request_rate=rate,
                    warmup=self.warmup // n + (i < self.warmup % n),
                    start=start,
                )
            )
            start += requests
        return out


_TOPICS = (
    "server-sent events",
    "WebSockets",
    "exponential backoff",
    "token streaming",
    "time to first token",
    "connection pooling",
    "Poisson arrivals",
    "load balancing",
    "tail latency",
    "rate limiting",
    "prompt caching",
    "batching",
)
_ASKS = (
    "Explain {t} in two sentences.",
    "Why does {t} matter for a chat application?",
    "Give three practical tips about {t}.",
    "Summarise {t} for a data scientist.",
    "Compare {t} with the alternatives, briefly.",
    "What goes wrong with {t} under load, and how is it measured?",
)


def synthetic_prompts(n: int, seed: int = 0) -> tuple[str, ...]:
    """``n`` varied, deterministic prompts (different lengths and topics) for load tests."""
    rng = random.Random(seed)
    return tuple(rng.choice(_ASKS).format(t=rng.choice(_TOPICS)) for _ in range(n))


def load_prompts(path: str | Path) -> tuple[Prompt, ...]:
    """Prompts from a file: ``.txt`` one per line, ``.jsonl`` one object per line with
    ``"prompt"`` (a string) or ``"messages"`` (OpenAI chat messages), ``.json`` a list of either.

    Raises:
        UsageError: the file is missing, empty or malformed (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read prompts from {path}: {exc.strerror or exc}") from exc
    prompts: list[Prompt] = []
    if path.suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif path.suffix in (".jsonl", ".json"):
        if path.suffix == ".json":
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path} is not valid JSON: {exc}") from exc
            if not isinstance(items, list):
                raise UsageError(f"{path} must hold a JSON list of prompts")
            numbered = list(enumerate(items, 1))
        else:
            numbered = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        numbered.append((number, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise UsageError(f"{path}:{number} is not valid JSON: {exc}") from exc
        for number, item in numbered:
            prompts.append(_prompt_of(item, f"{path}:{number}"))
    else:
        raise UsageError(f"{path}: prompts files are .txt, .jsonl or .json")
    if not prompts:
        raise UsageError(f"{path} holds no prompts")
    return tuple(prompts)


def _is_messages(item: object) -> TypeGuard[list[dict[str, Any]]]:
    return (
        isinstance(item, list)
        and bool(item)
        and all(isinstance(m, dict) and "role" in m for m in item)
    )


def _prompt_of(item: object, where: str) -> Prompt:
    if isinstance(item, str) and item.strip():
        return item
    if _is_messages(item):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("prompt"), str) and item["prompt"].strip():
            return str(item["prompt"])
        messages = item.get("messages")
        if _is_messages(messages):
            return messages
    raise UsageError(
        f"{where}: expected a string, {{'prompt': '...'}} or {{'messages': [...]}}, "
        f"got {item!r:.80}"
    )


def arrival_times(
    n: int, rate: float, *, burstiness: float = 1.0, seed: int | str = 0
) -> list[float]:
    """Seconds from the start at which each of ``n`` open-loop requests arrives.

    Gaps are gamma-distributed with shape ``burstiness`` and mean ``1/rate`` (vLLM's
    ``--request-rate`` and ``--burstiness``); the first request arrives at 0. An infinite rate
    sends all at once.
    """
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    scale = 1.0 / (rate * burstiness)
    out = [0.0]
    t = 0.0
    for _ in range(n - 1):
        t += rng.gammavariate(burstiness, scale)
        out.append(t)
    return out


# -- the result --------------------------------------------------------------------------------


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
        percentiles: Sequence[float] = (99.0,),
        metrics: Sequence[str] = ("ttft", "tpot", "itl"),
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
        from ._vllm import vllm_result

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
        from . import _html

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
        from ._vllm import (
            DEFAULT_METRIC_PERCENTILES,
            DEFAULT_PERCENTILE_METRICS,
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


# -- running -----------------------------------------------------------------------------------


class _LagProbe:
    """How late a periodic ticker wakes: the event loop's own lag."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            due = clock() + _TICK
            await asyncio.sleep(_TICK)
            self.lags.append(max(0.0, clock() - due))

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lags = self.lags
        if not lags:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "p50": percentile(lags, 50) or 0.0,
            "p99": percentile(lags, 99) or 0.0,
            "max": max(lags),
        }


def _progress_bar(progress: Progress, total: int) -> Any:
    if progress is False:
        return None
    from .render import view_kind

    options: dict[str, Any] = {"total": total, "unit": "req", "desc": "streamkit bench"}
    if view_kind() == "widget":
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(**options)
    from tqdm import tqdm

    # "auto" on a terminal draws the bar; in a pipe or a CI log (stderr not a terminal) it stays
    # quiet, as tqdm does with disable=None.
    return tqdm(**options, disable=None if progress == "auto" else False, dynamic_ncols=True)


def _request_fields(spec: LoadSpec, i: int) -> dict[str, Any]:
    request: dict[str, Any] = {"seed": spec.seed + spec.start + i}
    if spec.output_lens is not None:
        request["max_tokens"] = spec.output_lens[(spec.start + i) % len(spec.output_lens)]
    elif spec.max_tokens is not None:
        request["max_tokens"] = spec.max_tokens
    if spec.model is not None:
        request["model"] = spec.model
    if spec.extra_body:
        request["extra_body"] = dict(spec.extra_body)
    return request


async def _one(
    target: ChatSource, spec: LoadSpec, i: int, collector: MetricsCollector | None, **tags: Any
) -> None:
    request = _request_fields(spec, i)
    recorder = None
    if collector is not None:
        recorder = collector.track(f"request {i}", **tags)
        request["observers"] = [recorder]
    result = await ChatRun(target, spec.prompt(i), None, None, request).run(raise_on_error=False)
    if recorder is not None and spec.keep_text:
        recorder.tags["text"] = result.text


async def _closed_loop(
    target: ChatSource,
    spec: LoadSpec,
    n: int,
    collector: MetricsCollector | None,
    bar: Any,
    offset: int = 0,
) -> None:
    next_index = 0

    async def user() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await _one(target, spec, offset + i, collector)
            if bar is not None:
                bar.update(1)

    users = min(spec.concurrency or n, n)
    await asyncio.gather(*(user() for _ in range(users)))


async def _open_loop(
    target: ChatSource,
    spec: LoadSpec,
    collector: MetricsCollector,
    bar: Any,
    times: Sequence[float],
    offset: int,
) -> None:
    gate = asyncio.Semaphore(spec.concurrency) if spec.concurrency else None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def request(i: int, scheduled: float) -> None:
        # How late the request arrived against its drawn time: the dispatcher's own accuracy
        # (a request that then waits for the concurrency cap is not late, only queued).
        arrived = loop.time()
        tags = {"scheduled_at": scheduled, "arrival_lag": arrived - start - scheduled}
        if gate is not None:
            async with gate:
                # Seconds spent waiting for the concurrency cap: not in the request's latency
                # (that counts from its send, as in vLLM), so it is kept beside it.
                tags["queue_wait"] = loop.time() - arrived
                await _one(target, spec, offset + i, collector, **tags)
        else:
            await _one(target, spec, offset + i, collector, **tags)
        if bar is not None:
            bar.update(1)

    start = loop.time()
    try:
        for i, at in enumerate(times):
            delay = start + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(request(i, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def run_load(
    target: ChatSource | None,
    spec: LoadSpec,
    *,
    collector: MetricsCollector | None = None,
    progress: Progress = "auto",
    dashboard: Any = None,
) -> LoadResult:
    """Run a load experiment and return what it measured.

    Args:
        target: a :class:`~streamkit.Client` (its transport and retry policy apply), a
            :class:`~streamkit.balance.LoadBalancer`, or None for the bundled simulator.
        spec: the experiment.
        collector: where to record (default: a new one); pass one already shown in a
            :class:`~streamkit.Dashboard` to watch the run live.
        progress: a ``tqdm.auto`` bar (widget in a notebook, text on a terminal); ``"auto"``
            hides it where stderr is not a terminal, False never shows it.
        dashboard: True to show a live :class:`~streamkit.Dashboard` of the run (in a notebook),
            or a Dashboard already following ``collector``.

    Returns:
        The result: metrics, tables, client CPU and loop lag, warnings. Failed requests are
        recorded with their typed errors, never raised.
    """
    if not isinstance(spec, LoadSpec):
        raise UsageError(f"spec={spec!r} is invalid: pass a streamkit.load.LoadSpec(...)")
    if target is None:
        from .client import default_client

        target = default_client()
    collector = collector if collector is not None else MetricsCollector()
    if dashboard is True:
        from .render.dashboard import Dashboard

        dashboard = Dashboard(collector).show()
    elif dashboard is not None and getattr(dashboard, "collector", None) is not collector:
        raise UsageError("dashboard= must follow the run's collector: Dashboard(collector)")

    if spec.warmup:
        await _closed_loop(target, spec, spec.warmup, None, None, offset=spec.num_requests)

    times = None
    scheduled_rate = None
    if spec.request_rate is not None:
        times = arrival_times(
            spec.num_requests,
            spec.request_rate,
            burstiness=spec.burstiness,
            seed=spec.arrival_seed,
        )
        if len(times) > 1 and times[-1] > 0:
            scheduled_rate = (len(times) - 1) / times[-1]

    bar = _progress_bar(progress, spec.num_requests)
    probe = _LagProbe()
    probe.start()
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    try:
        if times is None:
            await _closed_loop(target, spec, spec.num_requests, collector, bar)
        else:
            await _open_loop(target, spec, collector, bar, times, 0)
    finally:
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        lag = await probe.stop()
        if bar is not None:
            bar.close()
    result = LoadResult(
        spec=spec,
        collector=collector,
        target=getattr(target, "base_url", "") or repr(target),
        transport=getattr(target, "transport", None),
        wall_seconds=wall,
        client_cpu_seconds=cpu,
        loop_lag=lag,
        scheduled_rate=scheduled_rate,
    )
    result.warnings.extend(_warnings(result))
    return result


def _warnings(result: LoadResult) -> list[str]:
    out = []
    s = result.summary
    lag = result.loop_lag.get("p99", 0.0)
    if s.requests and s.completed == 0:
        # Nothing was measured, so nothing was mismeasured: a run of instant failures (a
        # refused connection) keeps the loop busy opening sockets and is no client saturation.
        pass
    elif result.client_cpu / result.processes >= SATURATED:
        out.append(
            f"the client used {result.client_cpu / result.processes:.0%} of a core (loop lag p99 "
            f"{lag * 1000:.0f} ms): latencies measure the client as "
            "much as the server. Use a leaner transport ('fast-sse' or 'ws'), fewer concurrent "
            "streams per process, or fan out with streamkit.distributed.run_load_distributed"
        )
    elif lag >= LAGGING and result.wall_seconds >= 1.0:
        out.append(
            f"the client's event loop ran up to {lag * 1000:.0f} ms late (p99) at "
            f"{result.client_cpu / result.processes:.0%} of a core: bursts of client work "
            "(many requests opened at once) delayed events, so short latencies (ITL, TTFT) "
            "include the client's wait. Use warmup=, a request_rate, or fewer streams per process"
        )
    if s.failed:
        kinds = ", ".join(f"{k} ×{v}" for k, v in sorted(s.errors.items()))
        out.append(f"{s.failed} of {s.requests} requests failed ({kinds}); see requests_df()")
    return out


def run_load_sync(target: ChatSource | None, spec: LoadSpec, **kwargs: Any) -> LoadResult:
    """Blocking :func:`run_load`, for scripts (runs on a fresh loop in a fresh thread).

    The target's connections on that loop are closed before it ends (a loop's connections
    cannot outlive it).
    """

    async def main() -> LoadResult:
        try:
            return await run_load(target, spec, **kwargs)
        finally:
            close = getattr(target, "aclose", None)
            if close is not None:
                await close()

    return run_sync(main)
