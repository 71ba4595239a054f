"""Chat Completions over one WebSocket: many concurrent streams multiplexed on one connection.

The wire protocol is the bundled server's ``GET /v1/ws`` (docs/protocol.md): the client sends
``chat.request`` (with ``resume_after`` to resume) and ``chat.cancel``; the server answers with
``start``, ``token`` (numbered by ``seq``), ``end``, ``error`` and ``cancelled`` messages, each
tagged with its stream's id.

:class:`WSConnection` owns one socket and one reader task. The reader decodes every message once
(``jiter``, straight from the frame's bytes) and hands it to its stream's queue; each stream is an
async iterator over its own queue, so a slow consumer holds back only itself, and cancelling one
stream (``chat.cancel``) leaves the others running on the same socket. Keepalive is websockets'
own ping/pong (RFC 6455 §5.5.2); the server pings too.

Failures are typed here, once: a refused handshake by status (401 → AuthError, 429 →
RateLimitError, as over HTTP), an unreachable host as ConnectError, a socket that closes under
running streams as StreamInterrupted for each of them (with its partial text), an ``error``
message by its ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from jiter import from_json
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from ..errors import (
    ConnectError,
    ProtocolError,
    StreamInterrupted,
    StreamkitError,
)
from ..events import Event, StreamEnd, StreamStart, TokenDelta, Usage
from ._attempt import ResumeFrom
from ._common import delta_pieces, describe, parse_retry_after, status_error
from ._rehearsal import MESSAGES, MODEL, rehearse, rehearsed

__all__ = ["WSConnection", "WSStream", "stream_chat_ws", "ws_url"]

_clock = time.perf_counter
_ids = itertools.count(1)


def ws_url(base_url: str) -> str:
    """The WebSocket endpoint of an API root: ``http://h:p/v1`` → ``ws://h:p/v1/ws``."""
    root = base_url.rstrip("/")
    if root.startswith("https://"):
        root = "wss://" + root[len("https://") :]
    elif root.startswith("http://"):
        root = "ws://" + root[len("http://") :]
    return root + "/ws"


class _Closed:
    """Put in a stream's queue to end it with ``error``: the socket closed (``socket``), or
    this stream's data was broken (the server's stream may still run: cancel it)."""

    __slots__ = ("error", "socket")

    def __init__(self, error: StreamkitError, *, socket: bool = True) -> None:
        self.error = error
        self.socket = socket


_TERMINAL = frozenset({"end", "error", "cancelled"})


class WSStream:
    """One stream on a :class:`WSConnection`: its messages, in order, as dicts.

    Iterate it (``async for message in stream``: up to and including the ``end``, ``error`` or
    ``cancelled`` message) or call :meth:`get`; :meth:`close` unregisters the stream and, if the
    server had not ended it, sends ``chat.cancel`` so it stops generating (the socket stays
    open).
    """

    __slots__ = ("_conn", "_queue", "finished", "id")

    def __init__(self, conn: WSConnection, stream_id: str) -> None:
        self._conn = conn
        self.id = stream_id
        self._queue: asyncio.Queue[dict[str, Any] | _Closed] = asyncio.Queue()
        self.finished = False

    async def get(self) -> dict[str, Any]:
        """The next message of this stream.

        Raises:
            StreamInterrupted: the socket closed first (``partial_text`` is left to the caller).
        """
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self.finished = self.finished or item.socket
            raise _clone(item.error)
        return item

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while not self.finished:
            message = await self.get()
            if message.get("type") in _TERMINAL:
                self.finished = True
            yield message

    def close(self) -> None:
        """Stop listening; cancel the stream on the server unless it has ended."""
        self._conn._unregister(self.id)
        if not self.finished:
            self.finished = True
            self._conn.cancel(self.id)


