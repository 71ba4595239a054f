"""What every transport shares: HTTP status and httpx2 errors → typed errors, ``Retry-After``,
the event-stream content type, and the one rule for when a chat stream is complete.

One table maps a status to its :mod:`streamkit.errors` class, so a 429 is a
:class:`~streamkit.errors.RateLimitError` whether it came as an HTTP response, through the openai
SDK, or as a WebSocket ``error`` message.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx2
from jiter import from_json

from .._sse import ServerSentEvent
from ..errors import (
    APIStatusError,
    AuthError,
    BadRequestError,
    ConnectError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    StreamInterrupted,
    StreamkitError,
)
from ..events import (
    Piece,
    ReasoningDelta,
    ReconnectDelay,
    StreamEnd,
    TokenDelta,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from ._attempt import ResumeFrom

__all__ = [
    "BODY_ENDS",
    "STATUS_CLASSES",
    "ChatChunks",
    "StreamFold",
    "chat_request",
    "delta_pieces",
    "describe",
    "error_fields",
    "is_event_stream",
    "not_event_stream",
    "parse_retry_after",
    "read_error",
    "retry_after_from_headers",
    "status_error",
    "stream_error",
]

STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}
"""Statuses with their own class; other 5xx are :class:`ServerError`, other 4xx the base class."""


BODY_ENDS = (StreamInterrupted, ReadTimeout)
"""The errors that only end a body early: once the reply is complete (see
:meth:`ChatChunks.end`) a chat stream ends normally instead of raising them."""


def is_event_stream(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is ``text/event-stream``, parameters aside.

    WHATWG HTML fails an event source whose response has any other type; a MIME type's essence
    is case-insensitive, and parameters (``; charset=utf-8``, even a bare ``;``) do not change it.
    """
    if not content_type:
        return False
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def not_event_stream(url: str, status: int, content_type: str | None) -> ProtocolError:
    """The error for a successful answer that is not an event stream (the same on every wire)."""
    return ProtocolError(
        f"{url} answered {status} with {content_type or 'no content type'}, "
        "not text/event-stream (is this a streaming endpoint?)",
        url=url,
    )


