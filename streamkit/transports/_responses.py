"""OpenAI's Responses API as a transport dialect: the request, and the fold of its typed events.

``POST /v1/responses`` with ``stream: true`` sends typed SSE events (``event: <type>`` and JSON
``data`` carrying ``type`` and ``sequence_number``). Every SSE transport (the SDK, httpx2 and
fast-sse) sends the request built here and folds the events with :class:`ResponseEvents` into the
SAME streamkit events as Chat Completions: ``response.output_text.delta`` → ``TokenDelta``,
``response.reasoning_summary_text.delta`` (and ``response.reasoning_text.delta``) →
``ReasoningDelta``, a ``function_call`` output item and its
``response.function_call_arguments.delta`` → ``ToolCallDelta``, and ``response.completed`` /
``response.incomplete`` → ``StreamEnd`` with usage and a Chat Completions finish reason
(``stop``, ``length`` for ``max_output_tokens``, ``tool_calls``). ``response.failed`` and
``error`` events become the typed errors the status table gives their ``code``.

Resume: each piece's ``event_id`` is ``"{response_id}:{sequence_number}"``, so the one retry
loop (:mod:`streamkit.resume`) needs nothing new; a resumed attempt asks
``GET {base}/responses/{id}?stream=true&starting_after=N`` (OpenAI allows it for
``background: true`` responses; the bundled server for any stored streamed one). Pieces are
counted locally from the attempt's ``first_index``: ``starting_after`` continues exactly after
the last kept piece, so the count carries on.

The fold takes the event's type from ``data.type`` and falls back to the SSE ``event:`` field,
so a server that omits ``event:`` lines reads the same; unknown types are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import quote

from jiter import from_json

from .._sse import ServerSentEvent
from ..errors import ProtocolError, StreamkitError
from ..events import (
    Piece,
    ReasoningDelta,
    TokenDelta,
    ToolCallDelta,
    Usage,
)
from ._common import ChatChunks, StreamFold, chat_request, status_error

if TYPE_CHECKING:
    from ._attempt import ResumeFrom

__all__ = [
    "API_KINDS",
    "ERROR_STATUS",
    "Api",
    "ResponseEvents",
    "responses_fields",
    "responses_input",
    "responses_request",
    "resume_point",
]

Api = Literal["chat", "responses"]
"""The request dialect: OpenAI Chat Completions or the Responses API."""
API_KINDS = ("chat", "responses")

ERROR_STATUS: dict[str, int] = {
    "rate_limit_exceeded": 429,
    "invalid_prompt": 400,
    "invalid_request_error": 400,
    "server_error": 500,
    "vector_store_timeout": 504,
}
"""The HTTP status a ``response.failed`` / ``error`` event's ``code`` stands for (others: 500)."""

# Chat Completions fields that the Responses API names differently or does not take.
_RENAMED = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
_DROPPED = frozenset({"stream_options", "n"})


def responses_input(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses ``input`` items: ``{role, content}`` messages as they are,
    an assistant's ``tool_calls`` as ``function_call`` items and ``tool`` results as
    ``function_call_output`` items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id", ""),
                    "output": message.get("content") or "",
                }
            )
            continue
        calls = message.get("tool_calls") if role == "assistant" else None
        if message.get("content") is not None or not calls:
            items.append({"role": role, "content": message.get("content") or ""})
        for call in calls or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id", ""),
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments", ""),
                }
            )
    return items


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A Chat Completions tool (``{type, function: {...}}``) in the Responses shape (flat)."""
    function = tool.get("function")
    if tool.get("type") == "function" and isinstance(function, Mapping):
        return {"type": "function", **function}
    return dict(tool)


def _tool_choice(choice: object) -> object:
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and "name" in function:
            return {"type": "function", "name": function["name"]}
    return choice


def responses_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    """Chat Completions request fields as Responses fields (no model, input or stream):
    ``max_tokens`` → ``max_output_tokens``, tools and ``tool_choice`` in the flat shape,
    ``stream_options`` dropped; ``extra_body`` and ``extra_headers`` are left for the caller."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _DROPPED:
            continue
        if key == "tools" and isinstance(value, list):
            out["tools"] = [_tool(t) if isinstance(t, Mapping) else t for t in value]
        elif key == "tool_choice":
            out["tool_choice"] = _tool_choice(value)
        else:
            out[_RENAMED.get(key, key)] = value
    return out


