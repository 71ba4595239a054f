"""Stream metrics: a collector that keeps every chunk's arrival, and the metric definitions.

A :class:`MetricsCollector` watches any number of chats at once (``observers=[collector]``, or
``observers=[collector.track("label")]`` to name a request). Every event reaches it: nothing is
throttled away. Per request it keeps a compact raw log (each content chunk's arrival time, index
and text length in ``array`` columns, ~16 bytes a chunk), the attempts and retries with their
causes, the end (finish reason, usage) or the error, and render lags that a view reports. All
metrics are computed from that log on demand, so one run can be read under several conventions.
This module does no I/O except the explicit exports (``to_csv``, ``to_parquet``) and takes an
injectable clock.

Definitions (vLLM ``bench serve``, ``vllm/benchmarks/serve.py`` ``calculate_metrics``), all in
seconds from the request's send time (the first attempt's ``StreamStart.sent_at``):

- **TTFB** time to first byte: the response headers of the first accepted attempt.
- **TTFT** time to first token: the first chunk *with content*. Role-only chunks, empty deltas and
  the usage chunk never count (they are not :class:`~streamkit.events.TokenDelta`).
- **E2E** end-to-end latency: the last content chunk.
- **N_out** output tokens: ``usage.completion_tokens`` when the server sent usage, else the content
  chunks counted (``output_tokens_source`` says which). vLLM re-tokenizes the text when usage is
  missing; without a tokenizer, a chunk count is the honest fallback (one chunk is one token on
  most servers). Usage stands after a retry: a resumed stream's usage covers the whole logical
  stream (the bundled server's protocol), a restarted one's the kept reply. One rule for this and
  :class:`~streamkit.StreamResult`: :func:`streamkit.result.output_tokens_from`.
- **TPOT** time per output token after the first: ``(E2E − TTFT) / (N_out − 1)``, defined only for
  ``N_out > 1``; undefined requests are *excluded* from TPOT statistics, never counted as 0.
- **ITL** inter-token latency: every gap between consecutive content chunks, pooled across
  requests before percentiles (so long replies weigh more). A chunk carrying several tokens is
  one gap. A gap spanning a retry includes the backoff: it is what a reader waited. After a
  retry that starts over (``StreamRetry.discarded``), metrics follow the kept reply only.
- **tokens/s** of one request: ``(N_out − 1) / (last − first content chunk)``, the decode speed
  (as :attr:`StreamResult.tokens_per_second <streamkit.result.StreamResult.tokens_per_second>`).
- **Run aggregates** over completed requests (vLLM counts only successful ones; failed and
  stopped requests are counted apart, with their error classes): percentiles p50/p90/p95/p99 by
  linear interpolation (numpy's default ``'linear'``, Hyndman & Fan type 7), arithmetic means;
  output throughput ``ΣN_out / duration``; request throughput ``completed / duration``; goodput
  ``requests meeting every given SLO / duration``, where, as in vLLM, a request whose TPOT is
  undefined meets a TPOT SLO. The duration is the run's wall time: first send to last end.

genai-perf and GuideLLM define some of these differently; :func:`genai_perf_metrics`,
:func:`guidellm_metrics` and :func:`compare_conventions` derive their numbers from the same raw
log (see ``docs/metrics.md`` for the sources).

The result objects (:class:`RunSummary`, :class:`ConventionMetrics`, :class:`RequestMetrics`)
have a one-line text repr and, as a notebook cell's value, a compact HTML table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import APIStatusError, StreamCancelled, StreamkitError, UsageError
from .events import Event, StreamEnd, StreamError, StreamRetry, StreamStart, TokenDelta, Usage
from .result import OutputTokensSource, output_tokens_from

if TYPE_CHECKING:
    import pandas as pd

    from .result import StreamResult

__all__ = [
    "PERCENTILES",
    "SLO",
    "ConventionMetrics",
    "Distribution",
    "MetricsCollector",
    "RequestMetrics",
    "RequestRecorder",
    "RetryRecord",
    "RunSummary",
    "compare_conventions",
    "distribution",
    "genai_perf_metrics",
    "guidellm_metrics",
    "percentile",
    "read_csv",
    "request_metrics",
    "summarize",
    "vllm_metrics",
    "weighted_percentile",
]

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)
"""The percentiles every summary reports."""

RequestStatus = Literal["pending", "streaming", "completed", "stopped", "failed"]
Table = Literal["requests", "chunks", "summary"]

# -- percentiles -------------------------------------------------------------------------------


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


_EMPTY = Distribution(0, None, None, None, None, None, None)


def distribution(values: Iterable[float]) -> Distribution:
    """Count, mean and linear-interpolation percentiles of ``values`` (vLLM's statistics)."""
    xs = sorted(values)
    if not xs:
        return _EMPTY
    p50, p90, p95, p99 = (_sorted_percentile(xs, q) for q in PERCENTILES)
    return Distribution(len(xs), math.fsum(xs) / len(xs), p50, p90, p95, p99, xs[-1])


def _weighted_distribution(pairs: Sequence[tuple[float, float]]) -> Distribution:
    kept = [(v, w) for v, w in pairs if w > 0]
    if not kept:
        return _EMPTY
    total = math.fsum(w for _, w in kept)
    mean = math.fsum(v * w for v, w in kept) / total
    p50, p90, p95, p99 = (weighted_percentile(kept, q) for q in PERCENTILES)
    return Distribution(len(kept), mean, p50, p90, p95, p99, max(v for v, _ in kept))


# -- SLOs --------------------------------------------------------------------------------------


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


# -- the raw per-request log -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """One failed attempt that was retried (from a :class:`~streamkit.events.StreamRetry`).

    Attributes:
        time: when the failure was noticed.
        attempt: the 1-based number of the attempt that failed.
        cause: the error class name (``RateLimitError``, ``StreamInterrupted``…).
        message: the error message.
        delay: seconds until the next attempt.
        resume_after: the index of the last chunk kept, or None when the next attempt starts over.
        chunks_before: content chunks received before the failure (all attempts so far).
        discarded: tokens thrown away because the next attempt starts over (0 when it resumes).
    """

    time: float
    attempt: int
    cause: str
    message: str
    delay: float
    resume_after: int | None
    chunks_before: int
    discarded: int = 0


class RequestRecorder:
    """The raw log of one request: an :class:`~streamkit.client.Observer` for one chat.

    Get one from :meth:`MetricsCollector.track` and pass it in ``observers=[...]``. The per-chunk
    path appends to three ``array`` columns (arrival time, index, text length) and returns: no
    objects are kept per chunk.

    Attributes:
        id: the request's number in its collector (0, 1, 2…, in order of tracking).
        label: a name for the request (default ``"request <id>"``).
        tags: any extra fields given to :meth:`MetricsCollector.track` (exported as columns).
        times: each content chunk's arrival (``perf_counter`` seconds).
        indices: each content chunk's index, as the transport numbered it.
        chars: each content chunk's text length in characters.
        created: when the recorder was made (collector clock); the send-time fallback.
        sent_at: the first attempt's send time, None until a stream started.
        first_byte_at: when the first accepted attempt's headers arrived.
        ended_at: when the stream ended (``StreamEnd.time``) or failed (``StreamError.time``).
        status: ``pending``, ``streaming``, ``completed``, ``stopped`` or ``failed``.
        finish_reason, usage: from the :class:`~streamkit.events.StreamEnd`.
        error: the typed error of a failed or stopped request.
        retries: the retried attempts, in order.
        sdk_retries: attempts the HTTP client retried before one was accepted (no cause known).
        attempt_starts: for each accepted attempt, the number of chunks received before it.
        kept_from: the first chunk of the text that was kept: chunks before it were discarded by
            a retry that started over (``StreamRetry.discarded``); metrics count kept chunks.
        render_lags: seconds from a chunk's arrival to its rendering, as views report them.
        finished: True once :meth:`finish` was called.
        endpoint: the endpoint named by the latest StreamStart (a
            :class:`~streamkit.balance.LoadBalancer` names the one it chose), or None.
    """

    __slots__ = (
        "_collector",
        "attempt_starts",
        "chars",
        "created",
        "ended_at",
        "endpoint",
        "error",
        "finish_reason",
        "finished",
        "first_byte_at",
        "id",
        "indices",
        "kept_from",
        "label",
        "model",
        "render_lags",
        "request_id",
        "retries",
        "sdk_retries",
        "sent_at",
        "status",
        "tags",
        "times",
        "usage",
    )

    def __init__(
        self,
        id: int,
        label: str | None = None,
        *,
        created: float = 0.0,
        tags: Mapping[str, object] | None = None,
        collector: MetricsCollector | None = None,
    ) -> None:
        self.id = id
        self.label = label if label is not None else f"request {id}"
        self.tags: dict[str, object] = dict(tags) if tags else {}
        self._collector = collector
        self.created = created
        self.times = array("d")
        self.indices = array("I")
        self.chars = array("I")
        self.sent_at: float | None = None
        self.first_byte_at: float | None = None
        self.model = ""
        self.request_id: str | None = None
        self.endpoint: str | None = None
        self.ended_at: float | None = None
        self.status: RequestStatus = "pending"
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.error: StreamkitError | None = None
        self.retries: list[RetryRecord] = []
        self.sdk_retries = 0
        self.attempt_starts: list[int] = []
        self.kept_from = 0
        self.render_lags: array[float] | None = None
        self.finished = False

    def __repr__(self) -> str:
        return f"<RequestRecorder {self.id} {self.label!r} {self.status}, {len(self.times)} chunks>"

    # -- the Observer protocol (per event; the token path first and short) ---------------------

    def on_event(self, event: Event) -> None:
        """Record one event; a content chunk costs three appends."""
        if type(event) is TokenDelta:
            self.times.append(event.time)
            self.indices.append(event.index)
            self.chars.append(len(event.text))
            return
        self._on_control(event)

    def _on_control(self, event: Event) -> None:
        if isinstance(event, TokenDelta):  # a subclass of TokenDelta: same as the fast path
            self.times.append(event.time)
            self.indices.append(event.index)
            self.chars.append(len(event.text))
        elif isinstance(event, StreamStart):
            if self.sent_at is None:  # a retried request keeps its first send as time zero
                self.sent_at = event.sent_at
            if self.first_byte_at is None:
                self.first_byte_at = event.time
            self.model = event.model or self.model
            self.request_id = event.request_id
            self.endpoint = event.endpoint  # the latest wins: a failover moves the request
            self.sdk_retries += event.retries
            self.attempt_starts.append(len(self.times))
            self.status = "streaming"
            if self._collector is not None:
                self._collector._poke()
        elif isinstance(event, StreamRetry):
            if self.sent_at is None:
                # The failed attempt never opened (e.g. a 429): its send time is not in the
                # events, and the recorder's creation is the closest time we have.
                self.sent_at = self.created
            error = event.error
            self.retries.append(
                RetryRecord(
                    event.time,
                    event.attempt,
                    error.kind,
                    error.message,
                    event.delay,
                    event.resume_after,
                    len(self.times),
                    event.discarded,
                )
            )
            if event.discarded:
                # The next attempt starts over: what arrived so far is not part of the reply.
                self.kept_from = len(self.times)
            self.status = "streaming"
        elif isinstance(event, StreamEnd):
            self.finish_reason = event.finish_reason
            self.usage = event.usage
            self.ended_at = event.time
            self.status = "completed"
        elif isinstance(event, StreamError):
            self.error = event.error
            self.ended_at = event.time
            self.status = "stopped" if isinstance(event.error, StreamCancelled) else "failed"

    def finish(self, result: StreamResult) -> None:
        """Close the log with the chat's result (fills in what the events did not carry)."""
        if self.finished:
            return
        if result.status in ("completed", "stopped", "failed") and self.status in (
            "pending",
            "streaming",
        ):
            self.status = result.status
        if self.error is None and result.error is not None:
            self.error = result.error
        if self.usage is None and result.usage is not None:
            self.usage = result.usage
        if self.finish_reason is None:
            self.finish_reason = result.finish_reason
        if self.ended_at is None:
            self.ended_at = result.ended_at
        self.model = self.model or result.model
        self.finished = True
        if self._collector is not None:
            self._collector._on_finish(self)

    # -- render lags --------------------------------------------------------------------------

    def record_render(self, lag_seconds: float) -> None:
        """Record that a chunk reached the screen ``lag_seconds`` after it arrived."""
        if self.render_lags is None:
            self.render_lags = array("d")
        self.render_lags.append(lag_seconds)

    def record_flush_log(self, flush_log: Sequence[tuple[float, int]]) -> int:
        """Derive every chunk's render lag from a view's flush log; returns how many were found.

        Args:
            flush_log: ``(flush_time, characters_shown_so_far)`` per flush, as
                :attr:`BufferedView.flush_log <streamkit.render.BufferedView.flush_log>` keeps
                it, on the same clock as the events (``perf_counter``). A chunk is rendered by
                the first flush that shows all of its characters.
        """
        found = 0
        flush = 0
        cumulative = 0
        for when, size in zip(self.times, self.chars, strict=True):
            cumulative += size
            while flush < len(flush_log) and flush_log[flush][1] < cumulative:
                flush += 1
            if flush == len(flush_log):
                break
            self.record_render(flush_log[flush][0] - when)
            found += 1
        return found

    # -- raw accessors ------------------------------------------------------------------------

    @property
    def send_time(self) -> float:
        """The send time metrics count from: the first attempt's, else the recorder's creation."""
        return self.sent_at if self.sent_at is not None else self.created

    @property
    def chunks(self) -> int:
        """Content chunks received (also those a restart discarded)."""
        return len(self.times)

    def kept_times(self) -> array[float]:
        """Arrival times of the chunks of the kept reply (all of them unless a restart)."""
        return self.times[self.kept_from :] if self.kept_from else self.times

    def output_tokens(self) -> tuple[int, OutputTokensSource]:
        """N_out and where it came from: the usage chunk (after a resume too), or the kept
        content chunks counted; the rule :class:`~streamkit.StreamResult` follows
        (:func:`~streamkit.result.output_tokens_from`)."""
        return output_tokens_from(self.usage, len(self.times) - self.kept_from)

    def itl(self) -> list[float]:
        """Every gap in seconds between consecutive content chunks of the kept reply."""
        t = self.kept_times()
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    def attempt_of_chunks(self) -> list[int]:
        """The 1-based attempt each chunk arrived in."""
        out: list[int] = []
        starts = self.attempt_starts or [0]
        for attempt, start in enumerate(starts, 1):
            end = starts[attempt] if attempt < len(starts) else len(self.times)
            out.extend([attempt] * (end - start))
        # Chunks before the first accepted attempt cannot exist; pad defensively.
        out[:0] = [1] * (len(self.times) - len(out))
        return out

    # -- moving a log between processes ---------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The log as a compact dict of builtins, to send to another process or machine.

        Every slot travels (fields added later too): ``array`` columns as raw bytes (their type
        codes under ``"_arrays"``), the error as its class name and fields, retries as tuples,
        usage as a dict. A request of ``n`` chunks pickles to about ``16·n`` bytes plus a few
        hundred; :meth:`from_record` rebuilds it.
        """
        record: dict[str, Any] = {"_byteorder": sys.byteorder}
        arrays: dict[str, str] = {}
        for name in _RECORD_SLOTS:
            value = getattr(self, name)
            if isinstance(value, array):
                arrays[name] = value.typecode
                value = value.tobytes()
            elif name == "error":
                value = None if value is None else _error_record(value)
            elif name == "usage":
                value = None if value is None else dataclasses.asdict(value)
            elif name == "retries":
                value = [dataclasses.astuple(r) for r in value]
            elif isinstance(value, list | dict):
                value = value.copy()
            record[name] = value
        record["_arrays"] = arrays
        return record

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        *,
        shift: float = 0.0,
        collector: MetricsCollector | None = None,
    ) -> RequestRecorder:
        """Rebuild a recorder from :meth:`to_record`, its absolute times moved by ``shift``.

        Args:
            record: what :meth:`to_record` returned (possibly in another process). Keys this
                version does not know are ignored, missing ones keep their defaults, so logs
                travel between slightly different versions.
            shift: seconds added to every absolute time (send, first byte, chunks, retries,
                end, creation), to put another process's ``perf_counter`` clock on this one's.
                Durations (render lags) are not moved.
            collector: the collector the recorder reports to (its id is kept as recorded; use
                :meth:`MetricsCollector.add_records` to append with new ids).
        """
        rec = cls(
            int(record["id"]),
            record.get("label"),
            created=float(record.get("created", 0.0)),
            tags=record.get("tags"),
            collector=collector,
        )
        arrays: Mapping[str, str] = record.get("_arrays", {})
        swap = record.get("_byteorder", sys.byteorder) != sys.byteorder
        for name in _RECORD_SLOTS:
            if name in ("id", "label", "created", "tags") or name not in record:
                continue
            value = record[name]
            if name in arrays and value is not None:
                column = array(arrays[name])
                column.frombytes(value)
                if swap:
                    column.byteswap()
                value = column
            elif name == "error":
                value = None if value is None else _error_from_record(value)
            elif name == "usage":
                value = None if value is None else _usage_from_record(value)
            elif name == "retries":
                value = [RetryRecord(*r) for r in value]
            elif isinstance(value, list | dict):
                value = value.copy()
            setattr(rec, name, value)
        if shift:
            rec._shift(shift)
        return rec

    def _shift(self, seconds: float) -> None:
        for name in _TIME_SLOTS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value + seconds)
        self.times = array("d", [t + seconds for t in self.times])
        self.retries = [dataclasses.replace(r, time=r.time + seconds) for r in self.retries]


# Every slot but the collector link travels in a record. The absolute times among them are named
# here, for the clock shift: a new slot holding a time must be added to _TIME_SLOTS.
_RECORD_SLOTS = tuple(name for name in RequestRecorder.__slots__ if name != "_collector")
_TIME_SLOTS = ("created", "sent_at", "first_byte_at", "ended_at")
_ERROR_FIELDS = ("url", "status_code", "retry_after", "code")


def _error_record(error: StreamkitError) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": error.kind,
        "message": error.message,
        "partial_text": error.partial_text,
    }
    for name in _ERROR_FIELDS:
        value = getattr(error, name, None)
        if value is not None:
            record[name] = value
    return record


def _error_from_record(record: Mapping[str, Any]) -> StreamkitError:
    """The typed error again: the class of that name in :mod:`streamkit.errors`, else the root."""
    from . import errors

    kind = str(record.get("kind", ""))
    found = getattr(errors, kind, None) if kind in errors.__all__ else None
    cls = found if isinstance(found, type) and issubclass(found, StreamkitError) else StreamkitError
    message = str(record.get("message", ""))
    url = record.get("url")
    partial = str(record.get("partial_text", ""))
    if issubclass(cls, APIStatusError):
        return cls(
            message,
            status_code=int(record.get("status_code", 0)),
            url=url,
            retry_after=record.get("retry_after"),
            code=record.get("code"),
            partial_text=partial,
        )
    try:
        return cls(message, url=url, partial_text=partial)
    except TypeError:
        # A class with its own constructor (UnpricedModelError): keep the class and the fields.
        error = cls.__new__(cls)
        StreamkitError.__init__(error, message, url=url, partial_text=partial)
        return error


def _usage_from_record(record: Mapping[str, Any]) -> Usage:
    names = {f.name for f in dataclasses.fields(Usage)}
    return Usage(**{k: v for k, v in record.items() if k in names})


# -- per-request metrics -----------------------------------------------------------------------


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
        from . import _html

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
        from . import _html

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
            _DISTRIBUTION_HEADER,
            _distribution_rows(self.distributions()),
            note="completed requests",
        )
        return _html.wrap(counts, spread)


def _run_window(recs: Sequence[RequestRecorder]) -> tuple[float, float] | None:
    """First send and last end (or latest activity) of the requests that started."""
    starts: list[float] = []
    ends: list[float] = []
    for rec in recs:
        if rec.status == "pending" and not rec.finished:
            continue
        starts.append(rec.send_time)
        candidates = [t for t in (rec.ended_at, rec.first_byte_at) if t is not None]
        if rec.times:
            candidates.append(rec.times[-1])
        if rec.retries:
            candidates.append(rec.retries[-1].time)
        if candidates:
            ends.append(max(candidates))
    if not starts:
        return None
    return min(starts), max(ends) if ends else min(starts)


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
        window = _run_window(recs)
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


# -- other tools' conventions, from the same raw log -------------------------------------------


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
        from . import _html

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
            [*_DISTRIBUTION_HEADER, "definition"],
            [
                [*cells, self.definitions.get(name, "")]
                for name, cells in zip(self.metrics, _distribution_rows(self.metrics), strict=True)
            ],
            align="l" + "r" * (len(_DISTRIBUTION_HEADER) - 1) + "l",
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
            "ttft": _weighted_distribution([(v, 1.0) for v in ttfts]),
            "tpot": _weighted_distribution(tpot),
            "itl": _weighted_distribution(itl),
            "e2e": _weighted_distribution([(v, 1.0) for v in latency]),
            "output_tokens_per_second_per_request": _weighted_distribution(
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

    recs = source.requests if isinstance(source, MetricsCollector) else list(source)
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


_DISTRIBUTION_HEADER = ("metric", "count", "mean", "p50", "p90", "p95", "p99", "max")


def _distribution_rows(dists: Mapping[str, Distribution]) -> list[list[object]]:
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


# -- the collector -----------------------------------------------------------------------------

_REQUEST_DTYPES: dict[str, str] = {
    "request": "int64",
    "label": "str",
    "model": "str",
    "status": "str",
    "finish_reason": "str",
    "error": "str",
    "error_message": "str",
    "sent_at": "float64",
    "first_byte_at": "float64",
    "first_token_at": "float64",
    "last_token_at": "float64",
    "ended_at": "float64",
    "ttfb": "float64",
    "ttft": "float64",
    "tpot": "float64",
    "e2e": "float64",
    "itl_mean": "float64",
    "itl_max": "float64",
    "output_tokens": "int64",
    "output_tokens_source": "str",
    "prompt_tokens": "Int64",
    "chunks": "int64",
    "chars": "int64",
    "tokens_per_second": "float64",
    "retries": "int64",
    "retry_causes": "str",
    "render_lag_mean": "float64",
    "render_lag_max": "float64",
    "endpoint": "str",
}
_CHUNK_DTYPES: dict[str, str] = {
    "request": "int64",
    "attempt": "int64",
    "index": "int64",
    "time": "float64",
    "since_send": "float64",
    "gap": "float64",
    "chars": "int64",
    "kept": "bool",
}
_SUMMARY_COLUMNS = ("count", "mean", "p50", "p90", "p95", "p99", "max")


class MetricsCollector:
    """Collects every event of many concurrent chats and turns them into metrics and tables.

    Two ways to attach it, both safe with concurrent chats::

        collector = sk.MetricsCollector()
        await client.chat(prompt, observers=[collector])                 # one log per chat task
        await client.chat(prompt, observers=[collector.track("fast")])   # a named request

    Passed directly, the collector keys each chat by its asyncio task (every concurrent chat
    runs in its own task; sequential chats in one task are told apart by ``finish``).
    ``track()`` returns a :class:`RequestRecorder` for exactly one chat.

    Args:
        clock: the clock for recorder creation times and for "now" in live views; the events
            carry their own times (``perf_counter``).

    Attributes:
        requests: every request's raw log, in order of tracking.
    """

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.requests: list[RequestRecorder] = []
        self._by_task: dict[object, RequestRecorder] = {}
        self._listeners: list[Callable[[], None]] = []
        self._finished = 0

    def __repr__(self) -> str:
        return f"<MetricsCollector {len(self.requests)} requests, {self._finished} finished>"

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[RequestRecorder]:
        return iter(self.requests)

    # -- attaching ----------------------------------------------------------------------------

    def track(self, label: str | None = None, **tags: object) -> RequestRecorder:
        """A recorder for one chat: pass it in ``observers=[...]``.

        Args:
            label: a name for the request (default ``"request <n>"``).
            **tags: extra fields kept with the request and exported as columns (e.g.
                ``speed=50``).
        """
        rec = RequestRecorder(
            len(self.requests), label, created=self.clock(), tags=tags, collector=self
        )
        self.requests.append(rec)
        self._poke()
        return rec

    observer = track
    """Alias of :meth:`track` (it returns an Observer)."""

    def on_event(self, event: Event) -> None:
        """Route one event to the current task's recorder (the collector as an Observer)."""
        # Inline rather than _current_task(): this runs once per token.
        try:
            key: object = asyncio.current_task()
        except RuntimeError:  # no running loop: sequential, synchronous driving
            key = None
        rec = self._by_task.get(key)
        if rec is None:
            rec = self._by_task[key] = self.track()
        rec.on_event(event)

    def finish(self, result: StreamResult) -> None:
        """Close the current task's recorder (the collector as an Observer)."""
        rec = self._by_task.pop(_current_task(), None)
        if rec is None:  # finished before any event (the request never started)
            rec = self.track()
        rec.finish(result)

    def record_render(self, request: RequestRecorder | int, lag_seconds: float) -> None:
        """Record a render lag (chunk arrival → on screen) for a request or its id."""
        rec = request if isinstance(request, RequestRecorder) else self.requests[request]
        rec.record_render(lag_seconds)

    def add_records(
        self, records: Iterable[Mapping[str, Any]], *, shift: float = 0.0, **tags: object
    ) -> list[RequestRecorder]:
        """Append request logs made elsewhere (:meth:`RequestRecorder.to_record`), with new ids.

        A default label (``"request <old id>"``) follows the new id, so labels stay unique.

        Args:
            records: the records, e.g. from another process's collector.
            shift: seconds added to every absolute time, to put that process's ``perf_counter``
                clock on this one's (see :mod:`streamkit.distributed`).
            **tags: fields added to every request's tags, winning over the record's own (e.g.
                ``worker="tcp://10.0.0.5:40123"``).

        Returns:
            The new recorders, in order.
        """
        added: list[RequestRecorder] = []
        for record in records:
            rec = RequestRecorder.from_record(record, shift=shift, collector=self)
            default_label = rec.label == f"request {rec.id}"
            rec.id = len(self.requests)
            if default_label:
                rec.label = f"request {rec.id}"
            rec.tags.update(tags)
            self.requests.append(rec)
            self._finished += rec.finished
            added.append(rec)
        if added:
            self._poke()
        return added

    # -- live state (cheap, for views) ----------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when a request is tracked, starts or finishes (never per chunk).

        Returns:
            A function that unsubscribes.
        """
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _poke(self) -> None:
        for callback in list(self._listeners):
            callback()

    def _on_finish(self, rec: RequestRecorder) -> None:
        self._finished += 1
        self._poke()

    @property
    def active(self) -> int:
        """Requests tracked and not finished."""
        return len(self.requests) - self._finished

    @property
    def origin(self) -> float | None:
        """The earliest send time: time zero of the exported tables."""
        window = _run_window(self.requests)
        return window[0] if window else None

    # -- metrics ------------------------------------------------------------------------------

    def request_metrics(self) -> list[RequestMetrics]:
        """Every request's metrics, in order of tracking."""
        return [request_metrics(r) for r in self.requests]

    def summary(self, slo: SLO | None = None, *, duration: float | None = None) -> RunSummary:
        """The run under streamkit's (vLLM's) definitions; see :func:`summarize`."""
        return summarize(self.requests, slo=slo, duration=duration)

    def goodput(self, slo: SLO, *, duration: float | None = None) -> float | None:
        """Requests per second that completed within every objective of ``slo``."""
        return self.summary(slo, duration=duration).goodput

    def conventions(self, *, unit: Literal["s", "ms"] = "ms") -> pd.DataFrame:
        """vLLM, genai-perf and GuideLLM side by side; see :func:`compare_conventions`."""
        return compare_conventions(self.requests, unit=unit)

    # -- tables -------------------------------------------------------------------------------

    def requests_df(self, slo: SLO | None = None) -> pd.DataFrame:
        """One row per request; times in seconds relative to :attr:`origin`.

        ``endpoint`` names the endpoint that served the request when a
        :class:`~streamkit.balance.LoadBalancer` routed it (the last one, after a failover).

        Args:
            slo: when given, adds a boolean ``good`` column (completed within every objective).
        """
        import pandas as pd

        origin = self.origin or 0.0
        rows = []
        for rec, m in zip(self.requests, self.request_metrics(), strict=True):
            row: dict[str, object] = {
                "request": m.id,
                "label": m.label,
                "model": m.model,
                "status": m.status,
                "finish_reason": m.finish_reason,
                "error": m.error_kind,
                "error_message": m.error_message,
                "sent_at": m.sent_at - origin,
                "first_byte_at": _rel(m.first_byte_at, origin),
                "first_token_at": _rel(m.first_token_at, origin),
                "last_token_at": _rel(m.last_token_at, origin),
                "ended_at": _rel(m.ended_at, origin),
                "ttfb": m.ttfb,
                "ttft": m.ttft,
                "tpot": m.tpot,
                "e2e": m.e2e,
                "itl_mean": math.fsum(m.itl) / len(m.itl) if m.itl else None,
                "itl_max": max(m.itl) if m.itl else None,
                "output_tokens": m.output_tokens,
                "output_tokens_source": m.output_tokens_source,
                "prompt_tokens": m.prompt_tokens,
                "chunks": m.chunks,
                "chars": m.chars,
                "tokens_per_second": m.tokens_per_second,
                "retries": m.retries,
                "retry_causes": ";".join(m.retry_causes) or None,
                "render_lag_mean": m.render_lag_mean,
                "render_lag_max": m.render_lag_max,
                "endpoint": rec.endpoint,
            }
            for key, value in m.tags.items():
                row.setdefault(key, value)
            if slo is not None:
                row["good"] = slo.met_by(m)
            rows.append(row)
        frame = pd.DataFrame(rows, columns=None if rows else list(_REQUEST_DTYPES))
        return frame.astype(_dtypes(_REQUEST_DTYPES))

    def chunks_df(self) -> pd.DataFrame:
        """One row per content chunk: request, attempt, index, arrival, gap (ITL), characters.

        ``time`` is seconds since :attr:`origin`, ``since_send`` since the request's send time,
        ``gap`` since the request's previous chunk (NaN for its first: that wait is the TTFT).
        ``kept`` is False for chunks a retry discarded by starting over.
        """
        import numpy as np
        import pandas as pd

        origin = self.origin or 0.0
        parts: dict[str, list[Any]] = {name: [] for name in _CHUNK_DTYPES}
        for rec in self.requests:
            n = len(rec.times)
            if not n:
                continue
            times = np.frombuffer(rec.times, dtype=np.float64) if n else np.empty(0)
            gaps = np.empty(n)
            gaps[0] = np.nan
            np.subtract(times[1:], times[:-1], out=gaps[1:])
            kept = np.ones(n, dtype=bool)
            if rec.kept_from:
                kept[: rec.kept_from] = False
                if rec.kept_from < n:
                    gaps[rec.kept_from] = np.nan  # the kept reply starts again: no gap to before
            parts["request"].append(np.full(n, rec.id, dtype=np.int64))
            parts["attempt"].append(np.asarray(rec.attempt_of_chunks(), dtype=np.int64))
            parts["index"].append(np.frombuffer(rec.indices, dtype=np.uint32).astype(np.int64))
            parts["time"].append(times - origin)
            parts["since_send"].append(times - rec.send_time)
            parts["gap"].append(gaps)
            parts["chars"].append(np.frombuffer(rec.chars, dtype=np.uint32).astype(np.int64))
            parts["kept"].append(kept)
        columns = {
            name: (np.concatenate(chunks) if chunks else np.empty(0))
            for name, chunks in parts.items()
        }
        return pd.DataFrame(columns).astype(_dtypes(_CHUNK_DTYPES))

    def summary_df(self, slo: SLO | None = None, *, duration: float | None = None) -> pd.DataFrame:
        """One row per metric (``ttfb``, ``ttft``, ``tpot``, ``itl``, ``e2e`` in seconds,
        ``tokens_per_second``) with ``count``, ``mean``, ``p50``, ``p90``, ``p95``, ``p99``,
        ``max``; run-level figures are in ``frame.attrs`` (``duration``, ``output_throughput``,
        ``request_throughput``, ``goodput``…)."""
        import pandas as pd

        s = self.summary(slo, duration=duration)
        frame = pd.DataFrame(
            [
                {"metric": name, **{k: _nan(v) for k, v in d.to_dict().items()}}
                for name, d in s.distributions().items()
            ]
        ).set_index("metric")
        frame = frame.astype({c: "float64" for c in _SUMMARY_COLUMNS if c != "count"})
        frame["count"] = frame["count"].astype("int64")
        frame.attrs.update(
            {
                "requests": s.requests,
                "completed": s.completed,
                "failed": s.failed,
                "stopped": s.stopped,
                "duration": s.duration,
                "output_tokens": s.output_tokens,
                "output_throughput": s.output_throughput,
                "request_throughput": s.request_throughput,
                "goodput": s.goodput,
            }
        )
        return frame

    def _table(self, table: Table) -> pd.DataFrame:
        if table == "requests":
            return self.requests_df()
        if table == "chunks":
            return self.chunks_df()
        if table == "summary":
            return self.summary_df()
        raise UsageError(f"table={table!r} is unknown: use 'requests', 'chunks' or 'summary'")

    def to_csv(self, path: str | Path, table: Table = "requests") -> Path:
        """Write a table as CSV (``requests``, ``chunks`` or ``summary``); returns the path.

        Read it back with :func:`read_csv`, which restores the column types.
        """
        path = Path(path)
        frame = self._table(table)
        frame.to_csv(path, index=table == "summary")
        return path

    def to_parquet(self, path: str | Path, table: Table = "requests") -> Path:
        """Write a table as Parquet (needs ``pyarrow``: ``pip install 'streamkit[parquet]'``).

        Raises:
            UsageError: pyarrow is not installed.
        """
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise UsageError(
                "Parquet export needs the pyarrow package: pip install 'streamkit[parquet]' "
                "(or pip install pyarrow), or use to_csv()"
            ) from exc
        path = Path(path)
        self._table(table).to_parquet(path, index=table == "summary")
        return path


def read_csv(path: str | Path, table: Literal["requests", "chunks"] = "requests") -> pd.DataFrame:
    """Read a table written by :meth:`MetricsCollector.to_csv`, with its column types restored."""
    import pandas as pd

    frame = pd.read_csv(path)
    dtypes = _REQUEST_DTYPES if table == "requests" else _CHUNK_DTYPES
    known = {k: v for k, v in _dtypes(dtypes).items() if k in frame.columns}
    return frame.astype(known)


def _dtypes(dtypes: Mapping[str, str]) -> dict[str, str]:
    """The column types for this pandas: text is ``str`` on pandas 3 (missing stays NaN), and
    ``object`` before it (where ``astype("str")`` would turn None into the text "None")."""
    import pandas as pd

    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return dict(dtypes)
    return {k: ("object" if v == "str" else v) for k, v in dtypes.items()}


def _rel(value: float | None, origin: float) -> float | None:
    return None if value is None else value - origin


def _nan(value: float | int | None) -> float | int:
    return math.nan if value is None else value


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: sequential, synchronous driving
        return None
