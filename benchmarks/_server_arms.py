"""The comparison arms of ``bench_server.py``: the same streamed reply without streamkit's app.

Each arm answers ``POST /v1/chat/completions`` with the bytes streamkit's app sends for a
request with no faults (the role chunk at once, each content chunk at its due time, the finish
chunk, usage when asked, ``[DONE]``), from the same validation (:func:`parse_chat_request`), the
same plan (:func:`plan_reply`), the same frames (:class:`ChunkEncoder`) and the same shared
clock (:class:`Pacer`), so what differs between arms is only the layer that carries them:

- ``starlette``: an idiomatic Starlette endpoint returning a ``StreamingResponse`` over an async
  generator (Starlette's routing, ``Request.body()``, its response class).
- ``bare``: a plain ASGI callable with nothing else: no admission, limits, stats, fault
  handling or disconnect watching. It is the floor the uvicorn + asyncio layers leave.

Both are served by the same uvicorn settings as ``streamkit serve`` (a socket bound with
``IPPROTO_TCP`` so ``TCP_NODELAY`` is set, the same backlog, no access log, the heap frozen).

Run one with ``python benchmarks/_server_arms.py starlette|bare``: it prints the URL line
``streamkit serve`` prints (port 0: a free port) and serves until terminated.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from streamkit.server.asgi import Receive, Scope, Send, new_id
from streamkit.server.models import MODELS
from streamkit.server.pacer import Pacer
from streamkit.server.plan import plan_reply
from streamkit.server.produce import MAX_BURST
from streamkit.server.request import ChatRequest, RequestError, parse_chat_request
from streamkit.server.sse import ChunkEncoder

ARMS = ("starlette", "bare")

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_pacers: dict[asyncio.AbstractEventLoop, Pacer] = {}


def _pacer() -> Pacer:
    loop = asyncio.get_running_loop()
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = Pacer(loop=loop)
    return pacer


async def frames(req: ChatRequest, t0: float) -> AsyncIterator[bytes]:
    """The reply's SSE frames, each content frame at its due time (after ``t0``)."""
    plan = plan_reply(req)
    encoder = ChunkEncoder(new_id("chatcmpl-"), int(time.time()), req.model.id, req.include_usage)
    yield encoder.role()
    pacer = _pacer()
    burst = 0
    for k, piece in enumerate(plan.pieces):
        if await pacer.wait_until(t0 + plan.offsets[k]):
            burst = 0
        else:
            burst += 1
            if burst >= MAX_BURST:  # as streamkit's produce: a late stream lets others run
                burst = 0
                await asyncio.sleep(0)
        yield encoder.content(k, piece)
    tail = encoder.finish(plan.finish_reason)
    if req.include_usage:
        tail += encoder.usage(plan.usage())
    yield tail + encoder.done()


def starlette_app() -> Any:
    """The Starlette arm: one route, a ``StreamingResponse`` over :func:`frames`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        t0 = asyncio.get_running_loop().time()
        try:
            req = parse_chat_request(await request.body(), MODELS)
        except RequestError as exc:
            return Response(exc.body(), exc.status, media_type="application/json")
        return StreamingResponse(
            frames(req, t0),
            media_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The bare arm: the same frames written straight to ASGI's ``send``."""
    if scope["type"] != "http":
        return
    t0 = asyncio.get_running_loop().time()
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        req = parse_chat_request(b"".join(chunks), MODELS)
    except RequestError as exc:
        await send({"type": "http.response.start", "status": exc.status, "headers": []})
        await send({"type": "http.response.body", "body": exc.body()})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    async for frame in frames(req, t0):
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def serve(arm: str) -> None:
    """Serve ``arm`` on a free loopback port, as ``streamkit serve`` serves its app."""
    app = starlette_app() if arm == "starlette" else bare_app
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
        backlog=2048,
    )
    print(f"{arm} arm: http://127.0.0.1:{port}/v1", file=sys.stderr, flush=True)
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ARMS:
        sys.exit(f"usage: python {sys.argv[0]} {{{'|'.join(ARMS)}}}")
    serve(sys.argv[1])
