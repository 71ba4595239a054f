"""``transport="fast-sse"``: the asyncio + httptools SSE client, over real loopback sockets.

Two servers: the bundled one (the events must match ``generic-sse`` exactly, keep-alive, early
close, backpressure), and a small raw asyncio server below that answers each request with
scripted bytes, for what the bundled server never sends: content-length and close-delimited
bodies, ``Connection: close``, chunk extensions, a 1xx before the answer, heads and bodies split
at awkward places, error bodies, connections that die before answering, TLS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from _util import wait_for

import streamkit as sk
from streamkit.events import Event, ReconnectDelay, StreamEnd, StreamStart, TokenDelta
from streamkit.resume import Attempt
from streamkit.server import RunningServer
from streamkit.transports import fast_sse
from streamkit.transports.fast_sse import HIGH_WATER, FastSSEPool, iter_sse, stream_chat_fast_sse
from streamkit.transports.sse import SSEState

pytestmark = pytest.mark.anyio

SIM = {"ttft": 0.0, "tokens_per_second": 2000, "jitter": 0.0}

# -- the raw server ------------------------------------------------------------------------------

CLOSE = "close"  # a reply step: close the connection here
HANG = "hang"  # a reply step: send nothing more until the client closes the connection
Step = bytes | float | str | asyncio.Event
# bytes are written; a float pauses, so what follows is another read; an Event waits for the test


@dataclass
class Seen:
    """One request as the raw server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # 1 for the first connection the server accepted, …


class RawServer:
    """A loopback HTTP/1.1 server answering each request with the next scripted reply."""

    def __init__(self) -> None:
        self.replies: list[list[Step]] = []
        self.seen: list[Seen] = []
        self.connections = 0
        self.client_closed = 0  # connections the client ended (EOF while waiting for a request)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.scheme = "http"

    async def start(self, context: ssl.SSLContext | None = None) -> None:
        self.scheme = "https" if context is not None else "http"
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}/v1"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()  # ends every handler (a cancelled one would log an error on 3.11)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.client_closed += 1
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(method, target, headers, body, number))
                for step in self.replies.pop(0):
                    if step == CLOSE:
                        return
                    if step == HANG:
                        while await reader.read(1024):
                            pass
                        self.client_closed += 1
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    elif isinstance(step, asyncio.Event):
                        await step.wait()
                    else:
                        assert isinstance(step, bytes)
                        writer.write(step)
                        await writer.drain()
        except ConnectionError:
            self.client_closed += 1
        finally:
            writer.close()
            self._tasks.discard(task)
            self._writers.discard(writer)


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    await server.start()
    yield server
    await server.stop()