class WSConnection:
    """One WebSocket to the bundled server's ``/v1/ws``, carrying many streams at once.

    Args:
        url: the ``ws://…/v1/ws`` endpoint (see :func:`ws_url`).
        api_key: sent as ``Authorization: Bearer …`` on the handshake.
        open_timeout: seconds for the TCP connection and the handshake.
        ping_interval: seconds between keepalive pings (None: no pings).
        ping_timeout: seconds to wait for a pong before the connection counts as dead.

    Use ``async with WSConnection(url) as conn`` (or :meth:`connect` / :meth:`aclose`).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.url = url
        self._api_key = api_key
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._streams: dict[str, WSStream] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._closed_error: StreamkitError | None = None
        self._closing: asyncio.Task[None] | None = None
        self.bytes_received = 0
        self.messages_received = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._ws is not None else "new")
        return f"<WSConnection {self.url} {state}, {len(self._streams)} streams>"

    @property
    def closed(self) -> bool:
        """True once the socket has closed (for any reason); a closed connection stays closed."""
        return self._closed_error is not None

    @property
    def active_streams(self) -> int:
        """Streams registered on this connection now."""
        return len(self._streams)

    async def connect(self) -> WSConnection:
        """Open the socket and start the reader (no-op if open).

        Raises:
            APIStatusError: the handshake was refused with an HTTP status (typed by status).
            ConnectError: the server cannot be reached or does not speak WebSocket there.
        """
        if self._ws is not None:
            if self._closed_error is not None:
                raise _clone(self._closed_error)  # why it closed, e.g. the server's 401
            return self
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            # compression=None: permessage-deflate would cost CPU on every small token frame.
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                compression=None,
                max_queue=None,  # the reader drains every frame at once into per-stream queues
            )
        except InvalidStatus as exc:
            raise _handshake_error(exc, self.url) from exc
        except InvalidURI as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc} (check base_url)") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(
                f"cannot connect to {self.url}: {describe(exc)} "
                "(is the server running, and does it serve WebSocket at /v1/ws?)",
                url=self.url,
            ) from exc
        self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))
        return self

    async def open_stream(
        self,
        body: Mapping[str, Any],
        *,
        resume_after: int | None = None,
        stream_id: str | None = None,
    ) -> WSStream:
        """Start one stream: send ``chat.request`` and return its message iterator.

        Args:
            body: the Chat Completions body (``model``, ``messages``, …).
            resume_after: continue after this token index (a resume).
            stream_id: the stream's id on this connection (default: a fresh one).

        Raises:
            StreamInterrupted: the socket is closed.
        """
        await self.connect()
        stream_id = stream_id or f"s{next(_ids)}"
        if stream_id in self._streams:
            raise ProtocolError(f"stream id {stream_id!r} is already in use on {self.url}")
        stream = WSStream(self, stream_id)
        self._streams[stream_id] = stream
        request = {
            "type": "chat.request",
            "id": stream_id,
            "body": dict(body),
            "resume_after": resume_after,
        }
        assert self._ws is not None
        try:
            await self._ws.send(json.dumps(request))
        except ConnectionClosed as exc:
            self._unregister(stream_id)
            raise self._interrupted(exc) from exc
        return stream

    def cancel(self, stream_id: str) -> None:
        """Send ``chat.cancel`` for one stream without waiting; the socket and others go on."""
        ws = self._ws
        if ws is None or self.closed:
            return
        message = json.dumps({"type": "chat.cancel", "id": stream_id})
        task = asyncio.get_running_loop().create_task(self._send_quietly(ws, message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def aclose(self) -> None:
        """Close the socket; streams still running end with StreamInterrupted."""
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._closing is not None:
            await asyncio.gather(self._closing, return_exceptions=True)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._closed_error is None:
            self._fail(StreamInterrupted(f"the WebSocket to {self.url} was closed by the client"))

    async def __aenter__(self) -> WSConnection:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        streams = self._streams
        try:
            while True:
                raw = await ws.recv(decode=False)
                self.bytes_received += len(raw)
                self.messages_received += 1
                data = raw if isinstance(raw, bytes) else raw.encode()
                try:
                    message = from_json(data)
                except ValueError:
                    if not self._malformed(data):
                        return
                    continue
                if not isinstance(message, dict):
                    continue
                stream_id = message.get("id")
                if stream_id is None and message.get("type") == "error":
                    # An error for no stream is about the socket (a refused key, on a server
                    # that cannot refuse the handshake itself): every stream fails with it.
                    self._fail(_message_error(message, self.url, ""))
                    continue
                stream = streams.get(str(stream_id))
                if stream is not None:
                    stream._queue.put_nowait(message)
        except ConnectionClosed as exc:
            self._fail(self._interrupted(exc))

    def _malformed(self, data: bytes) -> bool:
        """Route a frame that is not valid JSON; False when the socket had to be given up.

        The stream it belongs to gets a ProtocolError (as a malformed SSE frame does) and the
        others go on. A cut-short message still names its stream at the front, which jiter's
        partial mode reads; a frame that names none cannot be routed, so every stream on the
        socket may have lost a message and none of them can be trusted.
        """
        error = ProtocolError(
            f"malformed message on the WebSocket to {self.url}: {data[:80]!r}", url=self.url
        )
        try:
            head = from_json(data, partial_mode=True)
        except ValueError:
            head = None
        stream = self._streams.get(str(head.get("id"))) if isinstance(head, dict) else None
        if stream is not None:
            stream._queue.put_nowait(_Closed(error, socket=False))
            return True
        self._fail(error)
        if self._ws is not None:
            self._closing = asyncio.get_running_loop().create_task(
                self._ws.close(code=1007, reason="invalid JSON")
            )
        return False

    def _interrupted(self, exc: ConnectionClosed) -> StreamkitError:
        if self._closed_error is not None:
            return self._closed_error
        how = describe(exc)
        return StreamInterrupted(
            f"the WebSocket to {self.url} closed mid-stream ({how})", url=self.url
        )

    def _fail(self, error: StreamkitError) -> None:
        if self._closed_error is None:
            self._closed_error = error
        closed = _Closed(self._closed_error)
        for stream in list(self._streams.values()):
            stream._queue.put_nowait(closed)
        self._streams.clear()

    def _unregister(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    @staticmethod
    async def _send_quietly(ws: ClientConnection, message: str) -> None:
        # A cancel racing the socket's close has nothing left to cancel.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(message)


def _clone(error: StreamkitError) -> StreamkitError:
    """A copy of an error shared by several streams, so each can set its own partial text."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