def resume_point(attempt: ResumeFrom | None) -> tuple[str, int] | None:
    """``(response_id, sequence_number)`` to continue after, when the attempt resumes one."""
    if attempt is None or not attempt.use_ids or attempt.last_event_id is None:
        return None
    response_id, _, seq = attempt.last_event_id.rpartition(":")
    if not response_id or not seq.isdigit():
        return None  # not an id of this dialect: start afresh
    return response_id, int(seq)


def responses_request(
    base_url: str,
    api_key: str | None,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None,
    attempt: ResumeFrom | None,
) -> tuple[str, str, dict[str, str], dict[str, Any] | None]:
    """``(method, url, headers, body)`` of one attempt, for the transports without the SDK.

    A fresh attempt posts the request; a resumed one (see :func:`resume_point`) asks for the
    stored response's events after the last kept one, with no body. ``extra_body`` is merged
    into the body and ``extra_headers`` into the headers, as the openai SDK does.
    """
    root = base_url.rstrip("/")
    fields = dict(params or {})
    extra_body = fields.pop("extra_body", None) or {}
    headers = {str(k): str(v) for k, v in (fields.pop("extra_headers", None) or {}).items()}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    point = resume_point(attempt)
    if point is not None:
        response_id, seq = point
        url = f"{root}/responses/{quote(response_id, safe='')}?stream=true&starting_after={seq}"
        return "GET", url, headers, None
    body: dict[str, Any] = {"model": model, "input": responses_input(messages), "stream": True}
    body.update(responses_fields(fields))
    body.update(extra_body)
    return "POST", root + "/responses", headers, body


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def _usage(data: object) -> Usage | None:
    """A Responses ``usage`` object as :class:`~streamkit.events.Usage`."""
    if not isinstance(data, Mapping):
        return None
    prompt = _count(data.get("input_tokens"))
    completion = _count(data.get("output_tokens"))
    total = _count(data.get("total_tokens")) or prompt + completion
    inp = data.get("input_tokens_details")
    out = data.get("output_tokens_details")
    cached = _count(inp.get("cached_tokens")) if isinstance(inp, Mapping) else 0
    reasoning = _count(out.get("reasoning_tokens")) if isinstance(out, Mapping) else 0
    return Usage(prompt, completion, total, cached, reasoning)


