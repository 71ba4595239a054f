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

Times are arrival times: each token (and the stream's end) is stamped with the time the event loop
read its bytes (``data_received``), not the time the consumer resumed. With 1,000 streams on one
loop a consumer resumes tens of milliseconds after the read (``benchmarks/bench_stamps.py``
measures it), and that delay was counted into TTFT and spread over the gaps; tokens that share a
read still share a stamp. All stamps come from one clock, this module's ``_clock``, which tests
replace.

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

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from .._sse import ServerSentEvent
from ..errors import StreamInterrupted
from ..events import Event, StreamStart
from ._attempt import ResumeFrom
from ._common import BODY_ENDS
from ._http1 import HIGH_WATER, Failure
from ._pool import FastSSEPool, discard, open_stream, release
from ._rehearsal import MESSAGES, MODEL, rehearse, rehearsed
from ._responses import Api, open_request
from .sse import SSEState

__all__ = ["HIGH_WATER", "FastSSEPool", "iter_sse", "stream_chat_fast_sse"]

_clock = time.perf_counter


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
    conn = await open_stream(
        pool, method, url, headers, json_body, state.last_event_id, partial, _clock
    )
    decoder = conn.decoder
    assert decoder is not None
    state.opened_at = conn.opened_at
    state.request_id = conn.headers.get("x-request-id")
    try:
        while (batch := await conn.batch()) is not None:
            for _, events in batch:
                for sse in events:
                    state.last_event_id = sse.id
                    yield sse
            if decoder.retry is not None:
                state.retry = decoder.retry / 1000
        if decoder.retry is not None:
            state.retry = decoder.retry / 1000
        release(pool, conn)
        if decoder.close().strip():
            raise StreamInterrupted(
                f"the stream from {url} ended mid-frame",
                url=url,
                partial_text="".join(partial or ()),
            )
    except Failure as failure:
        raise failure.typed(url, "".join(partial or ())) from None
    finally:
        if not conn.idle:
            discard(pool, conn)  # left early or failed: the rest of the response is unread


async def stream_chat_fast_sse(
    pool: FastSSEPool,
    *,
    base_url: str,
    api_key: str | None,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    attempt: ResumeFrom | None = None,
    api: Api = "chat",
) -> AsyncIterator[Event]:
    """Stream one chat completion over ``pool``, as streamkit events.

    Yields exactly what :func:`~streamkit.transports.sse.stream_chat_sse` yields:
    :class:`StreamStart`, a :class:`TokenDelta` per content chunk, :class:`StreamEnd`, and a
    :class:`~streamkit.events.ReconnectDelay` when the server sends ``retry:``.

    Args:
        pool: the loop's connection pool (its timeout applies), in place of the httpx2 client;
            the other arguments (``api`` too) and the errors are those of
            :func:`~streamkit.transports.sse.stream_chat_sse`.
    """
    method, url, headers, body, last_id, chunks = open_request(
        base_url, api_key, model, messages, params, attempt, api
    )
    if not rehearsed("fast-sse"):
        await rehearse("fast-sse", _rehearsal)  # the first request's setup, before its clock
    pool.prepare(url)
    sent_at = _clock()
    conn = await open_stream(pool, method, url, headers, body, last_id, chunks.parts, _clock)
    decoder = conn.decoder
    assert decoder is not None
    try:
        feed = chunks.feed
        try:
            batch = await conn.batch()
            yield StreamStart(sent_at, conn.opened_at, model, conn.headers.get("x-request-id"))
            while batch is not None:
                if decoder.retry is not None:  # SSE retry: is in milliseconds
                    hint = chunks.reconnect(decoder.retry / 1000, batch[-1][0])
                    if hint is not None:
                        yield hint
                for now, events in batch:  # each read's events, at the time the read arrived
                    for sse in events:
                        for piece in feed(sse, now):
                            yield piece
                batch = await conn.batch()
            now = conn.arrived  # the read that ended the body
            release(pool, conn)  # before the last yield: the consumer may stop at StreamEnd
        except Failure as failure:
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
            discard(pool, conn)  # left early or failed: the rest of the response is unread


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