def frame(content: str | None = None, finish: str | None = None, ident: int | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    data = json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    return (b"" if ident is None else b"id: %d\n" % ident) + b"data: " + data.encode() + b"\n\n"


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
REPLY = (
    frame("a", ident=0) + frame("b", ident=1) + frame(None, "stop") + USAGE + b"data: [DONE]\n\n"
)


def chunk(data: bytes, extension: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def head(status: str = "200 OK", *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


SSE = "content-type: text/event-stream"
CHUNKED = "transfer-encoding: chunked"


def chunked_reply(*extra: str) -> list[Step]:
    return [head("200 OK", SSE, CHUNKED, *extra), chunk(REPLY), b"0\r\n\r\n"]


def client(url: str, **options: Any) -> sk.Client:
    options.setdefault("retry", None)
    return sk.Client(url, api_key="k", model="m", transport="fast-sse", **options)


async def collect(client: sk.Client, **request: Any) -> list[Event]:
    return [event async for event in client.events("hi", **request)]


def text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenDelta))


# -- against the bundled server ------------------------------------------------------------------


async def test_the_events_are_those_of_generic_sse(server: RunningServer) -> None:
    seen: dict[str, list[Event]] = {}
    for transport in ("generic-sse", "fast-sse"):
        async with sk.Client(server.base_url, model="sim-small", transport=transport) as c:
            seen[transport] = await collect(c, seed=7, extra_body={"streamkit": {**SIM}})

    def shape(events: list[Event]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for e in events:
            if isinstance(e, TokenDelta):
                out.append(("token", e.index, e.text))
            elif isinstance(e, StreamEnd):
                out.append(("end", e.finish_reason, e.usage))
            else:
                assert isinstance(e, StreamStart)
                out.append(("start", e.model, e.request_id is not None))
        return out

    assert shape(seen["fast-sse"]) == shape(seen["generic-sse"])
    assert len(seen["fast-sse"]) > 10
    end = seen["fast-sse"][-1]
    assert isinstance(end, StreamEnd) and end.usage is not None and end.usage.completion_tokens > 0


async def test_keep_alive_reuses_a_connection_per_concurrent_stream(server: RunningServer) -> None:
    body = {"streamkit": {**SIM, "length": 5}}
    async with sk.Client(server.base_url, model="sim-small", transport="fast-sse") as c:
        for _ in range(3):
            assert text(await collect(c, extra_body=body))
        pool = c.fast_sse_pool()
        assert pool.connections_opened == 1 and pool.idle_connections == 1
        results = await asyncio.gather(*(collect(c, extra_body=body) for _ in range(4)))
        assert all(text(r) for r in results)
        assert pool.connections_opened == 4 and pool.idle_connections == 4
    assert pool.idle_connections == 0  # aclose closed them


async def test_leaving_early_closes_the_connection(server: RunningServer) -> None:
    stats = server.app.stats
    disconnected = stats.streams_disconnected
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 100, "length": 500}}
    async with sk.Client(server.base_url, model="sim-small", transport="fast-sse") as c:
        async with c.stream("long", extra_body=body) as events:
            async for event in events:
                if isinstance(event, TokenDelta) and event.index == 3:
                    break
        await wait_for(lambda: stats.streams_disconnected == disconnected + 1)
        pool = c.fast_sse_pool()
        assert pool.idle_connections == 0  # never returned to the pool
        task = c.start_chat("long", view=None, extra_body=body)
        await wait_for(lambda: task.result.chunks >= 3)
        task.stop()
        assert (await task).status == "stopped"
        await wait_for(lambda: stats.streams_disconnected == disconnected + 2)
        assert pool.idle_connections == 0
        assert text(await collect(c, extra_body={"streamkit": {**SIM, "length": 3}}))


async def test_a_lagging_consumer_pauses_reading_then_gets_everything(
    server: RunningServer,
) -> None:
    length = 8000
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 100_000, "length": length}}
    async with sk.Client(server.base_url, model="sim-small", transport="fast-sse") as c:
        tokens = 0
        async for event in c.events("many", seed=1, extra_body=body):
            if isinstance(event, TokenDelta):
                if tokens == 0:
                    [conn] = c.fast_sse_pool()._open
                    await wait_for(lambda: conn._paused)  # noqa: B023  # awaited here
                    held = conn._pending
                    assert HIGH_WATER < held < length // 2
                    assert held == sum(len(events) for _, events in conn.reads)
                    await asyncio.sleep(0.2)
                    assert conn._pending == held  # not reading while paused
                assert event.index == tokens
                tokens += 1
    assert tokens == length


async def test_a_wrong_key_is_an_auth_error_and_the_connection_is_kept(
    auth_server: RunningServer,
) -> None:
    async with sk.Client(
        auth_server.base_url, api_key="wrong", model="sim-small", transport="fast-sse"
    ) as c:
        for _ in range(2):
            with pytest.raises(sk.AuthError, match="OPENAI_API_KEY"):
                await collect(c)
        assert c.fast_sse_pool().connections_opened == 1


# -- against the raw server ----------------------------------------------------------------------


async def test_the_request_says_what_it_wants(raw: RawServer) -> None:
    raw.replies.append(chunked_reply())
    async with client(raw.url()) as c:
        events = await collect(c, max_tokens=9, extra_headers={"X-Trace": "t1"})
    assert text(events) == "ab"
    [seen] = raw.seen
    assert (seen.method, seen.target) == ("POST", "/v1/chat/completions")
    assert seen.headers["host"] == f"127.0.0.1:{raw.port}"
    assert seen.headers["authorization"] == "Bearer k"
    assert seen.headers["user-agent"] == f"streamkit/{sk.__version__}"
    assert seen.headers["accept"] == "text/event-stream"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-trace"] == "t1" and "last-event-id" not in seen.headers
    sent = json.loads(seen.body)
    assert sent["stream"] is True and sent["max_tokens"] == 9 and sent["model"] == "m"
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_resumed_attempt_sends_its_last_event_id_and_learns_retry(raw: RawServer) -> None:
    body = b"retry: 1500\n\n" + frame("five", ident=5) + frame("six", ident=6)
    body += frame(None, "stop") + b"data: [DONE]\n\n"
    raw.replies.append([head("200 OK", SSE, CHUNKED), chunk(body), b"0\r\n\r\n"])
    attempt = Attempt(2, resume_after=4, last_event_id="4")
    pool = FastSSEPool(5.0)
    events = [
        e
        async for e in stream_chat_fast_sse(
            pool, base_url=raw.url(), api_key=None, model="m", messages=[], attempt=attempt
        )
    ]
    await pool.aclose()
    assert raw.seen[0].headers["last-event-id"] == "4"
    assert "authorization" not in raw.seen[0].headers
    tokens = [e for e in events if isinstance(e, TokenDelta)]
    assert [(t.index, t.text) for t in tokens] == [(5, "five"), (6, "six")]
    assert tokens[-1].event_id == "6"
    assert [e.delay for e in events if isinstance(e, ReconnectDelay)] == [1.5]
    assert attempt.event_id is None and attempt.reconnect_delay is None  # never written


