"""The transport edges: generic SSE over httpx2 (scripted responses), error translation, and
the first request's one-time setup done before its clock starts.

Scripted ``httpx2.MockTransport`` responses are enough for parsing, headers and the mapping of
third-party exceptions (the loopback tests in tests/test_resilience.py check timing against the
real server). The first-request tests run a fresh process against the real server, with the
transport's clock injected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import anyio
import httpx2
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

import streamkit as sk
from streamkit.events import StreamEnd, StreamStart, TokenDelta
from streamkit.resume import Attempt
from streamkit.server import RunningServer
from streamkit.transports._common import parse_retry_after, read_error, status_error
from streamkit.transports._rehearsal import rehearse, rehearsed
from streamkit.transports.sse import EventSource, SSEState, iter_sse, stream_chat_sse
from streamkit.transports.ws import (
    WSConnection,
    WSStream,
    _handshake_error,
    _message_error,
    ws_url,
)

pytestmark = pytest.mark.anyio

URL = "http://test.invalid/v1"


class Body(httpx2.AsyncByteStream):
    """A response body sent in pieces, optionally cut with an exception at the end."""

    def __init__(self, *pieces: bytes, cut: Exception | None = None) -> None:
        self.pieces = pieces
        self.cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.cut is not None:
            raise self.cut


def sse(*pieces: bytes, cut: Exception | None = None, status: int = 200) -> httpx2.Response:
    return httpx2.Response(
        status, headers={"content-type": "text/event-stream"}, stream=Body(*pieces, cut=cut)
    )


def client(handler: Callable[[httpx2.Request], httpx2.Response]) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


def chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps({"choices": [choice]}).encode()


async def test_iter_sse_sends_last_event_id_and_keeps_the_id_and_retry() -> None:
    seen: list[str | None] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("last-event-id"))
        return sse(b"retry: 250\nid: 7\ndata: a\n\n", b"data: b\n\nid: 8\ndata: c\n\n")

    state = SSEState(last_event_id="6")
    async with client(handler) as http:
        events = [e async for e in iter_sse(http, "GET", URL, state=state)]
    assert seen == ["6"]
    assert [(e.id, e.data) for e in events] == [("7", b"a"), ("7", b"b"), ("8", b"c")]
    assert state.last_event_id == "8" and state.retry == 0.25


async def test_error_statuses_are_typed_with_retry_after() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            429,
            headers={"retry-after": "3"},
            json={"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
        )

    async with client(handler) as http:
        with pytest.raises(sk.RateLimitError) as info:
            [e async for e in iter_sse(http, "GET", URL)]
    error = info.value
    assert error.retry_after == 3 and error.code == "rate_limit_exceeded"
    assert "429 from http://test.invalid/v1: slow down" in error.message


async def test_a_body_that_is_not_an_event_stream_is_a_protocol_error() -> None:
    async with client(lambda request: httpx2.Response(200, json={"ok": True})) as http:
        with pytest.raises(sk.ProtocolError, match="not text/event-stream"):
            [e async for e in iter_sse(http, "GET", URL)]


async def test_event_source_reconnects_with_the_last_id_after_the_retry_delay() -> None:
    requests: list[tuple[float, str | None]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        requests.append((time.monotonic(), request.headers.get("last-event-id")))
        if len(requests) == 1:
            cut = httpx2.RemoteProtocolError("peer closed connection")
            return sse(b"retry: 200\nid: 1\ndata: one\n\nid: 2\ndata: two\n\n", cut=cut)
        return sse(b"id: 3\ndata: three\n\n")

    policy = sk.RetryPolicy(base_delay=0.0, max_delay=0.0)
    async with (
        client(handler) as http,
        EventSource(URL, client=http, policy=policy) as source,
    ):
        data = [event.data async for event in source]
    assert data == [b"one", b"two", b"three"]
    assert [last_id for _, last_id in requests] == [None, "2"]
    assert requests[1][0] - requests[0][0] >= 0.2 - 0.01  # the server's retry: is the floor
    assert source.reconnects == 1 and source.last_event_id == "3" and source.retry == 0.2


async def test_event_source_gives_up_per_its_policy() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return sse(b"id: 1\ndata: x\n\n", cut=httpx2.ReadError("reset"))

    async with EventSource(URL, policy=sk.RetryPolicy.none()) as source:
        source._client = client(handler)
        with pytest.raises(sk.StreamInterrupted, match="dropped mid-stream"):
            [event async for event in source]
        await source._client.aclose()


async def test_chat_over_generic_sse_numbers_tokens_by_id_and_reports_them() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(request.content)
        assert request.headers["authorization"] == "Bearer k"
        assert request.headers["last-event-id"] == "4"
        return sse(
            b"data: " + chunk("") + b"\n\n",
            b"id: 5\ndata: " + chunk("five") + b"\n\n",
            b"id: 6\ndata: " + chunk("six") + b"\n\n",
            b"data: " + chunk(None, "stop") + b"\n\ndata: [DONE]\n\n",
        )

    attempt = Attempt(2, resume_after=4, last_event_id="4")
    async with client(handler) as http:
        events = [
            e
            async for e in stream_chat_sse(
                http,
                base_url=URL,
                api_key="k",
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                params={"max_tokens": 9, "extra_body": {"streamkit": {"length": 7}}},
                attempt=attempt,
            )
        ]
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
    tokens = [e for e in events if isinstance(e, TokenDelta)]
    assert [(t.index, t.text) for t in tokens] == [(5, "five"), (6, "six")]
    assert tokens[-1].event_id == "6" and attempt.event_id is None  # on the event, not the attempt
    assert b'"max_tokens":9' in bodies[0].replace(b" ", b"")
    assert b'"streamkit":{"length":7}' in bodies[0].replace(b" ", b"")


async def test_chat_over_generic_sse_without_ids_counts_locally() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        assert "last-event-id" not in request.headers
        return sse(
            b"id: 40\ndata: " + chunk("a") + b"\n\n",
            b"id: 41\ndata: " + chunk("b") + b"\n\n",
            cut=httpx2.RemoteProtocolError("gone"),
        )

    attempt = Attempt(1, use_ids=False)
    tokens: list[TokenDelta] = []
    async with client(handler) as http:
        with pytest.raises(sk.StreamInterrupted) as info:
            async for e in stream_chat_sse(
                http, base_url=URL, api_key=None, model="m", messages=[], attempt=attempt
            ):
                if isinstance(e, TokenDelta):
                    tokens.append(e)
    assert [t.index for t in tokens] == [0, 1] and [t.event_id for t in tokens] == [None, None]
    assert info.value.partial_text == "ab"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx2.ConnectError("refused"), sk.ConnectError),
        (httpx2.ConnectTimeout("slow"), sk.ConnectError),
        (httpx2.UnsupportedProtocol("ftp"), sk.ConnectError),
        (httpx2.ReadTimeout("slow"), sk.ReadTimeout),
        (httpx2.RemoteProtocolError("peer closed"), sk.StreamInterrupted),
        (httpx2.ReadError("reset"), sk.StreamInterrupted),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
def test_httpx2_errors_are_translated(exc: Exception, kind: type[sk.StreamkitError]) -> None:
    error = read_error(exc, URL, "partial")
    assert type(error) is kind and error.partial_text == "partial" and URL in error.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, sk.BadRequestError),
        (401, sk.AuthError),
        (403, sk.AuthError),
        (404, sk.NotFoundError),
        (413, sk.APIStatusError),
        (422, sk.BadRequestError),
        (429, sk.RateLimitError),
        (500, sk.ServerError),
        (503, sk.ServerError),
    ],
)
def test_statuses_map_to_one_class_on_every_wire(
    status: int, kind: type[sk.APIStatusError]
) -> None:
    http = status_error(status, "no", url=URL)
    ws = _message_error(
        {"type": "error", "id": "s1", "status": status, "error": {"message": "no"}}, URL, ""
    )
    response = Response(status, "Reason", Headers(), b"")
    handshake = _handshake_error(InvalidStatus(response), URL)
    assert type(http) is type(ws) is type(handshake) is kind


def test_ws_messages_and_handshakes_carry_retry_after_and_the_message() -> None:
    error = _message_error(
        {"status": 429, "error": {"message": "busy", "code": "rate"}, "retry_after": 2}, URL, "x"
    )
    assert isinstance(error, sk.RateLimitError) and error.retry_after == 2.0
    assert error.partial_text == "x" and "busy" in error.message and error.code == "rate"
    headers = Headers({"Retry-After": "5"})
    body = b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
    refused = _handshake_error(InvalidStatus(Response(401, "Unauthorized", headers, body)), URL)
    assert isinstance(refused, sk.AuthError) and refused.code == "invalid_api_key"
    assert "Incorrect API key" in refused.message and "OPENAI_API_KEY" in refused.message


async def test_a_closed_socket_interrupts_each_stream_with_its_own_error() -> None:
    conn = WSConnection("ws://test.invalid/v1/ws")
    a, b = WSStream(conn, "a"), WSStream(conn, "b")
    conn._streams.update({"a": a, "b": b})
    conn._fail(conn._interrupted(ConnectionClosedError(Close(1011, "drop"), None)))
    errors = []
    for stream in (a, b):
        with pytest.raises(sk.StreamInterrupted) as info:
            await stream.get()
        errors.append(info.value)
    assert errors[0] is not errors[1]  # each stream sets its own partial text
    assert conn.closed and "closed mid-stream" in errors[0].message


def test_ws_url_and_retry_after_parsing() -> None:
    assert ws_url("http://h:1/v1/") == "ws://h:1/v1/ws"
    assert ws_url("https://h/v1") == "wss://h/v1/ws"
    assert parse_retry_after("1.5") == 1.5 and parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


# -- the first request's clock -------------------------------------------------------------------

# Run in a fresh process, so nothing the first request needs is imported or cached yet: the
# transport's clock is replaced by one that notes the modules loaded at each reading, and the
# script prints the modules that were first imported between the request's send time
# (StreamStart.sent_at) and its end: one-time setup the first request's TTFB and TTFT counted.
FIRST_REQUEST = """
import asyncio, json, sys, time
import streamkit as sk
from streamkit.events import StreamEnd, StreamStart
from streamkit.transports import fast_sse, openai_sse, sse, ws

