"""A generic SSE client over httpx2: any ``text/event-stream`` endpoint, resumable by event id.

Why httpx2: it is the HTTP stack the openai SDK already brings (no new dependency), and it carries
the connection-pool fix that plain httpx 0.28 lacks for many concurrent slow streams. Why not
httpx-sse: :mod:`streamkit._sse` is already a WHATWG decoder (any line ending, split anywhere,
``id``/``retry`` fields) with a fast path for OpenAI-style frames, so a second parser would only
add CPU per event. Reading ``aiter_raw`` straight into that decoder is the whole client.

Three layers, each usable alone:

- :func:`iter_sse`: one request, its events, typed errors. It sends ``Last-Event-ID`` when given
  and reports the last id and the server's ``retry:`` delay on an :class:`SSEState`.
- :class:`EventSource`: reconnects like the browser's ``EventSource`` (WHATWG HTML §9.2): after a
  drop it waits the server's ``retry:`` (or the :class:`~streamkit.retry.RetryPolicy`'s backoff,
  whichever is longer) and reconnects with ``Last-Event-ID`` set to the last id seen, so a
  server that keeps ids continues where the stream broke. Unlike a browser, a response that
  *ends* cleanly ends the iteration: most HTTP streams (a chat reply) are finite. Its decisions
  are the resilience layer's (:class:`~streamkit.retry.Streak`: the policy's limits count
  failures in a row without new events), so the two readers retry by one set of rules.
- :func:`stream_chat_sse`: OpenAI Chat Completions over :func:`iter_sse`, without the SDK:
  the same events as :mod:`~streamkit.transports.openai_sse`, numbered by the server's ids
  when it sends them (the bundled server does), for the resilience layer to resume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from .._sse import ServerSentEvent, SSEDecoder
from ..errors import (
    StreamInterrupted,
    StreamkitError,
)
from ..events import Event, StreamStart
from ..retry import RetryPolicy, Streak
from ._attempt import ResumeFrom
from ._common import (
    BODY_ENDS,
    error_fields,
    is_event_stream,
    not_event_stream,
    read_error,
    retry_after_from_headers,
    status_error,
)
from ._rehearsal import MESSAGES, MODEL, http_client, rehearse, rehearsed
from ._responses import Api, open_request

__all__ = ["EventSource", "SSEState", "iter_sse", "stream_chat_sse"]

_clock = time.perf_counter


@dataclass(slots=True)
class SSEState:
    """What one connection learned, kept for the next: the WHATWG "last event ID" and
    "reconnection time".

    Attributes:
        last_event_id: the id of the last event dispatched (sent as ``Last-Event-ID``).
        retry: the server's ``retry:`` reconnection delay, in seconds, once it sends one.
        opened_at: when the last response's headers arrived (``perf_counter``).
        request_id: the last response's ``x-request-id`` header, if any.
        cut: the last body ended with bytes of an unfinished frame left over (reported here
            only when the caller asked :func:`iter_sse` not to raise for it).
    """

    last_event_id: str | None = None
    retry: float | None = None
    opened_at: float | None = None
    request_id: str | None = None
    cut: bool = False


async def iter_sse(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: object = None,
    state: SSEState | None = None,
    partial: list[str] | None = None,
    allow_cut: bool = False,
) -> AsyncIterator[ServerSentEvent]:
    """One request to an event-stream endpoint: its events, as they arrive.

    Args:
        client: the httpx2 client (its timeouts and pool apply).
        method: ``GET`` for a plain event source, ``POST`` for a chat completion.
        url: the endpoint.
        headers: extra request headers (``Authorization``…).
        json_body: a JSON request body, if any.
        state: sends its ``last_event_id`` as ``Last-Event-ID`` and is updated as events arrive.
        partial: the text received so far, for the ``partial_text`` of errors (the caller
            appends to it).
        allow_cut: a body that ends in the middle of a frame sets ``state.cut`` instead of
            raising, for a caller that decides itself what a cut means (a chat reply that has
            finished is complete: :meth:`~streamkit.transports._common.ChatChunks.end`).

    Raises:
        APIStatusError: the server answered an error status (typed by status, with
            ``retry_after``).
        ProtocolError: the answer is not an event stream.
        TransportError: the connection failed, timed out or dropped mid-stream (or, unless
            ``allow_cut``, ended in the middle of a frame).
    """
    state = state if state is not None else SSEState()
    send_headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
    if state.last_event_id is not None:
        send_headers["Last-Event-ID"] = state.last_event_id
    decoder = SSEDecoder()
    decoder.last_event_id = state.last_event_id  # WHATWG: the id stays in force across reconnects
    try:
        async with client.stream(method, url, headers=send_headers, json=json_body) as response:
            state.opened_at = _clock()
            state.request_id = response.headers.get("x-request-id")
            if response.status_code >= 400:
                raise await _error_response(response, url, partial)
            kind = response.headers.get("content-type")
            if not is_event_stream(kind):
                raise not_event_stream(url, response.status_code, kind)
            async for raw in response.aiter_raw():
                events = decoder.feed(raw)
                if decoder.retry is not None:  # before the events: in force when they arrive
                    state.retry = decoder.retry / 1000
                for sse in events:
                    state.last_event_id = sse.id
                    yield sse
            state.cut = bool(decoder.close().strip())
            if state.cut and not allow_cut:
                raise StreamInterrupted(
                    f"the stream from {url} ended mid-frame",
                    url=url,
                    partial_text="".join(partial or ()),
                )
    except StreamkitError:
        raise
    except httpx2.HTTPError as exc:
        raise read_error(exc, url, "".join(partial or ())) from exc


async def _error_response(
    response: httpx2.Response, url: str, partial: list[str] | None
) -> StreamkitError:
    body = await response.aread()
    message, code = error_fields(body, response.reason_phrase or "error")
    return status_error(
        response.status_code,
        message,
        url=url,
        code=code,
        retry_after=retry_after_from_headers(response.headers),
        partial_text="".join(partial or ()),
    )


class EventSource:
    """Reads an event-stream endpoint across reconnects, resuming by ``Last-Event-ID``.

    Use as an async iterator of :class:`~streamkit._sse.ServerSentEvent`; ``async with`` (or
    :meth:`aclose`) closes the client it made::

        async with EventSource("http://127.0.0.1:8000/events") as source:
            async for event in source:
                print(event.id, event.data)

    Args:
        url: the endpoint.
        client: an httpx2 client to use (not closed here); default: one made and owned here.
        method: the HTTP method (``GET``).
        headers: extra request headers.
        json_body: a JSON body to send with every (re)connection.
        policy: when to reconnect and how long to wait; the server's ``retry:`` is a floor.
            Its limits count drops in a row without a new event, so a long-lived source that
            keeps delivering may drop any number of times. Default: ``RetryPolicy()``.
        last_event_id: resume an earlier stream after this id.
        timeout: seconds for connecting and between reads, when the client is made here.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx2.AsyncClient | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        json_body: object = None,
        policy: RetryPolicy | None = None,
        last_event_id: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.method = method
        self.headers = dict(headers or {})
        self.json_body = json_body
        self.policy = policy if policy is not None else RetryPolicy()
        self.state = SSEState(last_event_id=last_event_id)
        self.reconnects = 0
        self._own = client is None
        self._client = client if client is not None else httpx2.AsyncClient(timeout=timeout)

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event received (or the one given to resume after)."""
        return self.state.last_event_id

    @property
    def retry(self) -> float | None:
        """The server's reconnection delay in seconds, once it has sent ``retry:``."""
        return self.state.retry

    async def __aiter__(self) -> AsyncIterator[ServerSentEvent]:
        streak = Streak(self.policy, _clock)
        while True:
            progressed = False
            try:
                async for event in iter_sse(
                    self._client,
                    self.method,
                    self.url,
                    headers=self.headers,
                    json_body=self.json_body,
                    state=self.state,
                ):
                    progressed = True
                    yield event
                return
            except StreamkitError as error:
                if progressed:
                    streak.restart()  # new events since the last drop: a new streak
                streak.fail()
                wait = streak.next_delay(error, retry_after=self.state.retry)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            self.reconnects += 1

    async def aclose(self) -> None:
        """Close the httpx2 client if this source made it."""
        if self._own:
            await self._client.aclose()

    async def __aenter__(self) -> EventSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def stream_chat_sse(
    client: httpx2.AsyncClient,
    *,
    base_url: str,
    api_key: str | None,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    attempt: ResumeFrom | None = None,
    api: Api = "chat",
) -> AsyncIterator[Event]:
    """Stream one chat completion over plain SSE (no SDK), as streamkit events.

    Yields what :func:`~streamkit.transports.openai_sse.stream_chat_completion` yields:
    :class:`StreamStart`, a :class:`TokenDelta` per content chunk, :class:`StreamEnd`, and a
    :class:`~streamkit.events.ReconnectDelay` when the server sends ``retry:``.

    Args:
        client: the httpx2 client.
        base_url: the API root (``…/v1``).
        api_key: sent as ``Authorization: Bearer …`` when given.
        model: the model id.
        messages: OpenAI chat messages.
        params: further body fields; ``extra_body`` is merged into the body and
            ``extra_headers`` into the headers, as the SDK does.
        attempt: resume after ``attempt.last_event_id``; the server's ids come back on the
            tokens (``event_id``).
        api: ``"chat"`` (Chat Completions) or ``"responses"`` (the Responses API, folded
            into the same events by :mod:`._responses`; a resume asks ``starting_after``).

    Raises:
        StreamkitError: typed, with the partial text of this attempt.
    """
    method, url, headers, body, last_id, chunks = open_request(
        base_url, api_key, model, messages, params, attempt, api
    )
    state = SSEState(last_event_id=last_id)
    if not rehearsed("generic-sse"):
        await rehearse("generic-sse", _rehearsal)  # the first request's setup, before its clock
    sent_at = _clock()
    started = False
    try:
        async for sse in iter_sse(
            client,
            method,
            url,
            headers=headers,
            json_body=body,
            state=state,
            partial=chunks.parts,
            allow_cut=True,
        ):
            now = _clock()
            if not started:
                started = True
                yield StreamStart(sent_at, state.opened_at or now, model, state.request_id)
            if state.retry is not None:
                hint = chunks.reconnect(state.retry, now)
                if hint is not None:
                    yield hint
            for piece in chunks.feed(sse, now):
                yield piece
    except BODY_ENDS:
        if not chunks.complete:
            hint = chunks.reconnect(state.retry, _clock())  # a retry: before the drop
            if hint is not None:
                yield hint
            raise
        # The reply is complete: a body that then drops or stalls ends it (ChatChunks.end).
    if not started:  # an empty 200 body: still a stream that opened
        yield StreamStart(sent_at, state.opened_at or _clock(), model, state.request_id)
    yield chunks.end(_clock(), cut=state.cut)


async def _rehearsal(base_url: str) -> None:
    """One request through a throwaway httpx2 client (see :mod:`._rehearsal`)."""
    async with http_client() as http:
        async for _ in stream_chat_sse(
            http, base_url=base_url, api_key=None, model=MODEL, messages=MESSAGES
        ):
            pass
