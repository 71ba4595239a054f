"""The simulator's WebSocket endpoint, ``GET /v1/ws``: many concurrent chat streams on one socket.

The protocol is written down in docs/protocol.md. One text frame carries one JSON message; a
``chat.request`` starts a stream (its own task), ``chat.cancel`` stops one, and the server
answers each stream with ``start``, ``token``…, ``end`` (or ``error``, or ``cancelled``).

Everything a stream shares with the SSE route is reused, not repeated: validation
(:func:`~.request.parse_chat_object`), planning (:func:`~.plan.plan_reply`), admission (limits,
attempt counting, status faults: :meth:`~.core.ServerCore.admit`), and token production with pacing,
resume and faults (:func:`~.produce.produce`). This module adds the framing and the
per-connection bookkeeping.

Choices (also in docs/protocol.md): a bad API key, or a path other than ``/v1/ws``, is refused
by accepting the socket, sending one ``error`` message with ``id`` null (the status and OpenAI
error object an HTTP request would get) and closing with code 1008. When the client goes away,
every stream of its socket stops at once. Keepalive pings are uvicorn's (``ws_ping_interval`` in
the runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .admission import Admission, shutting_down
from .asgi import Receive, Scope, Send, caller_of, cut_connection, transport_of
from .plan import Plan, plan_reply, resume_start
from .produce import Ending
from .request import RequestError, loads_json, parse_chat_object
from .sse import delta_fields

if TYPE_CHECKING:
    from .core import ServerCore

__all__ = ["PATH", "WebSocketEndpoint", "text_frame"]

PATH = "/v1/ws"
"""Where the endpoint is served."""
MAX_STREAM_ID = 256
"""Longest stream id accepted, in characters."""
_MESSAGE_KEYS = {
    "chat.request": frozenset({"type", "id", "body", "resume_after"}),
    "chat.cancel": frozenset({"type", "id"}),
}

_log = logging.getLogger("streamkit.server")


@functools.lru_cache(maxsize=16384)
def _json_str(piece: str) -> str:
    # Replies draw on a small vocabulary, so nearly every piece is encoded once per process.
    return json.dumps(piece)


def _dumps(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def text_frame(payload: bytes) -> bytes:
    """A whole unmasked WebSocket text frame (RFC 6455 §5.2: servers never mask).

    Used only to cut one in half for a mid-frame ``drop``: normal frames are the server's.
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


class WebSocketEndpoint:
    """Serves ``websocket`` scopes for a server, on the state its HTTP routes use too.

    Args:
        core: the server whose models, limits, counters and pacer the streams use
            (:class:`~.core.ServerCore`, shared with :class:`~.app.App`).
    """

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        core = self._core
        path: str = scope["path"]
        if len(path) > 1:
            path = path.rstrip("/")
        try:
            if path != PATH:
                raise RequestError(
                    404,
                    f"Invalid URL (WebSocket {scope['path']}): the streamkit simulator's "
                    f"WebSocket endpoint is {PATH}.",
                    code="unknown_url",
                )
            core.authorize(scope)
            if core.closing:
                raise shutting_down()
        except RequestError as exc:
            core.stats.errors += 1
            await _refuse(send, exc)
            return
        await send({"type": "websocket.accept"})
        await _Session(core, send, caller_of(scope)).run(receive)


async def _refuse(send: Send, exc: RequestError) -> None:
    """Refuse a connection: accept it, send one ``error`` (``id`` null), close it.

    Rather than an HTTP status in place of the handshake: every WebSocket client (a browser
    too, which cannot read a refused handshake's body) then gets the same OpenAI error object
    an HTTP request would, and the close code says what kind of refusal it was: 1008 (policy
    violation) for a bad key or path, 1013 (try again later) while shutting down.
    """
    await send({"type": "websocket.accept"})
    message = {"type": "error", "id": None, "status": exc.status, "error": exc.error()}
    await send({"type": "websocket.send", "text": _dumps({**message, "retry_after": None})})
    code = 1013 if exc.status == 503 else 1008
    # A close reason is at most 123 bytes (RFC 6455 §5.5); the error message has the rest.
    reason = exc.message.encode()[:120].decode(errors="ignore")
    await send({"type": "websocket.close", "code": code, "reason": reason})