def _handshake_error(exc: InvalidStatus, url: str) -> StreamkitError:
    response = exc.response
    body = response.body or b""
    message = body.decode("utf-8", "replace").strip() or response.reason_phrase or "refused"
    code: str | None = None
    try:
        data = json.loads(body)
    except ValueError:
        pass
    else:
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = str(error["code"]) if error.get("code") is not None else None
    return status_error(
        response.status_code,
        message,
        url=url,
        code=code,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


async def stream_chat_ws(
    connect: Callable[[], Awaitable[WSConnection]],
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    attempt: ResumeFrom | None = None,
) -> AsyncIterator[Event]:
    """Stream one chat completion over a shared WebSocket, as streamkit events.

    Yields :class:`StreamStart`, a :class:`TokenDelta` per token, :class:`StreamEnd`, as the SSE
    transports do. Leaving early (``aclose``, task cancel) sends ``chat.cancel`` for this stream
    only.

    Args:
        connect: returns the open connection to use (the client's, shared by its streams).
        model: the model id.
        messages: OpenAI chat messages.
        params: further body fields; ``extra_body`` is merged into the body.
        attempt: a resume sends ``resume_after``; the server's ``seq`` comes back on each
            token as its ``event_id``.

    Raises:
        StreamkitError: typed, with this attempt's partial text.
    """
    fields = dict(params or {})
    extra_body = fields.pop("extra_body", None) or {}
    fields.pop("extra_headers", None)  # headers belong to the handshake, made once per socket
    body: dict[str, Any] = {"model": model, "messages": list(messages), **fields, **extra_body}
    use_ids = attempt is not None and attempt.use_ids
    resume_after = attempt.resume_after if use_ids and attempt is not None else None
    parts: list[str] = []
    index = attempt.first_index if attempt is not None else 0
    event_id: str | None = None  # the server's seq of the last token, once it sent one
    if not rehearsed("ws"):
        await rehearse("ws", _rehearsal)  # the first request's setup, before its clock
    sent_at = _clock()
    conn = await connect()  # the first stream of a socket waits for its handshake: timed
    stream = await conn.open_stream(body, resume_after=resume_after)
    started = False
    try:
        while True:
            try:
                message = await stream.get()
            except StreamkitError as exc:
                exc.partial_text = "".join(parts)
                raise
            kind = message.get("type")
            now = _clock()
            if kind == "token":
                if not started:
                    started = True
                    yield StreamStart(sent_at, now, model)
                if use_ids:
                    seq = message.get("seq")
                    if isinstance(seq, int):
                        index = seq
                        event_id = str(seq)
                content = message.get("content")
                if (
                    "reasoning_content" in message
                    or "reasoning" in message
                    or ("tool_calls" in message)
                ):
                    # Reasoning and tool-call pieces: the fields of a Chat Completions delta.
                    for piece in delta_pieces(message, index, now, event_id):
                        yield piece
                        index += 1
                    if content:
                        parts.append(content)
                    continue
                content = content or ""
                parts.append(content)
                yield TokenDelta(content, index, now, event_id)
                index += 1
            elif kind == "start":
                if not started:
                    started = True
                    yield StreamStart(sent_at, now, str(message.get("model") or model))
            elif kind == "end":
                stream.finished = True
                if not started:
                    yield StreamStart(sent_at, now, model)
                raw_usage = message.get("usage")
                usage = Usage.from_dict(raw_usage) if isinstance(raw_usage, dict) else None
                yield StreamEnd(message.get("finish_reason"), usage, now)
                return
            elif kind == "error":
                stream.finished = True
                raise _message_error(message, conn.url, "".join(parts))
            elif kind == "cancelled":
                stream.finished = True
                raise StreamInterrupted(
                    f"the server cancelled stream {stream.id} on {conn.url}",
                    url=conn.url,
                    partial_text="".join(parts),
                )
            else:
                raise ProtocolError(
                    f"unexpected message on the WebSocket to {conn.url}: type {kind!r}",
                    url=conn.url,
                    partial_text="".join(parts),
                )
    finally:
        stream.close()


def _message_error(message: Mapping[str, Any], url: str, partial_text: str) -> StreamkitError:
    error = message.get("error")
    info: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    status = message.get("status")
    retry_after = message.get("retry_after")
    code = info.get("code")
    return status_error(
        status if isinstance(status, int) else 500,
        str(info.get("message") or "error"),
        url=url,
        code=str(code) if code is not None else None,
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        partial_text=partial_text,
    )


async def _rehearsal(base_url: str) -> None:
    """One stream on a throwaway connection (see :mod:`._rehearsal`)."""
    conn = WSConnection(ws_url(base_url), ping_interval=None)
    try:
        async for _ in stream_chat_ws(conn.connect, model=MODEL, messages=MESSAGES):
            pass
    finally:
        await conn.aclose()
