"""The simulator's ASGI app: OpenAI Chat Completions answered by simulated models.

A plain ASGI callable (no framework): on uvicorn it spends about a third of the CPU per chunk
that starlette with sse-starlette does, which is what lets one core carry hundreds of paced
streams. The layers below it are testable without a socket:

- request validation (:mod:`.request`: :func:`parse_chat_request`): bytes in, a
  :class:`ChatRequest` or a :class:`RequestError` carrying an OpenAI-style error body out.
  Per-request simulation settings in the ``streamkit`` body field are checked against the
  :data:`SIM_OPTIONS` table; the fault list and the attempt key are entries there, parsed by
  :mod:`.faults`.
- planning (:mod:`.plan`: :func:`plan_reply`): which pieces to send, when, and why it ends.
- wire formats (:mod:`.sse`: :class:`ChunkEncoder`, :func:`completion_body`): bytes exactly as
  OpenAI sends them, plus the SSE ``id:`` line of each content frame (docs/protocol.md).
- shared state and admission (:mod:`.core`): auth, limits (:mod:`.limits`), attempt counting
  and status faults, shared with the WebSocket endpoint in :mod:`.ws`; settings in
  :class:`~.config.ServerConfig`.
- this module (:class:`App`): routing, and the HTTP side of :func:`~.produce.produce`, which
  paces every stream on one shared :class:`~.pacer.Pacer` and fires stream faults; with the
  optional capacity model (:mod:`.capacity`), in a bounded batch sharing a decode rate.

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions`` (``Last-Event-ID`` resumes a stream), ``POST /v1/responses`` and
``GET /v1/responses/{id}`` (OpenAI's Responses API, :mod:`.responses`), and the WebSocket
endpoint ``GET /v1/ws``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Unpack

from .admission import Admission
from .asgi import (
    ConnectionDropped,
    Receive,
    Scope,
    Send,
    abort,
    caller_of,
    cut_connection,
    forever,
    header,
    new_id,
    transport_of,
)
from .body import last_event_id, read_body
from .config import DEFAULT_MAX_BODY_BYTES, ServerConfig, ServerOptions, configured, positional
from .core import Reply, ServerCore
from .faults import Drop, Fault, Malformed, Stall, stream_faults
from .models import model_card
from .plan import Plan, plan_reply, resume_start
from .produce import Ending
from .request import (
    SIM_OPTIONS,
    ChatRequest,
    RequestError,
    SimOption,
    loads_json,
    parse_chat_object,
    parse_chat_request,
)
from .responses import ResponsesEndpoint
from .sse import ChunkEncoder, SSEWire, completion_body
from .stats import ServerStats, exposition
from .ws import WebSocketEndpoint

# Everything below was first defined here; it is re-exported so these imports keep working.
__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "SIM_OPTIONS",
    "Admission",
    "App",
    "ChatRequest",
    "ChunkEncoder",
    "ConnectionDropped",
    "Plan",
    "RequestError",
    "ServerConfig",
    "ServerStats",
    "SimOption",
    "caller_of",
    "completion_body",
    "create_app",
    "cut_connection",
    "header",
    "loads_json",
    "parse_chat_object",
    "parse_chat_request",
    "plan_reply",
    "resume_start",
    "transport_of",
]


class App(ServerCore):
    """The simulator as an ASGI 3 application: the HTTP routes on a :class:`~.core.ServerCore`.

    Args:
        config: every setting at once (:class:`~.config.ServerConfig`), instead of ``options``
            (not both).
        **options: the settings one by one (:class:`~.config.ServerOptions`), on the defaults.

    A caller is the bearer token a request carries, or its client address when it carries none
    (:func:`caller_of`).

    Attributes:
        config: the server's settings (:class:`~.config.ServerConfig`).
        stats: live counters (:class:`ServerStats`).
        models: the models on offer, by id.
        attempts: attempts counted per ``streamkit.attempt_key``.
        batch: the capacity model (:class:`~.capacity.Batch`), or ``None`` when neither
            ``max_batch`` nor ``decode_capacity`` is set.
    """

    def __init__(
        self,
        config: ServerConfig | str | None = None,
        *legacy: Any,
        **options: Unpack[ServerOptions],
    ) -> None:
        config = positional("App", ("api_key", "models"), config, legacy, options)
        super().__init__(configured(config, options))
        self._inflight: set[asyncio.Task[Any]] = set()
        self._ws = WebSocketEndpoint(self)
        self.responses = ResponsesEndpoint(self, self._inflight)

    def __repr__(self) -> str:
        # Never show the key.
        auth = "key required" if self.config.api_key is not None else "no key"
        return f"<streamkit App models={list(self.models)} {auth}>"

    def close_streams(self) -> None:
        """End every reply in progress and refuse new ones (503); call on the server's loop.

        The runner calls this as the server shuts down, so each open stream ends its HTTP
        response cleanly, without ``[DONE]`` (a client sees a stream cut short, which is the
        truth), instead of being cancelled after the graceful timeout, which uvicorn reports as
        an application error. (WebSocket connections are closed by uvicorn itself, with code
        1012, which stops their streams.)
        """
        self.close()
        for task in list(self._inflight):
            abort(task)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._ws(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = asyncio.get_running_loop().time()
        self.stats.requests += 1
        request_id = new_id("req_")
        method: str = scope["method"]
        path: str = scope["path"]
        if len(path) > 1:
            path = path.rstrip("/")
        try:
            if path.startswith("/v1"):
                self.authorize(scope)
            if path == "/health":
                self._allow(method, "GET", path)
                await self._json(send, 200, {"status": "ok"}, request_id)
            elif path == "/metrics":
                self._allow(method, "GET", path)
                await self._send(
                    send,
                    200,
                    exposition(self.stats).encode(),
                    request_id,
                    content_type=b"text/plain; version=0.0.4; charset=utf-8",
                )
            elif path == "/v1/models":
                self._allow(method, "GET", path)
                self.refuse_if_failing()
                cards = [model_card(m) for m in self.models.values()]
                await self._json(send, 200, {"object": "list", "data": cards}, request_id)
            elif path.startswith("/v1/models/"):
                self._allow(method, "GET", path)
                self.refuse_if_failing()
                model = self.models.get(path[len("/v1/models/") :])
                if model is None:
                    raise RequestError(
                        404,
                        f"The model `{path[len('/v1/models/') :]}` does not exist; "
                        f"available: {', '.join(self.models)}.",
                        code="model_not_found",
                    )
                await self._json(send, 200, model_card(model), request_id)
            elif path == "/v1/chat/completions":
                self._allow(method, "POST", path)
                await self._chat(scope, receive, send, t0, request_id)
            elif path == "/v1/responses":
                self._allow(method, "POST", path)
                await self.responses.create(scope, receive, send, t0, request_id)
            elif path.startswith("/v1/responses/"):
                self._allow(method, "GET", path)
                response_id = path[len("/v1/responses/") :]
                await self.responses.retrieve(scope, receive, send, t0, request_id, response_id)
            else:
                raise RequestError(
                    404,
                    f"Invalid URL ({method} {scope['path']}): the streamkit simulator serves "
                    "GET /health, GET /metrics, GET /v1/models, GET /v1/models/{id}, "
                    "POST /v1/chat/completions, POST /v1/responses, GET /v1/responses/{id} "
                    "and the WebSocket endpoint /v1/ws.",
                    code="unknown_url",
                )
        except RequestError as exc:
            self.stats.errors += 1
            await self._send(send, exc.status, exc.body(), request_id, exc.headers)

    @staticmethod
    def _allow(method: str, allowed: str, path: str) -> None:
        if method != allowed:
            raise RequestError(
                405,
                f"Method {method} is not allowed on {path}; use {allowed}.",
                code="method_not_allowed",
                headers=[(b"allow", allowed.encode())],
            )

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        request_id: str,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *(extra_headers or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _json(self, send: Send, status: int, obj: object, request_id: str) -> None:
        await self._send(send, status, json.dumps(obj).encode(), request_id)

    async def _chat(
        self, scope: Scope, receive: Receive, send: Send, t0: float, request_id: str
    ) -> None:
        body = await read_body(scope, receive, self.max_body_bytes)
        if body is None:
            return
        req = parse_chat_request(body, self.models)
        resume_after = last_event_id(scope)
        if resume_after is not None and not req.stream:
            raise RequestError(
                400,
                "Last-Event-ID resumes a stream: send it with 'stream': true, or drop the header.",
                param="Last-Event-ID",
            )
        plan = plan_reply(req)
        start = resume_start(resume_after, plan, "Last-Event-ID")
        with self.admit(req, caller_of(scope)) as admission:
            created = int(time.time())
            reply = Reply(t0, request_id, new_id("chatcmpl-"), created, req, plan, admission)
            if req.stream:
                await self._stream(receive, send, reply, start)
                return
            await self.complete(self._complete(send, reply), receive, self._inflight)

    async def _complete(self, send: Send, reply: Reply) -> None:
        t0, req, plan, admission = reply.t0, reply.req, reply.plan, reply.admission
        # Without a stream, faults act on the whole response: stalls add their silence, a drop
        # cuts the connection before the response, a malformed fault sends half the body.
        reached = stream_faults(admission.faults, 0, len(plan.pieces))
        stall = sum(f.seconds for f in reached if isinstance(f, Stall))
        due = (plan.offsets[-1] if plan.offsets else 0.0) + stall
        batch = self.batch
        if batch is None:
            await self.pacer().wait_until(t0 + due)
        else:
            # The reply is generated in the batch (after waiting in line for a place), and its
            # gaps are stretched to the decode share it gets as it starts.
            granted = await batch.enter()
            try:
                offsets = plan.offsets
                if offsets:
                    due += batch.stretch(offsets[-1] - offsets[0], len(offsets) - 1)
                await self.pacer().wait_until((t0 if granted is None else granted) + due)
            finally:
                batch.leave()
        if any(isinstance(f, Drop) for f in reached):
            self.stats.faults_injected += 1
            transport = transport_of(send)
            if transport is None:
                raise ConnectionDropped("drop fault: cutting the connection")
            admission.release()
            cut_connection(transport)
            await forever()  # until the server sees the connection close
        body = completion_body(reply.reply_id, reply.created, req.model.id, plan)
        if any(isinstance(f, Malformed) for f in reached):
            self.stats.faults_injected += 1
            body = body[: len(body) // 2]
        self.stats.faults_injected += sum(isinstance(f, Stall) for f in reached)
        admission.release()
        await self._send(send, 200, body, reply.request_id)
        self.stats.tokens_sent += plan.completion_tokens

    async def _stream(self, receive: Receive, send: Send, reply: Reply, start: int) -> None:
        req, plan, admission = reply.req, reply.plan, reply.admission
        encoder = ChunkEncoder(reply.reply_id, reply.created, req.model.id, req.include_usage)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", reply.request_id.encode()),
            # Reverse proxies (nginx) buffer responses unless told not to.
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The role chunk goes out at once: clients measure time to first byte from it.
        await send({"type": "http.response.body", "body": encoder.role(), "more_body": True})

        wire = SSEWire(send, encoder, plan, admission)
        work = self._emit(wire, reply.t0, encoder, req, plan, start, admission.faults)
        await self.stream(work, wire, receive, send, self._inflight)

    async def _emit(
        self,
        wire: SSEWire,
        t0: float,
        encoder: ChunkEncoder,
        req: ChatRequest,
        plan: Plan,
        start: int,
        faults: tuple[Fault, ...],
    ) -> Ending:
        ending = await self.produce(wire, plan, start=start, t0=t0, faults=faults)
        if ending is Ending.DROPPED:
            await forever()  # the connection is closing; the disconnect listener ends this
        tail = b""
        if ending is Ending.FINISHED:
            tail = encoder.finish(plan.finish_reason)
            if req.include_usage:
                tail += encoder.usage(plan.usage_json())
            tail += encoder.done()
        await wire.end(tail)
        return ending


def create_app(
    config: ServerConfig | str | None = None, *legacy: Any, **options: Unpack[ServerOptions]
) -> App:
    """Make the simulator's ASGI app.

    Args:
        config: every setting at once (:class:`~.config.ServerConfig`), instead of ``options``
            (not both). The old positional ``create_app(api_key, models)`` still works, with a
            DeprecationWarning.
        **options: the settings one by one (:class:`~.config.ServerOptions`): the key ``/v1``
            routes require (``/health`` stays open), the models, the per-caller limits, the
            body limit and the capacity model.

    Returns:
        The app; its ``stats`` attribute holds live counters (``queued`` and ``running`` for
        the capacity model).

    Raises:
        ValueError: a limit that is not an integer >= 1, or a ``decode_capacity`` that is not
            a number > 0.
        TypeError: both ``config`` and keyword options given.
    """
    config = positional("create_app", ("api_key", "models"), config, legacy, options)
    return App(config, **options)