url, transport = sys.argv[1], sys.argv[2]
module = {"sse": openai_sse, "generic-sse": sse, "fast-sse": fast_sse, "ws": ws}[transport]
loaded = {}

def clock():
    now = time.perf_counter()
    loaded[now] = frozenset(sys.modules)
    return now

module._clock = clock

async def main():
    client = sk.Client(url, model="sim-small", transport=transport, retry=None)
    sent = after = None
    body = {"streamkit": {"ttft": 0, "jitter": 0, "length": 3}}
    async for event in client.events("hi", extra_body=body):
        if isinstance(event, StreamStart):
            sent = event.sent_at
        elif isinstance(event, StreamEnd):
            after = frozenset(sys.modules)
    await client.aclose()
    print(json.dumps(sorted(after - loaded[sent])))

asyncio.run(main())
"""


@pytest.mark.parametrize("transport", ["sse", "generic-sse", "fast-sse", "ws"])
def test_the_first_requests_setup_is_done_before_its_clock_starts(
    server: RunningServer, transport: str
) -> None:
    script = [sys.executable, "-c", FIRST_REQUEST, server.base_url, transport]
    done = subprocess.run(script, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


async def test_concurrent_first_requests_wait_for_one_rehearsal() -> None:
    calls: list[str] = []
    started = anyio.Event()

    async def request(base_url: str) -> None:
        calls.append(base_url)
        started.set()
        await anyio.sleep(0.05)

    kind = f"test-{uuid.uuid4()}"
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(rehearse, kind, request)
        await started.wait()
        assert not rehearsed(kind)  # under way: the callers are still waiting
    assert rehearsed(kind) and len(calls) == 1
    assert calls[0].startswith("http://127.0.0.1:") and calls[0].endswith("/v1")
    await rehearse(kind, request)  # once per process
    assert len(calls) == 1


async def test_a_failed_rehearsal_is_not_retried_and_raises_nothing() -> None:
    calls = 0

    async def request(base_url: str) -> None:
        nonlocal calls
        calls += 1
        raise OSError("no loopback sockets here")

    kind = f"test-{uuid.uuid4()}"
    await rehearse(kind, request)
    await rehearse(kind, request)
    assert calls == 1 and rehearsed(kind)
