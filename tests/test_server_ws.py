"""The WebSocket endpoint ``/v1/ws`` over real loopback, through the ``websockets`` client.

Each stream's text is checked against what the SSE route sends for the same body, so the two
wires are shown to stream one reply. Timing asserts are one-sided.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from _util import wait_for
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import Frame, Opcode

from streamkit.server import MODELS, RunningServer, create_app, serve_in_thread
from streamkit.server.app import parse_chat_request, plan_reply
from streamkit.server.runner import _config
from streamkit.server.ws import text_frame

FAST: dict[str, Any] = {"ttft": 0, "tokens_per_second": 2000, "length": 30}


def _body(prompt: str = "How do sockets carry many streams?", **sim: Any) -> dict[str, Any]:
    return {
        "model": "sim-small",
        "messages": [{"role": "user", "content": prompt}],
        "seed": 3,
        "streamkit": {**FAST, **sim},
    }


def _pieces(body: dict[str, Any]) -> list[str]:
    return plan_reply(parse_chat_request(json.dumps(body).encode(), MODELS)).pieces


def _ws_url(server: RunningServer) -> str:
    return server.url.replace("http://", "ws://", 1) + "/v1/ws"


@asynccontextmanager
async def _socket(server: RunningServer, key: str | None = None) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with connect(_ws_url(server), additional_headers=headers, open_timeout=10) as ws:
        yield ws


async def _request(
    ws: ClientConnection, stream_id: str, body: dict[str, Any], resume_after: int | None = None
) -> None:
    message = {"type": "chat.request", "id": stream_id, "body": body, "resume_after": resume_after}
    await ws.send(json.dumps(message))


async def _recv(ws: ClientConnection, within: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _until_done(ws: ClientConnection, ids: set[str]) -> list[dict[str, Any]]:
    """Every message until each stream in ``ids`` has ended (end, error or cancelled)."""
    messages: list[dict[str, Any]] = []
    open_ids = set(ids)
    while open_ids:
        message = await _recv(ws)
        messages.append(message)
        if message["type"] in ("end", "error", "cancelled"):
            open_ids.discard(message["id"])
    return messages


def _text(messages: list[dict[str, Any]], stream_id: str) -> str:
    return "".join(m["content"] for m in messages if m["type"] == "token" and m["id"] == stream_id)


async def _sse_text(server: RunningServer, body: dict[str, Any]) -> str:
    """The same body's reply through the SSE route, as an SSE client reads it."""
    text = ""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST", server.base_url + "/chat/completions", json=body | {"stream": True}
        ) as response,
    ):
        buffer = b""
        async for data in response.aiter_raw():
            *frames, buffer = (buffer + data).split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"id: "):
                    chunk = json.loads(frame.split(b"\n", 1)[1][6:])
                    text += chunk["choices"][0]["delta"]["content"]
    return text


# ---------------------------------------------------------------------------------------------
# streams


@pytest.mark.anyio
async def test_two_streams_interleave_and_match_sse(server: RunningServer) -> None:
    a = _body("Tell me about caching", tokens_per_second=150, length=25)
    b = _body("Tell me about latency", tokens_per_second=150, length=25)
    async with _socket(server) as ws:
        await _request(ws, "a", a)
        await _request(ws, "b", b)
        messages = await _until_done(ws, {"a", "b"})

    assert [m for m in messages if m["type"] == "start"] == [
        {"type": "start", "id": "a", "model": "sim-small"},
        {"type": "start", "id": "b", "model": "sim-small"},
    ]
    order = [m["id"] for m in messages if m["type"] == "token"]
    # Interleaved: b's tokens arrive while a is still streaming, not after it.
    first_b, last_a = order.index("b"), len(order) - 1 - order[::-1].index("a")
    assert first_b < last_a
    for stream_id, body in (("a", a), ("b", b)):
        seqs = [m["seq"] for m in messages if m["type"] == "token" and m["id"] == stream_id]
        assert seqs == list(range(25))
        assert _text(messages, stream_id) == await _sse_text(server, body)
        end = next(m for m in messages if m["type"] == "end" and m["id"] == stream_id)
        assert end["finish_reason"] == "stop" and end["usage"]["completion_tokens"] == 25


