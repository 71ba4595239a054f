"""Retry, resume and timeouts against the bundled server, with faults from docs/protocol.md.

Every scenario runs over real loopback sockets, on each transport that can carry it: the openai
SDK's SSE (``sse``), streamkit's own SSE over httpx2 (``generic-sse``) and over asyncio +
httptools (``fast-sse``), and the WebSocket (``ws``). A fault-free run of the same request
(same prompt and seed) is the reference text.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from _util import wait_for

import streamkit as sk
from streamkit.events import Event, StreamRetry, StreamStart, TokenDelta
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

TRANSPORTS = ["sse", "generic-sse", "fast-sse", "ws"]
SIM = {"ttft": 0.0, "tokens_per_second": 400, "length": 30, "jitter": 0.0}
FAST = sk.RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
PROMPT = "Explain how a dropped stream resumes"


def body(*faults: dict[str, Any], **sim: Any) -> dict[str, Any]:
    return {"streamkit": {**SIM, **sim, "faults": list(faults)}}


async def reference(server: RunningServer, **sim: Any) -> str:
    async with sk.Client(server.base_url, model="sim-small", retry=None) as client:
        result = await client.chat(PROMPT, view=None, seed=5, extra_body=body(**sim))
    assert result.ok
    return result.text


async def run(
    server: RunningServer, transport: str, *faults: dict[str, Any], **options: Any
) -> tuple[sk.StreamResult, list[Event]]:
    """Stream PROMPT with ``faults``; the result and every event, also when it fails."""
    options.setdefault("retry", FAST)
    events: list[Event] = []

    class Recorder:
        def on_event(self, event: Event) -> None:
            events.append(event)

        def finish(self, result: sk.StreamResult) -> None:
            pass

    sim = options.pop("sim", {})
    async with sk.Client(
        server.base_url, model="sim-small", transport=transport, **options
    ) as client:
        result = await client.chat(
            PROMPT,
            view=None,
            seed=5,
            raise_on_error=False,
            observers=[Recorder()],
            extra_body=body(*faults, **sim),
        )
    return result, events


def retries(events: list[Event]) -> list[StreamRetry]:
    return [e for e in events if isinstance(e, StreamRetry)]


def indices(events: list[Event]) -> list[int]:
    return [e.index for e in events if isinstance(e, TokenDelta)]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mid_frame", [False, True], ids=["clean", "mid_frame"])
async def test_a_drop_resumes_to_the_identical_text(
    server: RunningServer, transport: str, mid_frame: bool
) -> None:
    expected = await reference(server)
    sent = server.app.stats.tokens_sent
    result, events = await run(
        server, transport, {"kind": "drop", "at": 12, "mid_frame": mid_frame, "attempts": 1}
    )
    assert result.ok and result.text == expected
    assert indices(events) == list(range(30))  # nothing twice, nothing missing
    # A real resume: the server was asked to continue (Last-Event-ID / resume_after) and sent
    # each token once in all, 12 before the drop and 18 after it.
    assert server.app.stats.tokens_sent - sent == 30
    [retry] = retries(events)
    assert isinstance(retry.error, sk.StreamInterrupted)
    assert retry.resume_after == 11 and retry.discarded == 0
    assert result.retries == 1 and result.output_tokens == 30


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_repeated_drops_resume_each_time(server: RunningServer, transport: str) -> None:
    expected = await reference(server)
    result, events = await run(
        server,
        transport,
        {"kind": "drop", "at": 5, "attempts": 1},
        {"kind": "drop", "at": 17, "attempts": 2},
        {"kind": "drop", "at": 29, "mid_frame": True, "attempts": 3},
    )
    assert result.ok and result.text == expected
    assert [r.resume_after for r in retries(events)] == [4, 16, 28]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_drop_on_every_attempt_gives_up_with_the_partial_text(
    server: RunningServer, transport: str
) -> None:
    expected = await reference(server)
    result, events = await run(server, transport, {"kind": "drop", "at": 9})
    assert result.status == "failed" and isinstance(result.error, sk.StreamInterrupted)
    assert len(retries(events)) == FAST.max_attempts - 1
    assert result.text == result.error.partial_text == expected[: len(result.text)]
    assert len(result.text) > 0 and result.chunks == 9


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_429_waits_at_least_its_retry_after(server: RunningServer, transport: str) -> None:
    expected = await reference(server)
    result, events = await run(
        server, transport, {"kind": "status", "code": 429, "retry_after": 0.4, "attempts": 1}
    )
    assert result.ok and result.text == expected
    [retry] = retries(events)
    assert isinstance(retry.error, sk.RateLimitError) and retry.error.retry_after == 0.4
    assert retry.delay >= 0.4
    second = [e for e in events if isinstance(e, StreamStart)][-1]
    assert second.sent_at - retry.time >= 0.4 - 0.01  # the loop may wake a hair early


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("code", [500, 503])
async def test_server_errors_are_retried(server: RunningServer, transport: str, code: int) -> None:
    expected = await reference(server)
    result, events = await run(server, transport, {"kind": "status", "code": code, "attempts": 2})
    assert result.ok and result.text == expected
    assert [type(r.error) for r in retries(events)] == [sk.ServerError, sk.ServerError]
    assert [r.error.status_code for r in retries(events)] == [code, code]  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_wrong_key_is_never_retried(auth_server: RunningServer, transport: str) -> None:
    errors = auth_server.app.stats.errors
    async with sk.Client(
        auth_server.base_url, api_key="wrong", model="sim-small", transport=transport
    ) as client:
        started = time.monotonic()
        result = await client.chat("hi", view=None, raise_on_error=False)
    assert result.status == "failed" and isinstance(result.error, sk.AuthError)
    assert result.retries == 0 and auth_server.app.stats.errors == errors + 1  # one attempt
    assert "OPENAI_API_KEY" in result.error.message and "wrong" not in result.error.message
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stall_trips_the_idle_timeout_and_resumes(
    server: RunningServer, transport: str
) -> None:
    expected = await reference(server)
    started = time.monotonic()
    result, events = await run(
        server,
        transport,
        {"kind": "stall", "at": 10, "seconds": 20, "attempts": 1},
        idle_timeout=0.3,
    )
    assert result.ok and result.text == expected
    assert time.monotonic() - started < 10  # not the 20 s stall
    [retry] = retries(events)
    assert isinstance(retry.error, sk.IdleTimeout) and retry.resume_after == 9
    assert "no data for 0.3 s after token 9" in retry.error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_short_stall_is_just_a_pause(server: RunningServer, transport: str) -> None:
    expected = await reference(server)
    result, events = await run(
        server, transport, {"kind": "stall", "at": 10, "seconds": 0.2}, idle_timeout=2.0
    )
    assert result.ok and result.text == expected and not retries(events)
    assert max(result.itl) >= 0.15


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_first_token_timeout(server: RunningServer, transport: str) -> None:
    started = time.monotonic()
    result, _ = await run(server, transport, first_token_timeout=0.3, retry=None, sim={"ttft": 20})
    assert result.status == "failed" and isinstance(result.error, sk.FirstTokenTimeout)
    assert "no token within 0.3 s of sending" in result.error.message
    assert result.text == "" and time.monotonic() - started < 10


async def test_a_first_token_timeout_is_retried_like_any_timeout(server: RunningServer) -> None:
    policy = sk.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    result, events = await run(
        server, "sse", first_token_timeout=0.2, retry=policy, sim={"ttft": 20}
    )
    assert isinstance(result.error, sk.FirstTokenTimeout)
    assert len(retries(events)) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_malformed_chunk_fails_fast_by_default(
    server: RunningServer, transport: str
) -> None:
    expected = await reference(server)
    result, events = await run(server, transport, {"kind": "malformed", "at": 8})
    assert result.status == "failed" and isinstance(result.error, sk.ProtocolError)
    assert not retries(events)  # not retryable unless asked for
    assert result.text == expected[: len(result.text)] and result.chunks == 8
    assert "malformed" in result.error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retry_on_protocol_errors_resumes_past_a_malformed_chunk(
    server: RunningServer, transport: str
) -> None:
    expected = await reference(server)
    policy = sk.RetryPolicy(
        max_attempts=3, base_delay=0.01, max_delay=0.01, retry_on=(sk.ProtocolError,)
    )
    result, events = await run(
        server, transport, {"kind": "malformed", "at": 8, "attempts": 1}, retry=policy
    )
    assert result.ok and result.text == expected
    assert [r.resume_after for r in retries(events)] == [7]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("at", [6, None], ids=["mid", "end"])
async def test_no_done_is_an_interruption_that_resumes(
    server: RunningServer, transport: str, at: int | None
) -> None:
    expected = await reference(server)
    fault: dict[str, Any] = {"kind": "no_done", "attempts": 1}
    if at is not None:
        fault["at"] = at
    # Over SSE the body ends without [DONE]; over WebSocket the stream just stops on a live
    # socket, which only the idle timeout can notice.
    result, events = await run(server, transport, fault, idle_timeout=0.5)
    assert result.ok and result.text == expected
    [retry] = retries(events)
    expected_error = sk.IdleTimeout if transport == "ws" else sk.StreamInterrupted
    assert isinstance(retry.error, expected_error)
    assert retry.resume_after == (at - 1 if at is not None else 29)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_restart_without_ids_marks_the_discarded_tokens(
    server: RunningServer, transport: str
) -> None:
    # resume=False makes the client ignore the bundled server's ids, as if it were a real
    # OpenAI endpoint, which sends none: the stream can only start over.
    expected = await reference(server)
    view = sk.ConsoleView(out=(out := _Text()), status=(status := _Text()))
    async with sk.Client(
        server.base_url,
        model="sim-small",
        transport=transport,
        retry=FAST,
        resume=False,
        on_interrupt="restart",
    ) as client:
        result = await client.chat(
            PROMPT,
            view=view,
            seed=5,
            extra_body=body({"kind": "drop", "at": 11, "attempts": 1}),
        )
    assert result.ok and result.text == expected
    assert result.discarded_tokens == 11 and result.retries == 1 and result.chunks == 30
    assert "11 tokens discarded" in result.summary()
    assert result.to_dict()["discarded_tokens"] == 11
    assert "[restarted: 11 tokens discarded]" in out.getvalue()
    assert out.getvalue().endswith(expected + "\n")
    assert "restarting in" in status.getvalue() and "11 tokens discarded" in status.getvalue()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_without_ids_the_default_raises_with_the_partial_text(
    server: RunningServer, transport: str
) -> None:
    expected = await reference(server)
    result, events = await run(
        server, transport, {"kind": "drop", "at": 11, "attempts": 1}, resume=False
    )
    assert result.status == "failed" and isinstance(result.error, sk.StreamInterrupted)
    assert not retries(events) and result.text == expected[: len(result.text)]
    assert result.chunks == 11


async def test_a_concurrency_limit_429_is_waited_out(limited_server: RunningServer) -> None:
    # The server allows one stream at a time per key and answers 429 with Retry-After: 1
    # to the second; the client waits it out and both streams complete.
    slow = {"streamkit": {"ttft": 0.0, "tokens_per_second": 40, "length": 20}}
    policy = sk.RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=0.2)
    async with sk.Client(
        limited_server.base_url, api_key="key-for-429", model="sim-small", retry=policy
    ) as client:
        first = client.start_chat("first", view=None, extra_body=slow)
        await wait_for(lambda: first.result.chunks >= 1)  # the first holds the one slot
        second = client.start_chat("second", view=None, extra_body=slow)
        one, two = await first, await second
    assert one.ok and two.ok and one.retries == 0
    assert two.retries >= 1


async def test_ws_streams_share_one_socket_and_cancel_alone(server: RunningServer) -> None:
    stats = server.app.stats
    connections, cancelled = stats.ws_connections, stats.ws_streams_cancelled
    slow = {"streamkit": {"ttft": 0.0, "tokens_per_second": 100, "length": 60}}
    async with sk.Client(server.base_url, model="sim-small", transport="ws") as client:
        tasks = [client.start_chat(f"stream {i}", view=None, extra_body=slow) for i in range(4)]
        await wait_for(lambda: tasks[1].result.chunks >= 5)
        socket = await client.websocket()
        assert socket.active_streams == 4
        tasks[1].stop()
        results = [await task for task in tasks]
        assert socket.active_streams == 0 and not socket.closed
    assert [r.status for r in results] == ["completed", "stopped", "completed", "completed"]
    assert all(r.chunks == 60 for i, r in enumerate(results) if i != 1)
    assert 5 <= results[1].chunks < 60
    assert stats.ws_connections == connections + 1  # four streams, one socket
    await wait_for(lambda: stats.ws_streams_cancelled == cancelled + 1)  # that one only


async def test_a_ws_drop_interrupts_every_stream_and_each_resumes(server: RunningServer) -> None:
    expected = await reference(server)
    async with sk.Client(server.base_url, model="sim-small", transport="ws", retry=FAST) as c:
        dropping = c.start_chat(
            PROMPT,
            view=None,
            seed=5,
            extra_body=body({"kind": "drop", "at": 15, "attempts": 1}, tokens_per_second=100),
        )
        bystander = c.start_chat(PROMPT, view=None, seed=5, extra_body=body(tokens_per_second=100))
        one, two = await dropping, await bystander
    assert one.ok and two.ok and one.text == two.text == expected
    assert one.retries == 1 and two.retries == 1  # the drop closed the shared socket


async def test_ws_handshake_errors_are_typed(server: RunningServer) -> None:
    async with sk.Client(
        server.base_url.replace("/v1", "/nope"), model="sim-small", transport="ws", retry=None
    ) as client:
        with pytest.raises(sk.NotFoundError):
            await client.chat("hi", view=None)


async def test_ws_refused_connection_is_a_connect_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with sk.Client(
        f"http://127.0.0.1:{port}/v1", model="m", transport="ws", retry=None
    ) as client:
        with pytest.raises(sk.ConnectError, match=str(port)):
            await client.chat("hi", view=None)


async def test_views_say_what_a_retry_is_doing(server: RunningServer) -> None:
    status = _Text()
    view = sk.ConsoleView(out=_Text(), status=status)
    async with sk.Client(server.base_url, model="sim-small", retry=FAST) as client:
        await client.chat(
            PROMPT,
            view=view,
            seed=5,
            extra_body=body({"kind": "drop", "at": 12, "attempts": 1}),
        )
    # A newline first: the text on out was mid-line, and a terminal shows both files.
    assert status.getvalue().startswith("\n[retry] ")
    line = status.getvalue().splitlines()[1]
    assert line.startswith("[retry] connection lost after 12 tokens — resuming in ")
    assert line.endswith("s (2/4)")


def test_client_settings_are_validated() -> None:
    url = "http://127.0.0.1:1/v1"
    with pytest.raises(sk.UsageError, match="transport='carrier-pigeon' is invalid"):
        sk.Client(url, model="m", transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(sk.UsageError, match="retry=3 is invalid: pass a RetryPolicy"):
        sk.Client(url, model="m", retry=3)  # type: ignore[arg-type]
    with pytest.raises(sk.UsageError, match="on_interrupt='ignore' is invalid"):
        sk.Client(url, model="m", on_interrupt="ignore")  # type: ignore[arg-type]
    with pytest.raises(sk.UsageError, match="idle_timeout=0 is invalid"):
        sk.Client(url, model="m", idle_timeout=0)
    with pytest.raises(sk.UsageError, match="first_token_timeout=-1 is invalid"):
        sk.Client(url, model="m", first_token_timeout=-1)


class _Text:
    """A text file that keeps what was written (``io.StringIO`` without the typing noise)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)