def chat_request(
    base_url: str,
    api_key: str | None,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None,
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``(url, headers, body)`` of a streamed chat completion, for the transports without the SDK.

    ``params`` are further body fields; ``extra_body`` is merged into the body and
    ``extra_headers`` into the headers, as the openai SDK does. Usage is asked for unless
    ``params`` say otherwise.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    fields = dict(params or {})
    extra_body = fields.pop("extra_body", None) or {}
    headers = {str(k): str(v) for k, v in (fields.pop("extra_headers", None) or {}).items()}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body: dict[str, Any] = {"model": model, "messages": list(messages), "stream": True}
    body.setdefault("stream_options", {"include_usage": True})
    body.update(fields)
    body.update(extra_body)
    return url, headers, body


def error_fields(body: bytes, default: str) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI-style error body, or the raw text of any other."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:200] or default), None
    error = data.get("error", data) if isinstance(data, dict) else {}
    if not isinstance(error, dict):
        return str(error)[:200], None
    code = error.get("code")
    return str(error.get("message") or default), (str(code) if code is not None else None)


def status_error(
    status: int,
    message: str,
    *,
    url: str,
    code: str | None = None,
    retry_after: float | None = None,
    partial_text: str = "",
) -> APIStatusError:
    """The typed error for an error status, with a hint that says what to do about it.

    Args:
        status: the HTTP (or WebSocket ``error`` message) status.
        message: the server's own words (an OpenAI error body's ``message``).
        url: the endpoint, named in the message.
        code: the error body's machine-readable ``code``.
        retry_after: seconds the server asked us to wait.
        partial_text: text received before the error.
    """
    cls = STATUS_CLASSES.get(status, ServerError if status >= 500 else APIStatusError)
    hint = ""
    if cls is AuthError:
        hint = " (set OPENAI_API_KEY or pass api_key=)"
    elif cls is NotFoundError:
        if code == "unknown_url":
            hint = ""  # the server (or list_models) already says which URLs exist
        elif code == "model_not_found" or "model" in message.lower():
            hint = " (list the models with GET /v1/models)"
        else:
            hint = " (check that base_url ends in /v1)"
    elif cls is RateLimitError and retry_after is not None:
        hint = f" (the server asks to wait {retry_after:g} s)"
    return cls(
        f"{status} from {url}: {message}{hint}",
        status_code=status,
        url=url,
        retry_after=retry_after,
        code=code,
        partial_text=partial_text,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # neither seconds nor an HTTP date: ignore it rather than guess
    return max(0.0, when.timestamp() - time.time())


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI's) or ``Retry-After``."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def read_error(exc: BaseException, url: str, partial_text: str) -> StreamkitError:
    """The typed error for an httpx2 exception raised while connecting or reading a stream."""
    if isinstance(exc, httpx2.TimeoutException):
        if isinstance(exc, httpx2.ConnectTimeout):
            return ConnectError(
                f"cannot connect to {url}: timed out (is the server up? check base_url)",
                url=url,
                partial_text=partial_text,
            )
        return ReadTimeout(
            f"no data from {url} within the read timeout (raise timeout= or check the server)",
            url=url,
            partial_text=partial_text,
        )
    if isinstance(exc, httpx2.ConnectError | httpx2.UnsupportedProtocol | httpx2.InvalidURL):
        return ConnectError(
            f"cannot connect to {url}: {describe(exc)} (is the server running? check base_url)",
            url=url,
            partial_text=partial_text,
        )
    return StreamInterrupted(
        f"the connection to {url} dropped mid-stream: {describe(exc)}",
        url=url,
        partial_text=partial_text,
    )


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, or just its type when it has no message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def stream_error(error: object, url: str, partial_text: str) -> StreamkitError:
    """The typed error for an ``{"error": …}`` frame sent after the stream started.

    OpenAI (and vLLM) may report a failure that way once the 200 headers are out.
    """
    info = error if isinstance(error, Mapping) else {"message": str(error)}
    message = str(info.get("message") or "error")
    code = str(info.get("code", ""))
    return ServerError(
        f"error event in the stream from {url}: {message}",
        status_code=int(code) if code.isdigit() else 500,
        url=url,
        code=str(info.get("type") or info.get("code") or "") or None,
        partial_text=partial_text,
    )


class StreamFold:
    """What the folds of both dialects share (:class:`ChatChunks`, and
    :class:`~streamkit.transports._responses.ResponseEvents`): the pieces' count, the answer
    text, the finish and usage, the ``retry:`` delay, and the rule of :meth:`end`.

    A subclass feeds the events, says when its reply is :attr:`complete`, and what
    :meth:`unfinished` reads like.
    """

    __slots__ = ("_retry", "finish_reason", "index", "parts", "url", "usage")

    def __init__(self, url: str, attempt: ResumeFrom | None = None) -> None:
        self.url = url
        self.index = attempt.first_index if attempt is not None else 0
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self._retry: float | None = None

    @property
    def partial_text(self) -> str:
        """The answer text received so far in this attempt."""
        return "".join(self.parts)

    @property
    def complete(self) -> bool:
        """The server said the reply is over."""
        return self.finish_reason is not None

    def unfinished(self) -> str:
        """What was missing when the body ended too soon, for :class:`StreamInterrupted`."""
        return f"the server finished after {self.index} pieces"

    def reconnect(self, delay: float | None, now: float) -> ReconnectDelay | None:
        """The event for the server's ``retry:`` delay (seconds), when it is new; else None."""
        if delay is None or delay == self._retry:
            return None
        self._retry = delay
        return ReconnectDelay(delay, now)

    def protocol_error(self, message: str) -> ProtocolError:
        """A :class:`ProtocolError` from this stream, with the partial text so far."""
        return ProtocolError(message, url=self.url, partial_text=self.partial_text)

    def end(self, now: float, *, cut: bool = False) -> StreamEnd:
        """The body ended: the stream's end, or :class:`StreamInterrupted` if it was cut short.

        The rule, the same on every SSE transport: the reply is complete once the server said
        so (:attr:`complete`), however the body then ends: with ``[DONE]`` and its blank
        line, without them, with bytes of an unfinished frame left over, or with the connection
        dropping or going silent (the transports end the stream here instead of raising those
        :data:`BODY_ENDS` errors). ``usage`` is the usage the server sent whole, else None: a
        server that ignores ``include_usage`` (llama.cpp) and a body cut in the middle of the
        usage frame end alike, complete and without usage. A body that ends before is
        :class:`StreamInterrupted` with the partial text.

        Args:
            now: when the body ended.
            cut: bytes of an unfinished frame were left over.
        """
        if not self.complete:
            raise StreamInterrupted(
                f"the stream from {self.url} ended{' mid-frame' if cut else ''} before "
                + self.unfinished(),
                url=self.url,
                partial_text=self.partial_text,
            )
        return StreamEnd(self.finish_reason, self.usage, now)


class ChatChunks(StreamFold):
    """Folds the events of a Chat Completions SSE stream into streamkit events, one at a time.

    Shared by every SSE transport (through the openai SDK, httpx2 or fast-sse), so the rules live
    in one place: role-only and empty chunks are not tokens, an ``error`` object mid-stream is a
    typed error, the usage chunk (empty ``choices``) never raises, with ids in use a token's SSE
    id numbers it (a resumed stream continues its indices) and rides on it as
    :attr:`~streamkit.events.TokenDelta.event_id`, and :meth:`end` decides whether the
    body's end completes the reply. It sits on the per-token path: ``jiter`` parses (~1 µs a
    chunk against ~3.6 µs for ``json``), and nothing builds SDK models.
    """

    __slots__ = ("_last_id", "_use_ids", "done", "event_id")

    def __init__(self, url: str, attempt: ResumeFrom | None = None) -> None:
        super().__init__(url, attempt)
        self._use_ids = attempt is not None and attempt.use_ids
        self._last_id = attempt.last_event_id if attempt is not None and self._use_ids else None
        self.event_id: str | None = None  # the server's id learned in this attempt, if any
        self.done = False

    @property
    def complete(self) -> bool:
        """The server said the reply is over: a ``finish_reason`` or ``[DONE]`` arrived."""
        return self.done or self.finish_reason is not None

    def unfinished(self) -> str:
        return f"the server finished (no finish_reason, no [DONE]) after {len(self.parts)} chunks"

    def feed(self, sse: ServerSentEvent, now: float) -> tuple[Piece, ...]:
        """Take one SSE event (arrived at ``now``); return the pieces it carries, in order.

        Usually one :class:`~streamkit.events.TokenDelta` or none; a chunk that carries
        reasoning and content together gives the reasoning first, and one with several tool
        calls a :class:`~streamkit.events.ToolCallDelta` each.
        """
        data = sse.data
        if data == b"[DONE]":
            self.done = True
            return ()
        try:
            chunk = from_json(data)
        except ValueError as exc:
            raise self.protocol_error(
                f"malformed JSON in the stream from {self.url}: {data[:80]!r}"
            ) from exc
        if not isinstance(chunk, dict):
            raise self.protocol_error(f"unexpected stream data from {self.url}: {data[:80]!r}")
        if "error" in chunk:
            raise stream_error(chunk["error"], self.url, self.partial_text)
        pieces: tuple[Piece, ...] = ()
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                get = delta.get
                other = get("reasoning_content") or get("reasoning") or get("tool_calls")
                if content and not other:  # the hot path: a content chunk and nothing else
                    self._number(sse)
                    self.parts.append(content)
                    pieces = (TokenDelta(content, self.index, now, self.event_id),)
                    self.index += 1
                elif other:  # role-only and empty chunks are not pieces
                    self._number(sse)
                    pieces = delta_pieces(delta, self.index, now, self.event_id)
                    self.index += len(pieces)
                    if content:
                        self.parts.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        raw_usage = chunk.get("usage")
        if raw_usage:
            self.usage = Usage.from_dict(raw_usage)
        return pieces

    def _number(self, sse: ServerSentEvent) -> None:
        """With ids in use, a new SSE id numbers the event's first piece (WHATWG: an event
        carries the last id in force). Opaque (non-numeric) ids only resume."""
        if self._use_ids:
            sid = sse.id
            if sid is not None and sid != self._last_id:
                self._last_id = self.event_id = sid
                if sid.isdigit():
                    self.index = int(sid)


def delta_pieces(
    delta: Mapping[str, Any], index: int, now: float, event_id: str | None
) -> tuple[Piece, ...]:
    """The pieces of one Chat Completions ``delta`` (or WebSocket token message), in order:
    reasoning (``reasoning_content`` or ``reasoning``: servers use either name, and a few send
    both with the same text, so the first one set is taken), tool-call pieces, then content.
    Each takes the next index from ``index``.
    """
    out: list[Piece] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out.append(ReasoningDelta(reasoning, index, now, event_id))
        index += 1
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for position, call in enumerate(calls):
            if not isinstance(call, Mapping):
                continue
            function = call.get("function")
            fields: Mapping[str, Any] = function if isinstance(function, Mapping) else {}
            call_index = call.get("index")
            call_id = call.get("id")
            name = fields.get("name")
            arguments = fields.get("arguments")
            piece = ToolCallDelta(
                call_index if isinstance(call_index, int) else position,
                call_id if isinstance(call_id, str) and call_id else None,
                name if isinstance(name, str) and name else None,
                arguments if isinstance(arguments, str) else "",
                index,
                now,
                event_id,
            )
            if piece.id is None and piece.name is None and not piece.arguments_piece:
                continue  # an empty piece says nothing
            out.append(piece)
            index += 1
    content = delta.get("content")
    if isinstance(content, str) and content:
        out.append(TokenDelta(content, index, now, event_id))
    return tuple(out)
