"""The raw per-request log: a recorder per chat, its retries, and its travel between processes."""

from __future__ import annotations

import dataclasses
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import APIStatusError, StreamkitError
from ..events import (
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamRetry,
    StreamStart,
    TokenDelta,
    ToolCallDelta,
    Usage,
)
from ..result import OutputTokensSource, close_log, output_tokens_from

if TYPE_CHECKING:
    from ..result import StreamResult
    from .collector import MetricsCollector

RequestStatus = Literal["pending", "streaming", "completed", "stopped", "failed"]


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
        times: each chunk's arrival (``perf_counter`` seconds): content, reasoning and tool-call
            pieces alike.
        indices: each chunk's index, as the transport numbered it.
        chars: each content chunk's text length in characters (0 for other pieces).
        others: the positions (in ``times``) of the pieces that are not content: reasoning
            and tool-call pieces are timed in the same columns (time to first token and the
            gaps count every piece, as ``vllm bench serve`` does), and listed here.
        other_kinds: for each of ``others``, 1 for reasoning, 2 for a tool-call piece.
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
        "other_kinds",
        "others",
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
        self.others = array("I")
        self.other_kinds = array("B")
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
        elif isinstance(event, ReasoningDelta | ToolCallDelta):
            self.others.append(len(self.times))
            self.other_kinds.append(1 if isinstance(event, ReasoningDelta) else 2)
            self.times.append(event.time)
            self.indices.append(event.index)
            self.chars.append(0)
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
        elif isinstance(event, StreamEnd | StreamError):
            close_log(self, event)

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
        others = set(self.others)  # reasoning and tool-call pieces: not in the view's text
        for position, (when, size) in enumerate(zip(self.times, self.chars, strict=True)):
            if position in others:
                continue
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

    def kept_kinds(self) -> tuple[int, int, float | None]:
        """``(reasoning pieces, tool-call pieces, first content chunk's arrival)`` of the kept
        reply."""
        reasoning = tools = 0
        other = set()
        for position, kind in zip(self.others, self.other_kinds, strict=True):
            if position >= self.kept_from:
                other.add(position)
                if kind == 1:
                    reasoning += 1
                else:
                    tools += 1
        first_answer = next(
            (self.times[i] for i in range(self.kept_from, len(self.times)) if i not in other),
            None,
        )
        return reasoning, tools, first_answer

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
    from .. import errors

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


def run_window(recs: Sequence[RequestRecorder]) -> tuple[float, float] | None:
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
