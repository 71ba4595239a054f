"""A lean HTTP/1.1 SSE client for load testing: ``transport="fast-sse"``.

Why another SSE client: a load generator must never be the bottleneck, and against an ordinary
SSE endpoint (vLLM, OpenAI…) there is no WebSocket to fall back on. httpx2 spends about 10 µs of
Python per read before a byte reaches a decoder, more than the whole budget of a chunk at 1,000
concurrent streams. Here each connection is an :class:`asyncio.Protocol`: ``data_received`` hands
the bytes straight to httptools' ``HttpResponseParser`` (llhttp, the C parser uvicorn uses: status
line, headers, chunked, content-length and close-delimited bodies, chunk extensions), whose body
callback feeds streamkit's sans-I/O decoder (:mod:`streamkit._sse`). The consumer is woken once
per read with every event that read completed, not once per event, and no read timer is armed per
wait: one lazily re-armed timer per connection checks the time of the last byte.

The semantics are those of ``generic-sse`` (:mod:`streamkit.transports.sse`): the same request
(``Last-Event-ID``, ``Authorization: Bearer``), the same events (:class:`StreamStart`,
:class:`TokenDelta`…, :class:`StreamEnd` with usage, folded by the shared
:class:`~streamkit.transports._common.ChatChunks`), the same typed errors with their partial
text, the server's ids on the tokens (``event_id``) and its ``retry:`` as a
:class:`~streamkit.events.ReconnectDelay`, so retry, resume and timeouts (:mod:`streamkit.resume`)
work unchanged.

Connections are kept alive in a :class:`FastSSEPool` (one per event loop) per (scheme, host,
port). A connection goes back to the pool only when its response was read to the end and the
server did not ask to close; a request on a pooled connection that dies before any response byte
is retried once on a fresh one (the server closed an idle keep-alive connection); a stream left
early (``break``, cancel, a timeout) closes its connection, so the server stops generating.

Backpressure: when a consumer falls behind by more than :data:`HIGH_WATER` events, the
connection stops reading from its socket until the consumer drains them, so TCP slows the server
instead of the client buffering without bound. It costs one length check per read, and paused time
never counts towards the read timeout. A reply is finite, so the cap matters only for a consumer
that stalls on a long one.

Limits: HTTP/1.1 only (no HTTP/2), no proxy support (``HTTPS_PROXY`` is not read), redirects are
not followed, and ``accept-encoding: identity`` is sent, so a compressed body is not expected.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

from .. import __version__
from .._sse import ServerSentEvent, SSEDecoder
from ..errors import (
    ConnectError,
    ReadTimeout,
    StreamInterrupted,
    StreamkitError,
    UsageError,
)
from ..events import Event, StreamStart
from ._attempt import ResumeFrom
from ._common import (
    BODY_ENDS,
    ChatChunks,
    chat_request,
    describe,
    error_fields,
    is_event_stream,
    not_event_stream,
    retry_after_from_headers,
    status_error,
)
from ._rehearsal import MESSAGES, MODEL, rehearse, rehearsed
from .sse import SSEState

__all__ = ["HIGH_WATER", "FastSSEPool", "iter_sse", "stream_chat_fast_sse"]

HIGH_WATER = 1024
"""Events waiting for a lagging consumer before its connection stops reading its socket."""

_clock = time.perf_counter
_MAX_ERROR_BODY = 64 * 1024  # an error body longer than this is cut: only its message is used
_USER_AGENT = f"streamkit/{__version__}"

_Key = tuple[str, str, int]  # (scheme, host, port)


class _Failure(Exception):
    """Why a response could not be read to its end; typed (with the partial text) by the caller."""

    def typed(self, url: str, partial_text: str) -> StreamkitError:
        return StreamInterrupted(
            f"the connection to {url} dropped mid-stream: {self}",
            url=url,
            partial_text=partial_text,
        )


class _Timeout(_Failure):
    def typed(self, url: str, partial_text: str) -> StreamkitError:
        return ReadTimeout(
            f"no data from {url} within the read timeout (raise timeout= or check the server)",
            url=url,
            partial_text=partial_text,
        )


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection and the state of the response being read on it.

    The loop calls ``data_received``; the parser calls back ``on_*`` from inside it; the
    consumer awaits :meth:`head`, then :meth:`batch` until it returns None. Slots keep an
    open stream small (``benchmarks/bench_client.py --memory`` measures it).
    """

    __slots__ = (
        "_dirty",
        "_feed",
        "_informational",
        "_keep_alive",
        "_last",
        "_last_event_id",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_raw",
        "_raw_size",
        "_timeout",
        "_timer",
        "_until_close",
        "_waiter",
        "closed",
        "complete",
        "decoder",
        "events",
        "failure",
        "headers",
        "headers_done",
        "idle",
        "key",
        "opened_at",
        "reason",
        "received",
        "status",
        "transport",
    )

    def __init__(self, pool: FastSSEPool, key: _Key, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.key = key
        self._loop = loop
        self._timeout = pool.timeout
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
        self.failure: _Failure | None = None
        self.decoder: SSEDecoder | None = None
        self._feed: Callable[[bytes], list[ServerSentEvent]] | None = None
        self.events: list[ServerSentEvent] = []
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
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(_Failure(f"malformed HTTP response: {describe(exc)}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.idle:
            self._pool._forget(self)
            return
        if self._parser is None or self.complete or self.failure is not None:
            self._wake()
            return
        if exc is None and self.headers_done and self._until_close:
            self.complete = True  # a close-delimited body ends when the server closes
            self._wake()
            return
        why = describe(exc) if exc is not None else "the server closed the connection"
        self._fail(_Failure(why if self.received else f"{why} before sending a response"))

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
        self.opened_at = _clock()
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
            pending = self.events
            pending += events
            if len(pending) > HIGH_WATER and not self._paused and self.transport is not None:
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

    def send(self, request: bytes, last_event_id: str | None) -> None:
        """Start a response: reset its state, write the request, arm the read timeout."""
        self.idle = False
        self._parser = httptools.HttpResponseParser(self)
        self._last_event_id = last_event_id
        self.received = self.headers_done = self.complete = self._informational = False
        self._keep_alive = False
        self.status = 0
        self.reason = b""
        self.headers = {}
        self.failure = None
        self.decoder = self._feed = None
        self.events = []
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
            _Failure: the connection failed first.
        """
        while not self.headers_done:
            if self.failure is not None:
                raise self.failure
            await self._wait()

    async def batch(self) -> list[ServerSentEvent] | None:
        """The events decoded since the last call (waiting for at least one); None at the end.

        Raises:
            _Failure: the connection failed or timed out first (events before it come first).
        """
        while True:
            events = self.events
            if events:
                self.events = []
                if self._paused:
                    self._paused = False
                    self._last = self._loop.time()
                    assert self.transport is not None
                    self.transport.resume_reading()
                return events
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

    def _fail(self, failure: _Failure) -> None:
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
            self._fail(_Timeout(f"no data for {self._timeout:g} s"))
            self.close()
        else:
            self._timer = self._loop.call_at(due, self._check)


class FastSSEPool:
    """Keep-alive HTTP/1.1 connections of one event loop, per (scheme, host, port).

    Not thread-safe and bound to the loop that first uses it (a :class:`~streamkit.Client`
    keeps one per loop). There is no limit on connections: a load test sets its own concurrency.

    Args:
        timeout: seconds to connect (TLS handshake included) and between reads of a response.
        ssl_context: for ``https``; default ``ssl.create_default_context()``, made on first use.
    """

    def __init__(self, timeout: float = 60.0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = float(timeout)
        self._ssl = ssl_context
        self._idle: dict[_Key, dict[_Connection, None]] = {}
        self._open: set[_Connection] = set()
        self._targets: dict[str, tuple[_Key, bytes]] = {}
        self.connections_opened = 0
        """How many connections this pool has opened (reuse keeps it low)."""

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool for a request."""
        return sum(len(conns) for conns in self._idle.values())

    def _target(self, url: str) -> tuple[_Key, bytes]:
        """The pool key and the request line and Host header of ``url`` (parsed once per URL)."""
        known = self._targets.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in ("http", "https") or not host:
            raise UsageError(f"{url!r} is not an http(s) URL")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise UsageError(f"{url!r} has an invalid port") from exc
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown = f"[{host}]" if ":" in host else host
        if parts.port is not None and port != (443 if scheme == "https" else 80):
            shown = f"{shown}:{port}"
        start = f" {path} HTTP/1.1\r\nhost: {shown}\r\n".encode()
        target = ((scheme, host, port), start)
        if len(self._targets) < 256:
            self._targets[url] = target
        return target

    def prepare(self, url: str) -> None:
        """Do ``url``'s one-time setup now: parse it, and make the TLS context for ``https``.

        A request calls this before its clock starts, so the first request's TTFB does not
        count building the TLS context (its handshake, on the new connection, it does count).

        Raises:
            UsageError: ``url`` is not an http(s) URL.
        """
        key, _ = self._target(url)
        if key[0] == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()

    def _take(self, key: _Key) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn, _ = conns.popitem()  # the most recently used: the least likely to be stale
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.idle = False
                return conn
            self._open.discard(conn)
        return None

    async def _connect(self, key: _Key, url: str) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key, loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectError(
                f"cannot connect to {url}: timed out after {self.timeout:g} s "
                "(is the server up? check base_url)",
                url=url,
            ) from exc
        except OSError as exc:  # refused, unreachable, unresolvable, TLS failures
            raise ConnectError(
                f"cannot connect to {url}: {describe(exc)} (is the server running? check base_url)",
                url=url,
            ) from exc
        self.connections_opened += 1
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> bool:
        """Pool ``conn`` if its response ended cleanly; otherwise close it. True if pooled."""
        if not conn.reusable():
            self._discard(conn)
            return False
        conn.idle = True
        conn._parser = None
        conn.events = []
        conn._raw = []
        self._idle.setdefault(conn.key, {})[conn] = None
        return True

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _forget(self, conn: _Connection) -> None:
        """An idle connection was closed by the server."""
        conns = self._idle.get(conn.key)
        if conns is not None:
            conns.pop(conn, None)
        self._open.discard(conn)

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        last_id: str | None,
    ) -> _Connection:
        """Send one request and wait for its headers, on a pooled connection if one is idle.

        Raises:
            ConnectError: no connection could be made.
            _Failure: the connection failed before the headers arrived.
        """
        key, start = self._target(url)
        lines = [method.encode("ascii"), start]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise UsageError(f"the header {name!r} contains a line break")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            lines.append(b"content-length: %d\r\n\r\n" % len(body))
            lines.append(body)
        else:
            lines.append(b"\r\n")
        request = b"".join(lines)
        conn = self._take(key)
        if conn is not None:
            try:
                conn.send(request, last_id)
                await conn.head()
                return conn
            except _Failure as failure:
                if conn.received or isinstance(failure, _Timeout):
                    raise
                # A stale keep-alive connection (closed by the server while idle): once more on
                # a fresh one. Nothing of the response arrived, so the request was not answered.
            finally:
                if not conn.headers_done:
                    self._discard(conn)
        conn = await self._connect(key, url)
        try:
            conn.send(request, last_id)
            await conn.head()
        finally:
            if not conn.headers_done:
                self._discard(conn)
        return conn

    async def aclose(self) -> None:
        """Close every connection, idle or in use (a stream in use then ends interrupted)."""
        for conn in list(self._open):
            conn._fail(_Failure("the client was closed"))
            conn.close()
        self._open.clear()
        self._idle.clear()


def _request_headers(
    headers: Mapping[str, str] | None, last_event_id: str | None, json_body: bool
) -> dict[str, str]:
    out = {
        "user-agent": _USER_AGENT,
        "accept": "text/event-stream",
        "accept-encoding": "identity",
        "cache-control": "no-cache",
    }
    if json_body:
        out["content-type"] = "application/json"
    for name, value in (headers or {}).items():
        out[name.lower()] = value
    if last_event_id is not None:
        out["last-event-id"] = last_event_id
    return out


async def _open(
    pool: FastSSEPool,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    json_body: object,
    last_event_id: str | None,
    partial: list[str] | None,
) -> _Connection:
    """Send the request; return the connection once an event stream's headers are in.

    Raises:
        APIStatusError: an error status (typed by status, with ``retry_after``).
        ProtocolError: the answer is not an event stream.
        TransportError: the connection failed or timed out before the headers.
    """
    body = None
    if json_body is not None:
        body = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
    send = _request_headers(headers, last_event_id, body is not None)
    try:
        conn = await pool._request(method, url, send, body, last_event_id)
    except _Failure as failure:
        raise failure.typed(url, "".join(partial or ())) from None
    if conn.status >= 400:
        try:
            raw = await conn.body()
        finally:
            pool._release(conn)  # an error body read to its end leaves a reusable connection
        message, code = error_fields(raw, conn.reason.decode("latin-1").strip() or "error")
        raise status_error(
            conn.status,
            message,
            url=url,
            code=code,
            retry_after=retry_after_from_headers(conn.headers),
            partial_text="".join(partial or ()),
        )
    if conn.decoder is None:
        pool._discard(conn)
        raise not_event_stream(url, conn.status, conn.headers.get("content-type"))
    return conn


async def iter_sse(
    pool: FastSSEPool,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: object = None,
    state: SSEState | None = None,
    partial: list[str] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """One request to an event-stream endpoint over ``pool``: its events, as they arrive.

    The fast twin of :func:`streamkit.transports.sse.iter_sse`, with the same arguments (a pool
    in place of the httpx2 client), state updates and errors.

    Raises:
        APIStatusError: the server answered an error status.
        ProtocolError: the answer is not an event stream.
        TransportError: the connection failed, timed out or dropped mid-stream.
    """
    state = state if state is not None else SSEState()
    conn = await _open(pool, method, url, headers, json_body, state.last_event_id, partial)
    decoder = conn.decoder
    assert decoder is not None
    state.opened_at = conn.opened_at
    state.request_id = conn.headers.get("x-request-id")
    try:
        while (batch := await conn.batch()) is not None:
            for sse in batch:
                state.last_event_id = sse.id
                yield sse
            if decoder.retry is not None:
                state.retry = decoder.retry / 1000
        if decoder.retry is not None:
            state.retry = decoder.retry / 1000
        pool._release(conn)
        if decoder.close().strip():
            raise StreamInterrupted(
                f"the stream from {url} ended mid-frame",
                url=url,
                partial_text="".join(partial or ()),
            )
    except _Failure as failure:
        raise failure.typed(url, "".join(partial or ())) from None
    finally:
        if not conn.idle:
            pool._discard(conn)  # left early or failed: the rest of the response is unread


async def stream_chat_fast_sse(
    pool: FastSSEPool,
    *,
    base_url: str,
    api_key: str | None,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    attempt: ResumeFrom | None = None,
) -> AsyncIterator[Event]:
    """Stream one chat completion over ``pool``, as streamkit events.

    Yields exactly what :func:`~streamkit.transports.sse.stream_chat_sse` yields:
    :class:`StreamStart`, a :class:`TokenDelta` per content chunk, :class:`StreamEnd`, and a
    :class:`~streamkit.events.ReconnectDelay` when the server sends ``retry:``.

    Args:
        pool: the loop's connection pool (its timeout applies).
        base_url: the API root (``…/v1``).
        api_key: sent as ``Authorization: Bearer …`` when given.
        model: the model id.
        messages: OpenAI chat messages.
        params: further body fields; ``extra_body`` is merged into the body and
            ``extra_headers`` into the headers, as the SDK does.
        attempt: resume after ``attempt.last_event_id``; the server's ids come back on the
            tokens (``event_id``).

    Raises:
        StreamkitError: typed, with the partial text of this attempt.
    """
    url, headers, body = chat_request(base_url, api_key, model, messages, params)
    use_ids = attempt is not None and attempt.use_ids
    last_id = attempt.last_event_id if use_ids and attempt is not None else None
    chunks = ChatChunks(base_url, attempt)
    if not rehearsed("fast-sse"):
        await rehearse("fast-sse", _rehearsal)  # the first request's setup, before its clock
    pool.prepare(url)
    sent_at = _clock()
    conn = await _open(pool, "POST", url, headers, body, last_id, chunks.parts)
    decoder = conn.decoder
    assert decoder is not None
    try:
        feed = chunks.feed
        try:
            batch = await conn.batch()
            now = _clock()
            yield StreamStart(
                sent_at, conn.opened_at or now, model, conn.headers.get("x-request-id")
            )
            while batch is not None:
                if decoder.retry is not None:  # SSE retry: is in milliseconds
                    hint = chunks.reconnect(decoder.retry / 1000, now)
                    if hint is not None:
                        yield hint
                for sse in batch:
                    token = feed(sse, now)
                    if token is not None:
                        yield token
                batch = await conn.batch()
                now = _clock()
            pool._release(conn)  # before the last yield: the consumer may stop at StreamEnd
        except _Failure as failure:
            error = failure.typed(url, chunks.partial_text)
            if not (chunks.complete and isinstance(error, BODY_ENDS)):
                retry = decoder.retry
                hint = chunks.reconnect(None if retry is None else retry / 1000, _clock())
                if hint is not None:
                    yield hint  # a retry: that arrived just before the failure
                raise error from None
            # The reply is complete: a body that then drops or stalls ends it (ChatChunks.end).
            now = _clock()
        yield chunks.end(now, cut=bool(decoder.close().strip()))
    finally:
        if not conn.idle:
            pool._discard(conn)  # left early or failed: the rest of the response is unread


async def _rehearsal(base_url: str) -> None:
    """One request through a throwaway pool (see :mod:`._rehearsal`)."""
    pool = FastSSEPool()
    try:
        async for _ in stream_chat_fast_sse(
            pool, base_url=base_url, api_key=None, model=MODEL, messages=MESSAGES
        ):
            pass
    finally:
        await pool.aclose()