@pytest.mark.anyio
async def test_stream_flag_and_max_tokens(server: RunningServer) -> None:
    async with _socket(server) as ws:
        # WebSocket always streams: the body's stream flag is ignored.
        await _request(ws, "s", _body() | {"stream": False, "max_tokens": 4})
        messages = await _until_done(ws, {"s"})
    end = messages[-1]
    assert end["type"] == "end" and end["finish_reason"] == "length"
    assert len([m for m in messages if m["type"] == "token"]) == 4


@pytest.mark.anyio
async def test_cancel_one_stream_the_other_completes(server: RunningServer) -> None:
    stats = server.app.stats
    cancelled = stats.ws_streams_cancelled
    slow = _body(tokens_per_second=40, length=200)
    other = _body("Tell me about notebooks", tokens_per_second=100, length=20)
    async with _socket(server) as ws:
        await _request(ws, "slow", slow)
        await _request(ws, "other", other)
        messages: list[dict[str, Any]] = []
        while sum(m["type"] == "token" and m["id"] == "slow" for m in messages) < 3:
            messages.append(await _recv(ws))
        await ws.send(json.dumps({"type": "chat.cancel", "id": "slow"}))
        messages += await _until_done(ws, {"slow", "other"})
        # Cancelling an ended or unknown stream is not an error: nothing comes back.
        await ws.send(json.dumps({"type": "chat.cancel", "id": "slow"}))
        await ws.send(json.dumps({"type": "chat.cancel", "id": "never-started"}))
        await _request(ws, "probe", _body(length=1))
        assert (await _recv(ws))["type"] == "start"

    done = messages.index({"type": "cancelled", "id": "slow"})
    assert not [m for m in messages[done:] if m["id"] == "slow" and m["type"] != "cancelled"]
    assert not [m for m in messages if m["type"] == "end" and m["id"] == "slow"]
    assert _text(messages, "other") == await _sse_text(server, other)
    assert stats.ws_streams_cancelled == cancelled + 1


@pytest.mark.anyio
async def test_resume_after(server: RunningServer) -> None:
    body = _body()
    full = "".join(_pieces(body))
    async with _socket(server) as ws:
        for after in (0, 11, 29):
            await _request(ws, f"r{after}", body, resume_after=after)
            messages = await _until_done(ws, {f"r{after}"})
            seqs = [m["seq"] for m in messages if m["type"] == "token"]
            assert seqs == list(range(after + 1, 30))
            assert "".join(_pieces(body)[: after + 1]) + _text(messages, f"r{after}") == full
            assert messages[-1]["usage"]["completion_tokens"] == 30  # the whole logical stream
        await _request(ws, "past", body, resume_after=30)
        error = await _recv(ws)
    assert error["type"] == "error" and error["status"] == 400
    assert error["error"]["param"] == "resume_after"


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.anyio
async def test_errors_are_per_stream(server: RunningServer) -> None:
    async with _socket(server) as ws:
        await _request(ws, "bad", _body() | {"model": "gpt-nope"})
        error = await _recv(ws)
        assert error["type"] == "error" and error["id"] == "bad" and error["status"] == 404
        assert error["error"]["code"] == "model_not_found" and error["retry_after"] is None
        await _request(ws, "bad2", _body(faults=[{"kind": "drop", "at": -1}]))
        error = await _recv(ws)
        assert error["status"] == 400
        assert error["error"]["param"] == "streamkit.faults[0].at"

        await ws.send("{not json")
        assert (await _recv(ws))["id"] is None
        await ws.send(json.dumps({"type": "chat.request", "body": _body()}))
        assert (await _recv(ws))["error"]["param"] == "id"
        await ws.send(json.dumps({"type": "chat.explode", "id": "x"}))
        assert (await _recv(ws))["error"]["param"] == "type"
        await ws.send(json.dumps({"type": "chat.cancel", "id": "x", "extra": 1}))
        assert (await _recv(ws))["error"]["param"] == "extra"
        await ws.send(b"\x00binary")
        assert (await _recv(ws))["status"] == 400
        await _request(ws, "r", _body(), resume_after=-1)
        assert (await _recv(ws))["error"]["param"] == "resume_after"
        await ws.send(json.dumps({"type": "chat.request", "id": "nb", "body": [1]}))
        assert (await _recv(ws))["error"]["param"] == "body"

        # A stream id in use is refused; the socket keeps working throughout.
        await _request(ws, "dup", _body(tokens_per_second=50, length=20))
        await _request(ws, "dup", _body())
        messages = [await _recv(ws)]
        while messages[-1]["type"] != "end":
            messages.append(await _recv(ws))
        # (The refusal may come before the first "dup"'s start: it is sent at once.)
        assert [m["type"] for m in messages].count("start") == 1
        assert [m["error"]["param"] for m in messages if m["type"] == "error"] == ["id"]
        assert len([m for m in messages if m["type"] == "token"]) == 20


