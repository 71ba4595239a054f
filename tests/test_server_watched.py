"""How a reply in progress ends (``asgi.watched``): done, its client gone, or the server
shutting down; on asyncio with a scripted ``receive``, and on a real server stopped mid-stream."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import pytest

from streamkit.server import serve_in_thread
from streamkit.server.asgi import Message, Outcome, abort, watched

pytestmark = pytest.mark.anyio


class Client:
    """A scripted ASGI ``receive``: the body, then a disconnect when told."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_work_that_finishes_is_done_and_leaves_nothing_running() -> None:
    client = Client()
    inflight: set[asyncio.Task[Any]] = set()

    async def work() -> str:
        await asyncio.sleep(0)
        assert asyncio.current_task() in inflight  # so the server can end it
        return "reply"

    before = asyncio.all_tasks()
    assert await watched(work(), client.receive, inflight) == (Outcome.DONE, "reply")
    assert not inflight
    await asyncio.sleep(0)  # the listener's cancellation is delivered
    assert asyncio.all_tasks() == before


async def test_a_client_that_leaves_cancels_the_work() -> None:
    client = Client()
    ended = []

    async def work() -> None:
        try:
            client.gone.set()
            await asyncio.sleep(30)
        finally:
            ended.append(True)

    assert await watched(work(), client.receive, set()) == (Outcome.DISCONNECTED, None)
    assert ended == [True]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # the task goes on, not cancelled


async def test_abort_ends_the_work_and_the_task_goes_on() -> None:
    client = Client()
    inflight: set[asyncio.Task[Any]] = set()

    async def work() -> None:
        for task in list(inflight):
            asyncio.get_running_loop().call_soon(abort, task)
        await asyncio.sleep(30)

    assert await watched(work(), client.receive, inflight) == (Outcome.ABORTED, None)
    assert not inflight
    await asyncio.sleep(0)


async def test_someone_elses_cancellation_propagates() -> None:
    client = Client()
    inflight: set[asyncio.Task[Any]] = set()

    async def work() -> None:
        await asyncio.sleep(30)

    task = asyncio.ensure_future(watched(work(), client.receive, inflight))
    await asyncio.sleep(0.01)
    (running,) = inflight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not inflight
    assert running.cancelled()  # the work did not outlive its caller


async def test_an_error_in_the_work_propagates() -> None:
    async def work() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await watched(work(), Client().receive, set())


def _post(port: int, body: dict[str, object]) -> socket.socket:
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(raw), raw)
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def test_stopping_the_server_ends_streams_cleanly_and_refuses_waiting_replies() -> None:
    running = serve_in_thread()
    slow = {"ttft": 0, "tokens_per_second": 2, "length": 50}
    message = [{"role": "user", "content": "hi"}]
    streamed = _post(
        running.port,
        {"model": "sim-small", "messages": message, "stream": True, "streamkit": slow},
    )
    waiting = _post(
        running.port,
        {"model": "sim-small", "messages": message, "streamkit": {"ttft": 30}},
    )
    with streamed, waiting:
        head = _read_until(streamed, b'"content":"')  # the stream is under way
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        stream = _read_until(streamed, b"0\r\n\r\n", head)
        refused = _read_until(waiting, b"}}")
        stopper.join(10)
    assert b"HTTP/1.1 200" in stream
    assert stream.endswith(b"\r\n0\r\n\r\n")  # the response ended (not a cut connection) ...
    assert b"[DONE]" not in stream  # ... short of its end, which tells the client why
    assert refused.startswith(b"HTTP/1.1 503")
    stats = running.app.stats
    assert stats.streams_aborted == 1
    assert stats.streams_completed == 0