class _Session:
    """One accepted socket: its streams by id, and the loop reading client messages."""

    def __init__(self, core: ServerCore, send: Send, caller: str) -> None:
        self._core = core
        self._send = send
        self._caller = caller
        self._streams: dict[str, asyncio.Task[None]] = {}

    async def run(self, receive: Receive) -> None:
        """Read messages until the client leaves; then stop every stream of the socket."""
        stats = self._core.stats
        stats.ws_connections += 1
        stats.ws_active_connections += 1
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    return
                if kind == "websocket.receive":
                    await self._on_message(message)
        finally:
            tasks = list(self._streams.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stats.ws_active_connections -= 1

    async def send_json(self, obj: Mapping[str, object]) -> None:
        """Send one message; a socket already gone is not an error here (the disconnect
        message that follows ends the session)."""
        await self.send_text(_dumps(obj))

    async def send_text(self, text: str) -> None:
        """Send one text frame, ignoring a socket already gone (see :meth:`send_json`)."""
        with contextlib.suppress(OSError):  # uvicorn's ClientDisconnected
            await self._send({"type": "websocket.send", "text": text})

    async def send_error(self, stream_id: str | None, exc: RequestError) -> None:
        """Send an ``error`` message for one stream (or for none, ``stream_id=None``)."""
        self._core.stats.errors += 1
        await self.send_json(
            {
                "type": "error",
                "id": stream_id,
                "status": exc.status,
                "error": exc.error(),
                "retry_after": exc.retry_after,
            }
        )

    async def _on_message(self, message: Mapping[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            await self.send_error(
                None,
                RequestError(400, "Binary frames are not part of this protocol: send JSON text."),
            )
            return
        limit = self._core.max_body_bytes
        if len(text) > limit or (not text.isascii() and len(text.encode()) > limit):
            await self.send_error(
                None,
                RequestError(
                    413,
                    f"The message is larger than this server accepts ({limit} bytes; set with "
                    "`streamkit serve --max-body-bytes`).",
                    code="request_too_large",
                ),
            )
            return
        try:
            msg = loads_json(text)
        except ValueError as exc:
            await self.send_error(None, RequestError(400, f"The message is not JSON ({exc})."))
            return
        if not isinstance(msg, dict):
            await self.send_error(None, RequestError(400, "A message must be a JSON object."))
            return
        stream_id = msg.get("id")
        if not isinstance(stream_id, str) or not 1 <= len(stream_id) <= MAX_STREAM_ID:
            await self.send_error(
                None,
                RequestError(
                    400,
                    f"'id' must be a string of 1 to {MAX_STREAM_ID} characters naming the "
                    f"stream (got {stream_id!r:.60}).",
                    param="id",
                ),
            )
            return
        kind = msg.get("type")
        if kind not in _MESSAGE_KEYS:
            await self.send_error(
                stream_id,
                RequestError(
                    400,
                    f"Unknown message type {kind!r:.60}: a client sends 'chat.request' or "
                    "'chat.cancel'.",
                    param="type",
                ),
            )
            return
        unknown = sorted(set(msg) - _MESSAGE_KEYS[kind])
        if unknown:
            await self.send_error(
                stream_id,
                RequestError(
                    400,
                    f"Unknown key(s) in a {kind!r} message: {', '.join(unknown)}. Allowed: "
                    f"{', '.join(sorted(_MESSAGE_KEYS[kind]))}.",
                    param=unknown[0],
                ),
            )
            return
        if kind == "chat.cancel":
            await self._cancel(stream_id)
        else:
            await self._start(stream_id, msg.get("body"), msg.get("resume_after"))

    async def _start(self, stream_id: str, body: object, resume_after: object) -> None:
        if stream_id in self._streams:
            await self.send_error(
                stream_id,
                RequestError(
                    400,
                    f"Stream id {stream_id!r} is already in use on this socket: pick a new id "
                    "for each stream.",
                    param="id",
                ),
            )
            return
        if resume_after is not None and (
            not isinstance(resume_after, int) or isinstance(resume_after, bool) or resume_after < 0
        ):
            await self.send_error(
                stream_id,
                RequestError(
                    400,
                    f"'resume_after' must be null or the seq of the last token received (an "
                    f"integer >= 0), got {resume_after!r:.60}.",
                    param="resume_after",
                ),
            )
            return
        t0 = asyncio.get_running_loop().time()
        task = asyncio.ensure_future(self._stream(stream_id, body, resume_after, t0))
        self._streams[stream_id] = task
        task.add_done_callback(functools.partial(self._forget, stream_id))

    def _forget(self, stream_id: str, task: asyncio.Task[None]) -> None:
        if self._streams.get(stream_id) is task:
            del self._streams[stream_id]

    async def _cancel(self, stream_id: str) -> None:
        task = self._streams.get(stream_id)
        if task is None or task.done():
            return  # unknown, or already ended: nothing to stop
        task.cancel()
        await asyncio.wait((task,))
        if task.cancelled():  # not finished on its own in the meantime
            self._core.stats.ws_streams_cancelled += 1
            await self.send_json({"type": "cancelled", "id": stream_id})

    async def _stream(
        self, stream_id: str, body: object, resume_after: int | None, t0: float
    ) -> None:
        core = self._core
        stats = core.stats
        try:
            if not isinstance(body, dict):
                raise RequestError(
                    400, "'body' must be a Chat Completions request object.", param="body"
                )
            # WebSocket always streams: the body's own flag is overridden, not an error.
            req = parse_chat_object({**body, "stream": True}, core.models)
            plan = plan_reply(req)
            start = resume_start(resume_after, plan, "resume_after")
            with core.admit(req, self._caller) as admission:
                stats.ws_streams_started += 1
                stats.ws_active_streams += 1
                try:
                    await self.send_json({"type": "start", "id": stream_id, "model": req.model.id})
                    wire = _WSWire(self, stream_id, plan, admission)
                    ending = await core.produce(
                        wire, plan, start=start, t0=t0, faults=admission.faults
                    )
                    admission.release()  # before the end goes out: see Admission.release
                    if ending is Ending.FINISHED:
                        await self.send_text(wire.end_message())
                        stats.ws_streams_completed += 1
                    # NO_DONE: the stream just stops, socket open (the client's idle timeout
                    # must notice); DROPPED: the socket is closing and the session ends.
                finally:
                    stats.ws_active_streams -= 1
        except RequestError as exc:
            await self.send_error(stream_id, exc)
        except OSError:
            pass  # the socket is gone; the session is ending every stream
        except Exception:
            # A bug, not a client error: say so on this stream and keep the socket.
            _log.exception("WebSocket stream %r failed", stream_id)
            await self.send_error(
                stream_id,
                RequestError(
                    500,
                    "The simulator failed on this stream (see the server log).",
                    type="server_error",
                    code="server_error",
                ),
            )


class _WSWire:
    """The WebSocket framing :func:`~.produce.produce` writes one stream through."""

    __slots__ = ("_admission", "_head", "_plan", "_send", "_session", "_stream_id")

    def __init__(self, session: _Session, stream_id: str, plan: Plan, admission: Admission) -> None:
        self._session = session
        self._admission = admission
        self._send = session._send
        self._stream_id = stream_id
        self._plan = plan
        # Everything before the seq is the same for every token of the stream.
        self._head = '{"type":"token","id":' + json.dumps(stream_id) + ',"seq":'

    def _token_text(self, seq: int, piece: str) -> str:
        kinds = self._plan.kinds
        if kinds is None or kinds[seq] is None:
            return f'{self._head}{seq},"content":{_json_str(piece)}}}'
        # Reasoning and tool-call pieces carry the fields of a Chat Completions delta.
        fields = delta_fields(piece, kinds[seq], self._plan.reasoning_field)
        return f"{self._head}{seq},{fields}}}"

    def end_message(self) -> str:
        """The ``end`` message: finish reason and the whole logical stream's usage."""
        plan = self._plan
        return _dumps(
            {
                "type": "end",
                "id": self._stream_id,
                "finish_reason": plan.finish_reason,
                "usage": plan.usage(),
            }
        )

    async def token(self, seq: int, piece: str) -> None:
        await self._send({"type": "websocket.send", "text": self._token_text(seq, piece)})

    async def malformed(self, seq: int) -> None:
        # A token message cut short: a text frame that is not valid JSON.
        await self._session.send_text(f'{self._head}{seq},"content":')

    async def drop(self, seq: int, mid_frame: bool) -> None:
        transport = transport_of(self._send)
        if transport is None:
            # Not on uvicorn: the nearest thing a plain ASGI app can do is close abnormally.
            await self._send({"type": "websocket.close", "code": 1011, "reason": "drop fault"})
            return
        if mid_frame:
            pieces = self._plan.pieces
            text = self._token_text(seq, pieces[seq]) if seq < len(pieces) else self.end_message()
            frame = text_frame(text.encode())
            transport.write(frame[: len(frame) // 2])
        self._admission.release()
        cut_connection(transport)