@pytest.mark.anyio
async def test_auth_on_the_handshake(auth_server: RunningServer) -> None:
    for key in (None, "wrong-key"):
        async with _socket(auth_server, key) as ws:
            error = await _recv(ws)
            assert error["type"] == "error" and error["id"] is None and error["status"] == 401
            assert error["error"]["code"] == "invalid_api_key"
            with pytest.raises(ConnectionClosed) as info:
                await _recv(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert "wrong-key" not in json.dumps(error)
    async with _socket(auth_server, "test-key") as ws:
        await _request(ws, "ok", _body(length=3))
        assert (await _until_done(ws, {"ok"}))[-1]["type"] == "end"


@pytest.mark.anyio
async def test_unknown_path_is_refused(server: RunningServer) -> None:
    async with connect(server.url.replace("http://", "ws://") + "/v1/nope") as ws:
        error = await _recv(ws)
        assert error["status"] == 404 and "/v1/ws" in error["error"]["message"]
        with pytest.raises(ConnectionClosed):
            await _recv(ws)


# ---------------------------------------------------------------------------------------------
# faults


@pytest.mark.anyio
async def test_drop_closes_the_whole_socket(server: RunningServer) -> None:
    stats = server.app.stats
    async with _socket(server) as ws:
        await _request(ws, "long", _body(tokens_per_second=100, length=500))
        await _request(ws, "d", _body(faults=[{"kind": "drop", "at": 5}]))
        messages: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                messages.append(await _recv(ws))
    assert info.value.rcvd is None  # no close frame: the connection just ended
    assert [m["seq"] for m in messages if m["type"] == "token" and m["id"] == "d"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert not [m for m in messages if m["type"] == "end"]
    await wait_for(lambda: stats.ws_active_streams == 0)


@pytest.mark.anyio
async def test_drop_mid_frame_cuts_a_frame(server: RunningServer) -> None:
    async with _socket(server) as ws:
        await _request(ws, "d", _body(faults=[{"kind": "drop", "at": 2, "mid_frame": True}]))
        seqs = []
        with pytest.raises(ConnectionClosedError):
            while True:
                message = await _recv(ws)
                if message["type"] == "token":
                    seqs.append(message["seq"])
    assert seqs == [0, 1]


@pytest.mark.anyio
async def test_status_stall_malformed_no_done(server: RunningServer) -> None:
    key = "ws-" + uuid.uuid4().hex
    async with _socket(server) as ws:
        limited = _body(
            attempt_key=key,
            faults=[{"kind": "status", "code": 429, "retry_after": 1.5, "attempts": 1}],
        )
        await _request(ws, "s1", limited)
        error = await _recv(ws)
        assert error["status"] == 429 and error["retry_after"] == 1.5
        assert error["error"]["code"] == "rate_limit_exceeded"
        await _request(ws, "s2", limited)  # the same key's second attempt is clean
        assert (await _until_done(ws, {"s2"}))[-1]["type"] == "end"

        sent = time.perf_counter()
        await _request(
            ws, "st", _body(jitter=0, faults=[{"kind": "stall", "at": 3, "seconds": 0.3}])
        )
        arrivals: dict[int, float] = {}
        while len(arrivals) < 30:
            message = await _recv(ws)
            if message["type"] == "token":
                arrivals[message["seq"]] = time.perf_counter() - sent
        # One-sided: token 3 cannot leave before the stall has passed; the gap, generously.
        assert arrivals[3] >= 0.3 and arrivals[3] - arrivals[2] >= 0.15
        assert (await _recv(ws))["type"] == "end"

        await _request(ws, "m", _body(faults=[{"kind": "malformed", "at": 1}]))
        raw = [await ws.recv() for _ in range(1 + 1 + 1)]  # start, token 0, the bad frame
        with pytest.raises(ValueError):
            json.loads(raw[2])
        messages = await _until_done(ws, {"m"})
        assert [m["seq"] for m in messages if m["type"] == "token"] == list(range(1, 30))

        await _request(ws, "nd", _body(length=5, faults=[{"kind": "no_done"}]))
        await _request(ws, "after", _body(length=3, ttft=0.2))
        messages = await _until_done(ws, {"after"})
        await asyncio.sleep(0.1)
        assert len([m for m in messages if m["id"] == "nd" and m["type"] == "token"]) == 5
        assert not [m for m in messages if m["id"] == "nd" and m["type"] == "end"]


# ---------------------------------------------------------------------------------------------
# the connection


@pytest.mark.anyio
async def test_disconnect_stops_every_stream(server: RunningServer) -> None:
    stats = server.app.stats
    connections = stats.ws_connections
    async with _socket(server) as ws:
        for i in range(3):
            await _request(ws, f"s{i}", _body(tokens_per_second=100, length=2000))
        streaming: set[str] = set()
        while len(streaming) < 3:
            message = await _recv(ws)
            if message["type"] == "token":
                streaming.add(message["id"])
        assert stats.ws_active_streams >= 3 and stats.ws_active_connections >= 1
    await wait_for(lambda: stats.ws_active_streams == 0 and stats.ws_active_connections == 0)
    assert stats.ws_connections == connections + 1
    sent = stats.tokens_sent
    await asyncio.sleep(0.2)
    assert stats.tokens_sent == sent  # nothing more is produced for the departed client


@pytest.mark.anyio
async def test_limits_apply_per_stream(limited_server: RunningServer) -> None:
    key = "ws-" + uuid.uuid4().hex
    async with _socket(limited_server, key) as ws:
        await _request(ws, "one", _body(tokens_per_second=50, length=20))
        await _request(ws, "two", _body())
        messages = await _until_done(ws, {"one", "two"})
        error = next(m for m in messages if m["type"] == "error")
        assert error["id"] == "two" and error["status"] == 429 and error["retry_after"] == 1
        await ws.send(json.dumps({"type": "chat.request", "id": "big", "body": _body("x" * 5000)}))
        too_big = await _recv(ws)
        assert too_big["status"] == 413 and too_big["error"]["code"] == "request_too_large"


def test_text_frame_matches_websockets() -> None:
    for size in (5, 125, 126, 200, 65535, 70_000):
        payload = b"x" * size
        expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
        assert text_frame(payload) == expected


def test_uvicorn_pings_websockets() -> None:
    config = _config(create_app(), configure_logging=False)
    assert config.ws_ping_interval == 20.0 and config.ws_ping_timeout == 20.0


@pytest.mark.anyio
async def test_server_stop_closes_sockets_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    running = serve_in_thread()
    try:
        async with _socket(running) as ws:
            await _request(ws, "long", _body(tokens_per_second=50, length=1000))
            assert (await _recv(ws))["type"] == "start"
            t0 = time.monotonic()
            stopping = asyncio.ensure_future(asyncio.to_thread(running.stop))
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await _recv(ws)
            await stopping
    finally:
        running.stop()
    assert time.monotonic() - t0 < 3.0
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012  # service restart
    assert running.app.stats.ws_active_streams == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
