"""A rehearsal of each transport's first request, so that the first real request's clock times the
request, not the client's one-time setup.

The first request through an HTTP stack pays for work no later one repeats, all of it inside the
window that TTFB and TTFT measure from ``StreamStart.sent_at``: the openai SDK imports its chat
resources on first use and fills its request-transform caches; httpcore2 imports anyio's asyncio
backend the first time its pool synchronises; asyncio starts the resolver thread. Measured here
(``benchmarks/bench_first_request.py``, 2 cores) the first request's TTFT was 40-46 ms above a
warm one's over ``sse`` and 15-25 ms over ``generic-sse``.

Listing those steps to do them early would break with every release of the libraries, so instead
each transport, before it starts its first clock, runs one whole request of its own kind against
a stand-in server on a loopback port of this process, which answers with a short canned stream
and closes. The rehearsal uses its own throwaway client (no key, no proxy settings, nothing of the
real endpoint), so nothing reaches the real server and nothing is warmed that belongs to it: the
first real request still opens its own connection (DNS, TCP connect, TLS or WebSocket handshake)
inside the clock, as later requests on new connections do. It runs once per process and transport
(concurrent first requests on a loop wait for one rehearsal), takes a few milliseconds beyond the
imports the first request would have done anyway, and a rehearsal that fails (no loopback
sockets, say) is logged at debug level and not tried again: the first request then simply pays
the setup itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2

__all__ = ["MESSAGES", "MODEL", "http_client", "rehearse", "rehearsed"]

MODEL = "rehearsal"
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "rehearsal"}]

_log = logging.getLogger(__name__)
# The ws stand-in's own log lines ("server listening on ...") would only puzzle a user's log: a
# logger outside the hierarchy, above every level.
_SILENT = logging.Logger("streamkit.rehearsal.ws", logging.CRITICAL + 1)
_TIMEOUT = 5.0  # seconds: a rehearsal that takes longer is abandoned
_done: set[str] = set()
_running: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[None]] = {}
_inside = contextvars.ContextVar("streamkit_rehearsal", default=False)

# One reply of each kind: a role chunk, a numbered content chunk, finish, usage, [DONE].
_CHUNK = '{{"id":"r","object":"chat.completion.chunk","model":"{m}","choices":[{c}]}}'
_FRAMES = (
    "data: "
    + _CHUNK.format(m=MODEL, c='{"index":0,"delta":{"role":"assistant"},"finish_reason":null}')
    + "\n\nid: 0\ndata: "
    + _CHUNK.format(m=MODEL, c='{"index":0,"delta":{"content":"ok"},"finish_reason":null}')
    + "\n\ndata: "
    + _CHUNK.format(m=MODEL, c='{"index":0,"delta":{},"finish_reason":"stop"}')
    + '\n\ndata: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,'
    '"total_tokens":2}}\n\ndata: [DONE]\n\n'
).encode()
_SSE_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    b"connection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(_FRAMES), _FRAMES)
)


def http_client() -> httpx2.AsyncClient:
    """A throwaway httpx2 client for a rehearsal: no proxy from the environment, and a TLS
    context that trusts nothing, since the stand-in speaks plain http (loading the CA bundle
    for a default client takes 50-100 ms here, for nothing)."""
    return httpx2.AsyncClient(trust_env=False, verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


def rehearsed(kind: str) -> bool:
    """Whether ``kind``'s first-request setup is done (or need not be: inside a rehearsal)."""
    return kind in _done or _inside.get()


async def rehearse(kind: str, request: Callable[[str], Awaitable[None]]) -> None:
    """Run ``kind``'s rehearsal once per process; return when it is over.

    Args:
        kind: the transport (``sse``, ``generic-sse``, ``fast-sse``, ``ws``).
        request: makes one request to the API root it is given (the stand-in's) and reads it
            to its end, with a client of its own.
    """
    if rehearsed(kind):
        return
    loop = asyncio.get_running_loop()
    key = (loop, kind)
    task = _running.get(key)
    if task is None:
        task = _running[key] = loop.create_task(_rehearse(kind, request))
        task.add_done_callback(lambda _: _running.pop(key, None))
    await asyncio.shield(task)  # a caller that gives up leaves it to the others waiting


async def _rehearse(kind: str, request: Callable[[str], Awaitable[None]]) -> None:
    _inside.set(True)  # this task's own context: the request below must not rehearse again
    stand_in = _ws_stand_in if kind == "ws" else _sse_stand_in
    try:
        async with asyncio.timeout(_TIMEOUT), stand_in() as base_url:
            await request(base_url)
    except Exception as exc:  # best effort: the real request still works
        _log.debug("rehearsal of transport %r failed: %r", kind, exc)
    _done.add(kind)


@contextlib.asynccontextmanager
async def _sse_stand_in() -> AsyncIterator[str]:
    """An HTTP/1.1 server on a loopback port answering every request with ``_SSE_REPLY``."""
    tasks: set[asyncio.Task[Any]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(_SSE_REPLY)
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def _ws_stand_in() -> AsyncIterator[str]:
    """A WebSocket server on a loopback port speaking the bundled server's ``/v1/ws`` briefly."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def answer(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed, ValueError):
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") != "chat.request":
                    continue
                sid = message.get("id")
                await ws.send(json.dumps({"type": "start", "id": sid, "model": MODEL}))
                await ws.send(json.dumps({"type": "token", "id": sid, "seq": 0, "content": "ok"}))
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                end = {"type": "end", "id": sid, "finish_reason": "stop", "usage": usage}
                await ws.send(json.dumps(end))

    async with serve(answer, "127.0.0.1", 0, compression=None, logger=_SILENT) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"