class ResponseEvents(StreamFold):
    """Folds the events of a Responses API stream into streamkit events, one at a time.

    The same interface as :class:`~streamkit.transports._common.ChatChunks` (``feed``,
    ``reconnect``, ``end``, ``parts``, ``partial_text``, ``complete``), so the three SSE
    transports drive either dialect alike.
    """

    __slots__ = ("_calls", "response_id")

    def __init__(self, url: str, attempt: ResumeFrom | None = None) -> None:
        super().__init__(url, attempt)
        point = resume_point(attempt)
        self.response_id: str | None = point[0] if point is not None else None
        self._calls: dict[str, int] = {}  # function_call item id -> call index

    def unfinished(self) -> str:
        return f"the response finished (no response.completed) after {self.index} pieces"

    def _fail(self, message: str, data: bytes) -> ProtocolError:
        return self.protocol_error(f"{message} in the stream from {self.url}: {data[:80]!r}")

    def feed(self, sse: ServerSentEvent, now: float) -> tuple[Piece, ...]:
        """Take one SSE event (arrived at ``now``); return the piece it carries, if any."""
        data = sse.data
        if not data or data == b"[DONE]":
            return ()
        try:
            event = from_json(data)
        except ValueError as exc:
            raise self._fail("malformed JSON", data) from exc
        if not isinstance(event, dict):
            raise self._fail("unexpected data", data)
        kind = event.get("type") or sse.event
        seq = event.get("sequence_number")
        event_id = (
            f"{self.response_id}:{seq}"
            if self.response_id is not None and isinstance(seq, int)
            else None
        )
        piece: Piece | None = None
        if kind == "response.output_text.delta":
            text = event.get("delta")
            if isinstance(text, str) and text:
                self.parts.append(text)
                piece = TokenDelta(text, self.index, now, event_id)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            text = event.get("delta")
            if isinstance(text, str) and text:
                piece = ReasoningDelta(text, self.index, now, event_id)
        elif kind == "response.function_call_arguments.delta":
            text = event.get("delta")
            if isinstance(text, str) and text:
                call = self._call_index(event.get("item_id"), event.get("output_index"))
                piece = ToolCallDelta(call, None, None, text, self.index, now, event_id)
        elif kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                piece = self._call_added(item, now, event_id)
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            response = event.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.response_id = response["id"]
        elif kind in ("response.completed", "response.incomplete"):
            self._finish(event.get("response"))
        elif kind == "response.failed":
            response = event.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            raise self._error(error if isinstance(error, dict) else {}, "response.failed")
        elif kind == "error":
            raise self._error(event, "error")
        if piece is None:
            return ()
        self.index += 1
        return (piece,)

    def _call_index(self, item_id: object, output_index: object) -> int:
        if isinstance(item_id, str) and item_id in self._calls:
            return self._calls[item_id]
        return output_index if isinstance(output_index, int) else 0

    def _call_added(self, item: dict[str, Any], now: float, event_id: str | None) -> Piece:
        """A ``function_call`` output item: the call's first piece (its id and name)."""
        call = len(self._calls)
        item_id = item.get("id")
        self._calls[item_id if isinstance(item_id, str) else f"#{call}"] = call
        call_id = item.get("call_id")
        name = item.get("name")
        arguments = item.get("arguments")
        return ToolCallDelta(
            call,
            call_id if isinstance(call_id, str) and call_id else None,
            name if isinstance(name, str) and name else None,
            arguments if isinstance(arguments, str) else "",
            self.index,
            now,
            event_id,
        )

    def _finish(self, response: object) -> None:
        info = response if isinstance(response, dict) else {}
        self.usage = _usage(info.get("usage"))
        if info.get("status") == "incomplete":
            details = info.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self.finish_reason = "length" if reason in (None, "max_output_tokens") else str(reason)
        elif self._calls:
            self.finish_reason = "tool_calls"
        else:
            self.finish_reason = "stop"

    def _error(self, error: Mapping[str, Any], where: str) -> StreamkitError:
        code = error.get("code")
        code_text = str(code) if code is not None else None
        status = ERROR_STATUS.get(code_text or "", 500)
        message = str(error.get("message") or where)
        return status_error(
            status,
            f"{where} event: {message}",
            url=self.url,
            code=code_text,
            partial_text=self.partial_text,
        )


class Opening(NamedTuple):
    """What one attempt sends, and the fold that reads its answer (either dialect)."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    last_event_id: str | None  # sent as Last-Event-ID (Chat Completions; None for Responses)
    fold: ChatChunks | ResponseEvents


def open_request(
    base_url: str,
    api_key: str | None,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None,
    attempt: ResumeFrom | None,
    api: Api,
) -> Opening:
    """The request of one attempt in ``api``'s dialect, for the transports without the SDK.

    Chat Completions resume with ``Last-Event-ID``; the Responses API by URL
    (``starting_after``, see :func:`responses_request`).
    """
    if api == "responses":
        method, url, headers, body = responses_request(
            base_url, api_key, model, messages, params, attempt
        )
        return Opening(method, url, headers, body, None, ResponseEvents(base_url, attempt))
    url, headers, chat_body = chat_request(base_url, api_key, model, messages, params)
    use_ids = attempt is not None and attempt.use_ids
    last_id = attempt.last_event_id if use_ids and attempt is not None else None
    return Opening("POST", url, headers, chat_body, last_id, ChatChunks(base_url, attempt))