async def test_iter_sse_keeps_ids_and_retry_like_generic_sse(raw: RawServer) -> None:
    body = b"retry: 250\nid: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n"
    raw.replies.append([head("200 OK", SSE, f"content-length: {len(body)}"), body])
    state = SSEState(last_event_id="6")
    pool = FastSSEPool(5.0)
    events = [e async for e in iter_sse(pool, "GET", raw.url() + "/events", state=state)]
    await pool.aclose()
    assert raw.seen[0].method == "GET" and raw.seen[0].headers["last-event-id"] == "6"
    assert [(e.id, e.data) for e in events] == [("7", b"a"), ("7", b"b"), ("8", b"c")]
    assert state.last_event_id == "8" and state.retry == 0.25


class StoppedClock:
    """A clock that moves only when the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_tokens_are_stamped_when_their_bytes_arrive_not_when_the_consumer_resumes(
    raw: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The consumer holds a token while two more reads arrive (b at 150, the end at 160), and
    # resumes at 300: a loop busy with other streams resumes it late. The times must be the
    # reads' times, from the one injected clock, not the resume's.
    go_b, go_end = asyncio.Event(), asyncio.Event()
    end = frame(None, "stop") + USAGE + b"data: [DONE]\n\n"
    raw.replies.append(
        [
            head("200 OK", SSE, CHUNKED),
            chunk(frame("a", ident=0)),
            go_b,
            chunk(frame("b", ident=1)),
            go_end,
            chunk(end) + b"0\r\n\r\n",
        ]
    )
    clock = StoppedClock(100.0)
    monkeypatch.setattr(fast_sse, "_clock", clock)
    pool = FastSSEPool(5.0)
    stream = stream_chat_fast_sse(pool, base_url=raw.url(), api_key=None, model="m", messages=[])
    try:
        start, a = await anext(stream), await anext(stream)
        assert isinstance(start, StreamStart) and start.sent_at == start.time == 100.0
        assert isinstance(a, TokenDelta) and (a.text, a.time) == ("a", 100.0)
        [conn] = pool._open
        clock.now = 150.0
        go_b.set()
        await wait_for(lambda: conn.reads)  # b was read while the consumer held a
        clock.now = 160.0
        go_end.set()
        await wait_for(lambda: conn.complete)
        assert [at for at, _ in conn.reads] == [150.0, 160.0]  # one batch of two reads
        clock.now = 300.0
        rest = [event async for event in stream]
    finally:
        go_b.set()  # a failed assertion must not leave the server's handler waiting
        go_end.set()
        await pool.aclose()
    assert [(e.text, e.time) for e in rest if isinstance(e, TokenDelta)] == [("b", 150.0)]
    last = rest[-1]
    assert isinstance(last, StreamEnd) and last.time == 160.0 and last.finish_reason == "stop"


@pytest.mark.parametrize(
    ("reply", "reused"),
    [
        (chunked_reply(), True),
        ([head("200 OK", SSE, f"content-length: {len(REPLY)}"), REPLY], True),
        ([head("200 OK", SSE), REPLY, CLOSE], False),  # close-delimited
        (chunked_reply("connection: close"), False),
        (
            [
                head("200 OK", SSE, CHUNKED),
                chunk(REPLY[:50], b";n=v"),
                chunk(REPLY[50:], b";x"),
                b"0;end=1\r\n\r\n",
            ],
            True,
        ),
        ([head("103 Early Hints", "link: </a>; rel=preload"), *chunked_reply()], True),
        ([*chunked_reply(), b"HTTP/1.1 200 OK\r\n"], False),  # bytes past the end: out of step
    ],
    ids=[
        "chunked",
        "content-length",
        "close-delimited",
        "connection-close",
        "chunk-ext",
        "1xx",
        "bytes-past-the-end",
    ],
)
async def test_every_kind_of_body_streams_and_reuse_follows_the_server(
    raw: RawServer, reply: list[Step], reused: bool
) -> None:
    raw.replies += [reply, chunked_reply()]
    async with client(raw.url()) as c:
        first, second = await collect(c), await collect(c)
    assert text(first) == text(second) == "ab"
    end = first[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.usage is not None and end.usage.completion_tokens == 2
    assert [s.connection for s in raw.seen] == ([1, 1] if reused else [1, 2])


async def test_bytes_split_anywhere_decode_the_same(raw: RawServer) -> None:
    whole = head("200 OK", SSE, CHUNKED, "x-request-id: r-1") + chunk(REPLY) + b"0\r\n\r\n"
    cuts = [5, 13, 30, 41, 60, 75, 120, 121, 200, len(whole) - 3]  # in the status line, a
    # header name and value, the chunk size line, mid-frame, inside the CRLFs at the end
    steps: list[Step] = []
    for start, end in zip([0, *cuts], [*cuts, len(whole)], strict=True):
        steps += [whole[start:end], 0.02]
    raw.replies += [steps, chunked_reply()]
    async with client(raw.url()) as c:
        events = await collect(c)
        assert text(await collect(c)) == "ab"  # and the connection was left in step
    start = events[0]
    assert isinstance(start, StreamStart) and start.request_id == "r-1"
    assert text(events) == "ab" and [s.connection for s in raw.seen] == [1, 1]


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "words"),
    [
        (
            "401 Unauthorized",
            ["content-type: application/json"],
            b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}',
            sk.AuthError,
            "401 from http://127.0.0.1:{port}/v1/chat/completions: Incorrect API key",
        ),
        (
            "429 Too Many Requests",
            ["content-type: application/json", "retry-after: 3"],
            b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}',
            sk.RateLimitError,
            "slow down (the server asks to wait 3 s)",
        ),
        ("500 Internal Server Error", ["content-type: text/plain"], b"", sk.ServerError, "500 "),
        ("503 Busy", ["content-type: text/plain"], b"try later\n", sk.ServerError, "try later"),
    ],
    ids=["401", "429", "500-empty", "503-text"],
)
async def test_error_statuses_are_typed_from_their_body(
    raw: RawServer,
    status: str,
    headers: list[str],
    body: bytes,
    kind: type[sk.APIStatusError],
    words: str,
) -> None:
    raw.replies += [
        [head(status, *headers, f"content-length: {len(body)}"), body],
        chunked_reply(),
    ]
    async with client(raw.url()) as c:
        with pytest.raises(kind) as info:
            await collect(c)
        assert text(await collect(c)) == "ab"
    error = info.value
    assert words.format(port=raw.port) in error.message
    assert error.status_code == int(status[:3])
    if kind is sk.RateLimitError:
        assert error.retry_after == 3 and error.code == "rate_limit_exceeded"
    if status.startswith("500"):
        assert "Internal Server Error" in error.message  # the reason phrase stands in
    assert [s.connection for s in raw.seen] == [1, 1]  # an error body read whole keeps it


async def test_a_body_that_is_not_an_event_stream_is_a_protocol_error(raw: RawServer) -> None:
    raw.replies.append([head("200 OK", "content-type: application/json", CHUNKED), HANG])
    async with client(raw.url()) as c:
        with pytest.raises(sk.ProtocolError, match="not text/event-stream"):
            await collect(c)
        assert c.fast_sse_pool().idle_connections == 0
    await wait_for(lambda: raw.client_closed == 1)


async def test_a_connection_cut_mid_body_keeps_the_partial_text(raw: RawServer) -> None:
    raw.replies.append(
        [head("200 OK", SSE, CHUNKED), chunk(frame("a") + frame("b") + b'data: {"ch'), CLOSE]
    )
    async with client(raw.url()) as c:
        with pytest.raises(sk.StreamInterrupted, match="dropped mid-stream") as info:
            await collect(c)
    assert info.value.partial_text == "ab" and info.value.url is not None


async def test_a_clean_end_mid_frame_or_without_done_is_interrupted(raw: RawServer) -> None:
    raw.replies += [
        [head("200 OK", SSE, CHUNKED), chunk(frame("a") + b"data: {"), b"0\r\n\r\n"],
        [head("200 OK", SSE, CHUNKED), chunk(frame("a")), b"0\r\n\r\n"],
    ]
    async with client(raw.url()) as c:
        with pytest.raises(sk.StreamInterrupted, match="mid-frame") as cut:
            await collect(c)
        with pytest.raises(sk.StreamInterrupted, match="no finish_reason") as short:
            await collect(c)
    assert cut.value.partial_text == short.value.partial_text == "a"


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(
    raw: RawServer,
) -> None:
    # The second request lands on a pooled connection the server then closes unanswered (the
    # race of an idle timeout): it is sent again on a new connection. A fresh connection that
    # closes unanswered is not retried.
    raw.replies += [chunked_reply(), [CLOSE], chunked_reply(), [CLOSE]]
    async with client(raw.url()) as c:
        assert text(await collect(c)) == "ab"
        assert text(await collect(c)) == "ab"
        assert [s.connection for s in raw.seen] == [1, 1, 2]
        c.fast_sse_pool()._idle.clear()  # the next request must open a connection
        with pytest.raises(sk.StreamInterrupted, match="before sending a response"):
            await collect(c)
    assert [s.connection for s in raw.seen] == [1, 1, 2, 3]


async def test_an_idle_connection_the_server_closes_is_forgotten(raw: RawServer) -> None:
    raw.replies += [[*chunked_reply(), CLOSE], chunked_reply()]
    async with client(raw.url()) as c:
        assert text(await collect(c)) == "ab"
        pool = c.fast_sse_pool()
        await wait_for(lambda: pool.idle_connections == 0)
        assert text(await collect(c)) == "ab"
    assert [s.connection for s in raw.seen] == [1, 2]


async def test_silence_is_a_read_timeout(raw: RawServer) -> None:
    raw.replies += [
        [HANG],  # no headers
        [head("200 OK", SSE, CHUNKED), chunk(frame("a")), HANG],  # headers and one token
    ]
    async with client(raw.url(), timeout=0.3) as c:
        with pytest.raises(sk.ReadTimeout, match="within the read timeout"):
            await collect(c)
        with pytest.raises(sk.ReadTimeout) as info:
            await collect(c)
        assert c.fast_sse_pool().idle_connections == 0
    assert info.value.partial_text == "a"
    assert [s.connection for s in raw.seen] == [1, 2]  # a timed-out request is not resent


async def test_a_refused_connection_is_a_connect_error_naming_the_url() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}/v1") as c:
        with pytest.raises(sk.ConnectError, match=f"127.0.0.1:{port}/v1/chat/completions"):
            await collect(c)


async def test_retries_resume_through_the_resilience_layer(raw: RawServer) -> None:
    cut = [head("200 OK", SSE, CHUNKED), chunk(frame("a", ident=0) + frame("b", ident=1)), CLOSE]
    rest = frame("c", ident=2) + frame(None, "stop") + b"data: [DONE]\n\n"
    raw.replies += [cut, [head("200 OK", SSE, CHUNKED), chunk(rest), b"0\r\n\r\n"]]
    policy = sk.RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)
    async with client(raw.url(), retry=policy) as c:
        result = await c.chat("hi", view=None)
    assert result.ok and result.text == "abc" and result.retries == 1
    assert raw.seen[1].headers["last-event-id"] == "1"


async def test_closing_the_client_closes_its_connections(raw: RawServer) -> None:
    raw.replies.append(chunked_reply())
    async with client(raw.url()) as c:
        assert text(await collect(c)) == "ab"
        assert c.fast_sse_pool().idle_connections == 1
    await wait_for(lambda: raw.client_closed == 1)


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, trustme.LeafCert]:
    """A test CA's certificate file, and a certificate it issued for localhost and 127.0.0.1."""
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file, ca.issue_cert("localhost", "127.0.0.1")


async def test_https_verifies_the_server_by_its_name(
    certificate: tuple[Path, trustme.LeafCert], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, leaf = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    server = RawServer()
    await server.start(context)
    try:
        server.replies += [chunked_reply(), chunked_reply()]
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the default context trusts it
        async with client(server.url("localhost")) as c:
            assert text(await collect(c)) == "ab"
            assert text(await collect(c)) == "ab"
        assert server.seen[0].headers["host"] == f"localhost:{server.port}"
        assert [s.connection for s in server.seen] == [1, 1]
        monkeypatch.delenv("SSL_CERT_FILE")
        async with client(server.url("localhost")) as c:
            with pytest.raises(sk.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await collect(c)
    finally:
        await server.stop()
