"""fast-sse's HTTP/1.1 connection: one response read as an :class:`asyncio.Protocol`.

Each connection hands the bytes straight to httptools' ``HttpResponseParser`` (llhttp, the C
parser uvicorn uses: status line, headers, chunked, content-length and close-delimited bodies,
chunk extensions), whose body callback feeds streamkit's sans-I/O decoder (:mod:`streamkit._sse`).
The consumer is woken once per read with every event that read completed, not once per event, and
no read timer is armed per wait: one lazily re-armed timer per connection checks the time of the
last byte.

Each read's events carry the time the loop handed its bytes to the protocol (``data_received``),
read from the request's clock: a consumer that resumes late (1,000 streams on one loop) still
times its tokens by their read, not by its resume. A loop too busy to read in time still joins
writes: the socket holds several, one read takes them, and they share its stamp.

The pool is :mod:`._pool`; the chat and event-source layer on top,
:mod:`streamkit.transports.fast_sse`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeAlias

import httptools

from .._sse import ServerSentEvent, SSEDecoder
from ..errors import ReadTimeout, StreamInterrupted, StreamkitError
from ._common import describe, is_event_stream

__all__ = ["HIGH_WATER", "Clock", "Connection", "Failure", "Key", "Read", "TimeoutFailure"]

HIGH_WATER = 1024
"""Events waiting for a lagging consumer before its connection stops reading its socket."""

_MAX_ERROR_BODY = 64 * 1024  # an error body longer than this is cut: only its message is used

Key = tuple[str, str, int]
"""What a pool keeps connections by: (scheme, host, port)."""

Clock: TypeAlias = Callable[[], float]
"""A request's clock (``time.perf_counter`` unless a caller injects one): every stamp of a
response (headers, each read, the end) is read from it, so its times compare with the send time."""

Read = tuple[float, list[ServerSentEvent]]
"""The events one socket read completed, and the time (on the request's clock) it arrived."""


class Failure(Exception):
    """Why a response could not be read to its end; typed (with the partial text) by the caller."""

    def typed(self, url: str, partial_text: str) -> StreamkitError:
        return StreamInterrupted(
            f"the connection to {url} dropped mid-stream: {self}",
            url=url,
            partial_text=partial_text,
        )


class TimeoutFailure(Failure):
    def typed(self, url: str, partial_text: str) -> StreamkitError:
        return ReadTimeout(
            f"no data from {url} within the read timeout (raise timeout= or check the server)",
            url=url,
            partial_text=partial_text,
        )


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection and the state of the response being read on it.

    The loop calls ``data_received``; the parser calls back ``on_*`` from inside it; the
    consumer awaits :meth:`head`, then :meth:`batch` until it returns None. Slots keep an
    open stream small (``benchmarks/bench_client.py --memory`` measures it).
    """

    __slots__ = (
        "_clock",
        "_current",
        "_dirty",
        "_feed",
        "_informational",
        "_keep_alive",
        "_last",
        "_last_event_id",
        "_loop",
        "_on_idle_close",
        "_parser",
        "_paused",
        "_pending",
        "_raw",
        "_raw_size",
        "_timeout",
        "_timer",
        "_until_close",
        "_waiter",
        "arrived",
        "closed",
        "complete",
        "decoder",
        "failure",
        "headers",
        "headers_done",
        "idle",
        "key",
        "opened_at",
        "reads",
        "reason",
        "received",
        "status",
        "transport",
    )

    def __init__(
        self,
        timeout: float,
        key: Key,
        loop: asyncio.AbstractEventLoop,
        on_idle_close: Callable[[Connection], None],
    ) -> None:
        self._on_idle_close = on_idle_close  # the pool forgets an idle connection the server closed
        self.key = key
        self._loop = loop
        self._timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle = False  # in the pool, between responses
        # The response being read.
        self._parser: httptools.HttpResponseParser | None = None
        self._last_event_id: str | None = None
        self.received = False  # a byte of the response arrived
        self.status = 0
        self.reason = b""
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.opened_at = 0.0
        self.complete = False
        self._keep_alive = False  # read at the end of the message: llhttp resets it right after
        self._dirty = False  # bytes past the end of the response: never reuse
        self._informational = False  # a 1xx response precedes the real one
        self._until_close = False  # the body ends when the server closes
        self.failure: Failure | None = None
        self.decoder: SSEDecoder | None = None
        self._feed: Callable[[bytes], list[ServerSentEvent]] | None = None
        self._clock: Clock = time.perf_counter  # the request's (see send)
        self.arrived = 0.0  # clock time of the response's latest read (or of its end)
        self.reads: list[Read] = []  # decoded, not yet taken by the consumer
        self._pending = 0  # events in reads
        self._current: list[ServerSentEvent] | None = None  # the events of the read under way
        self._raw: list[bytes] = []
        self._raw_size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._last = 0.0  # loop time of the last byte (or of sending, or of resuming reading)
        self._timer: asyncio.TimerHandle | None = None

    # -- the loop's side -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last = self._loop.time()
        parser = self._parser
        if parser is None or self.complete:
            # Bytes nobody asked for (on an idle connection, or past the response's end): the
            # connection is out of step with the server and cannot carry another request.
            self._dirty = True
            if self.idle:
                self.close()
            return
        self.received = True
        self.arrived = self._clock()  # the stamp of every event this read completes
        self._current = None
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.fail(Failure(f"malformed HTTP response: {describe(exc)}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.idle:
            self._on_idle_close(self)
            return
        if self._parser is None or self.complete or self.failure is not None:
            self._wake()
            return
        if exc is None and self.headers_done and self._until_close:
            self.complete = True  # a close-delimited body ends when the server closes
            self.arrived = self._clock()
            self._wake()
            return
        why = describe(exc) if exc is not None else "the server closed the connection"
        self.fail(Failure(why if self.received else f"{why} before sending a response"))

    # -- the parser's side ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self._dirty = True

    def on_status(self, reason: bytes) -> None:
        self.reason += reason  # a status line split across reads comes in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status < 200:  # 1xx (103 Early Hints…): the real response follows
            self._informational = True
            self.headers = {}
            self.reason = b""
            return
        self.status = status
        self.headers_done = True
        self.opened_at = self.arrived  # the read that completed the headers
        headers = self.headers
        if status < 400 and is_event_stream(headers.get("content-type")):
            decoder = SSEDecoder()
            decoder.last_event_id = self._last_event_id  # WHATWG: kept across reconnects
            self.decoder = decoder
            self._feed = decoder.feed
        coding = headers.get("transfer-encoding")
        chunked = coding is not None and "chunked" in coding.lower()
        self._until_close = not chunked and (coding is not None or "content-length" not in headers)
        self._wake()

    def on_body(self, body: bytes) -> None:
        feed = self._feed
        if feed is None:  # an error (or non-stream) body: kept whole for its message
            if self._raw_size < _MAX_ERROR_BODY:
                self._raw.append(body)
                self._raw_size += len(body)
            return
        events = feed(body)
        if events:
            current = self._current
            if current is None:  # the read's first events (a read may hold several chunks)
                self._current = events
                self.reads.append((self.arrived, events))
            else:
                current += events
            self._pending += len(events)
            if self._pending > HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- the consumer's side -------------------------------------------------------------------

    def send(self, request: bytes, last_event_id: str | None, clock: Clock) -> None:
        """Start a response: reset its state, write the request, arm the read timeout.

        Args:
            clock: what the response's stamps are read from (the caller's send time's clock).
        """
        self.idle = False
        self._clock = clock
        self._parser = httptools.HttpResponseParser(self)
        self._last_event_id = last_event_id
        self.received = self.headers_done = self.complete = self._informational = False
        self._keep_alive = False
        self.status = 0
        self.reason = b""
        self.headers = {}
        self.failure = None
        self.decoder = self._feed = None
        self.arrived = 0.0
        self.reads = []
        self._pending = 0
        self._current = None
        self._raw = []
        self._raw_size = 0
        self._last = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last + self._timeout, self._check)
        assert self.transport is not None
        self.transport.write(request)

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        await waiter

    async def head(self) -> None:
        """Wait for the response's status and headers.

        Raises:
            Failure: the connection failed first.
        """
        while not self.headers_done:
            if self.failure is not None:
                raise self.failure
            await self._wait()

    async def batch(self) -> list[Read] | None:
        """The events decoded since the last call, read by read with each read's arrival time
        (waiting for at least one event); None at the end.

        Raises:
            Failure: the connection failed or timed out first (events before it come first).
        """
        while True:
            reads = self.reads
            if reads:
                self.reads = []
                self._pending = 0
                self._current = None
                if self._paused:
                    self._paused = False
                    self._last = self._loop.time()
                    assert self.transport is not None
                    self.transport.resume_reading()
                return reads
            if self.failure is not None:
                raise self.failure
            if self.complete:
                return None
            await self._wait()

    async def body(self) -> bytes:
        """The whole (error) body, as much of it as arrives before the end or a failure."""
        while not self.complete and self.failure is None:
            await self._wait()
        return b"".join(self._raw)

    def reusable(self) -> bool:
        """The response was read to its end and the server keeps the connection open."""
        return (
            self.complete
            and self._keep_alive
            and not self._dirty
            and not self.closed
            and self.failure is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        """Close the connection (a response left unread can never be reused)."""
        self._dirty = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- internals -----------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
        self._wake()

    def _check(self) -> None:
        """The read timeout: fires once per timeout period, not per read."""
        self._timer = None
        if self.closed or self.idle or self.complete or self.failure is not None:
            return
        now = self._loop.time()
        if self._paused:
            self._last = now  # the consumer is behind: the server is not the one waiting
        due = self._last + self._timeout
        if now >= due - 0.001:
            self.fail(TimeoutFailure(f"no data for {self._timeout:g} s"))
            self.close()
        else:
            self._timer = self._loop.call_at(due, self._check)
