"""OpenAI's Responses API on the simulator: ``POST /v1/responses`` and
``GET /v1/responses/{id}`` (``?stream=true&starting_after=N`` resumes a streamed one).

A Responses request is read as the Chat Completions request it amounts to
(:func:`chat_object_of`: ``input`` → ``messages``, ``max_output_tokens`` → ``max_tokens``, flat
tools → nested ones), so the same prompt, seed and ``streamkit`` settings plan the same reply as
``/v1/chat/completions`` does: the same text, pacing, faults and usage. The wire is
:mod:`.responses_wire`. Streamed replies are kept (their request and plan, the most recent
:data:`MAX_STORED`) so that a client that lost its connection can ask for the events after the
last ``sequence_number`` it has; OpenAI allows that for ``background: true`` responses, the
simulator for every stored streamed one. A resume is an attempt of the stored request's
``attempt_key``, so a fault limited to the first attempts does not fire again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .admission import Admission
from .asgi import Receive, Scope, Send, caller_of, forever, new_id
from .body import read_body
from .core import Reply
from .faults import Stall, stream_faults
from .plan import Plan, plan_reply
from .produce import Ending
from .request import ChatRequest, RequestError, loads_json, parse_chat_object
from .responses_wire import Laid, ResponsesWire, response_events, response_object, resume_piece

if TYPE_CHECKING:
    from .core import ServerCore

__all__ = ["MAX_STORED", "ResponsesEndpoint", "chat_object_of"]

MAX_STORED = 4096
"""How many streamed responses are kept for ``starting_after`` resumes (oldest dropped first)."""

# Responses fields that plan nothing here: accepted (OpenAI takes them) and dropped.
_ACCEPTED = frozenset(
    {"background", "include", "reasoning", "text", "truncation", "stream_options", "store"}
)
_RENAMED = {"max_output_tokens": "max_tokens"}


def _bad(param: str, message: str) -> RequestError:
    return RequestError(400, message, param=param)


def _content(content: object, where: str) -> object:
    """Responses content parts (``input_text``/``output_text``) as Chat Completions text parts."""
    if not isinstance(content, list):
        return content
    parts: list[object] = []
    for j, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text")})
        else:
            raise _bad(
                f"{where}[{j}]",
                f"Invalid content part at '{where}[{j}]': the simulator reads 'input_text' and "
                "'output_text' parts only.",
            )
    return parts


def _messages(data: dict[str, Any]) -> list[dict[str, object]]:
    raw = data.get("input")
    messages: list[dict[str, object]] = []
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(raw, str):
        return [*messages, {"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise _bad("input", "'input' must be a string or a non-empty array of input items.")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}]", f"Invalid type for 'input[{i}]': expected an object.")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            messages.append({"role": role, "content": _content(item.get("content"), f"input[{i}]")})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output", ""))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None})
        else:
            raise _bad(
                f"input[{i}].type",
                f"Invalid value for 'input[{i}].type': {kind!r}. The simulator reads 'message', "
                "'function_call' and 'function_call_output' items.",
            )
    return messages


def _tool(tool: object) -> object:
    if isinstance(tool, dict) and tool.get("type") == "function" and "function" not in tool:
        fields = {k: v for k, v in tool.items() if k != "type"}
        return {"type": "function", "function": fields}
    return tool


def chat_object_of(data: object) -> dict[str, Any]:
    """The Chat Completions body a Responses request body amounts to (see the module docstring).

    Raises:
        RequestError: 400 for a body that is not an object, or an unreadable ``input``.
    """
    if not isinstance(data, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    chat: dict[str, Any] = {"messages": _messages(data)}
    for key, value in data.items():
        if key in ("input", "instructions") or key in _ACCEPTED:
            continue
        if key == "tools" and isinstance(value, list):
            chat["tools"] = [_tool(t) for t in value]
        elif key == "tool_choice" and isinstance(value, dict) and "name" in value:
            chat["tool_choice"] = {"type": "function", "function": {"name": value["name"]}}
        else:
            chat[_RENAMED.get(str(key), str(key))] = value
    return chat


@dataclass(frozen=True, slots=True)
class _Stored:
    req: ChatRequest
    plan: Plan
    laid: Laid
    created: int


class ResponsesEndpoint:
    """The Responses routes of one server (its :class:`~.core.ServerCore`).

    Args:
        core: the server's shared state: admission, pacing, counters.
        inflight: the server's set of running replies (ended on shutdown).
    """

    def __init__(self, core: ServerCore, inflight: set[asyncio.Task[Any]]) -> None:
        self._core = core
        self._inflight = inflight
        self.stored: OrderedDict[str, _Stored] = OrderedDict()

    async def _send(
        self, send: Send, status: int, body: bytes, request_id: str, kind: bytes
    ) -> None:
        headers = [(b"content-type", kind), (b"x-request-id", request_id.encode())]
        if kind == b"application/json":
            headers.append((b"content-length", str(len(body)).encode()))
        else:
            headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        more = kind != b"application/json"
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": more})

    async def create(
        self, scope: Scope, receive: Receive, send: Send, t0: float, request_id: str
    ) -> None:
        """``POST /v1/responses``: a streamed reply, or the finished response object."""
        body = await read_body(scope, receive, self._core.max_body_bytes)
        if body is None:
            return
        req = parse_chat_object(chat_object_of(loads_json(body)), self._core.models)
        plan = plan_reply(req)
        response_id = new_id("resp_")
        created = int(time.time())
        laid = response_events(plan, response_id, created, req.model.id)
        with self._core.admit(req, caller_of(scope)) as admission:
            reply = Reply(t0, request_id, response_id, created, req, plan, admission)
            if not req.stream:
                await self._core.complete(self._complete(send, reply), receive, self._inflight)
                return
            self.stored[response_id] = _Stored(req, plan, laid, created)
            while len(self.stored) > MAX_STORED:
                self.stored.popitem(last=False)
            await self._stream(receive, send, reply, laid, None)

    async def retrieve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        t0: float,
        request_id: str,
        response_id: str,
    ) -> None:
        """``GET /v1/responses/{id}``: the response object, or with ``stream=true`` its events
        after ``starting_after``."""
        stored = self.stored.get(response_id)
        if stored is None:
            raise RequestError(
                404,
                f"No response with id '{response_id}' is stored here (the simulator keeps the "
                f"last {MAX_STORED} streamed responses).",
                code="not_found",
            )
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        stream = query.get("stream", ["false"])[-1].lower() == "true"
        after_text = query.get("starting_after", [None])[-1]
        model = stored.req.model.id
        if not stream:
            obj = response_object(stored.plan, response_id, stored.created, model)
            await self._send(send, 200, json.dumps(obj).encode(), request_id, b"application/json")
            return
        after: int | None = None
        if after_text is not None:
            if not after_text.isdigit() or int(after_text) >= len(stored.laid.frames):
                raise _bad(
                    "starting_after",
                    f"Invalid 'starting_after': {after_text!r}; this response has sequence "
                    f"numbers 0 to {len(stored.laid.frames) - 1}.",
                )
            after = int(after_text)
        with self._core.admit(stored.req, caller_of(scope)) as admission:
            reply = Reply(
                t0, request_id, response_id, stored.created, stored.req, stored.plan, admission
            )
            await self._stream(receive, send, reply, stored.laid, after)

    async def _complete(self, send: Send, reply: Reply) -> None:
        plan, admission = reply.plan, reply.admission
        # Without a stream the reply arrives whole when its last piece is due (stalls add their
        # silence); the stream faults that cut or garble a stream are not simulated here.
        reached = stream_faults(admission.faults, 0, len(plan.pieces))
        stall = sum(f.seconds for f in reached if isinstance(f, Stall))
        await self._core.pacer().wait_until(
            reply.t0 + (plan.offsets[-1] if plan.offsets else 0) + stall
        )
        admission.release()
        obj = response_object(plan, reply.reply_id, reply.created, reply.req.model.id)
        body = json.dumps(obj).encode()
        await self._send(send, 200, body, reply.request_id, b"application/json")
        self._core.stats.tokens_sent += plan.completion_tokens

    async def _stream(
        self, receive: Receive, send: Send, reply: Reply, laid: Laid, after: int | None
    ) -> None:
        plan, request_id = reply.plan, reply.request_id
        wire = ResponsesWire(send, laid, reply.admission, 0 if after is None else after + 1)
        # response.created and .in_progress go out at once (time to first byte).
        await self._send(send, 200, wire.due(-1), request_id, b"text/event-stream; charset=utf-8")
        start = resume_piece(laid, after, len(plan.pieces))
        work = self._emit(wire, reply.t0, plan, start, reply.admission)
        await self._core.stream(work, wire, receive, send, self._inflight)

    async def _emit(
        self, wire: ResponsesWire, t0: float, plan: Plan, start: int, admission: Admission
    ) -> Ending:
        ending = await self._core.produce(wire, plan, start=start, t0=t0, faults=admission.faults)
        if ending is Ending.DROPPED:
            await forever()  # the connection is closing; the disconnect listener ends this
        await wire.end(ending is Ending.FINISHED)
        return ending
