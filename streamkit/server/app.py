"""The simulator's ASGI app: OpenAI Chat Completions answered by simulated models.

A plain ASGI callable (no framework): on uvicorn it spends about a third of the CPU per chunk
that starlette with sse-starlette does, which is what lets one core carry hundreds of paced
streams. The module is layered so the logic is testable without a socket:

- request validation (:func:`parse_chat_request`): bytes in, a :class:`ChatRequest` or a
  :class:`RequestError` carrying an OpenAI-style error body out. Per-request simulation settings
  in the ``streamkit`` body field are checked against the :data:`SIM_OPTIONS` table, so new keys
  (fault injection) are one entry there.
- planning (:func:`plan_reply`): which pieces to send, when, and why it ends.
- wire formats (:class:`ChunkEncoder`, :func:`completion_body`): bytes exactly as OpenAI sends
  them. The per-token path concatenates a prebuilt prefix, the JSON-encoded piece and a prebuilt
  suffix; no dict is serialised and no SDK model is built per token.
- I/O (:class:`App`): routing, auth, pacing through one shared :class:`~.pacer.Pacer`, and
  client-disconnect detection.

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hmac
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from .models import MODELS, SimModel
from .pacer import Pacer
from .textgen import generate, schedule, tokenize

__all__ = [
    "SIM_OPTIONS",
    "App",
    "ChatRequest",
    "ChunkEncoder",
    "Plan",
    "RequestError",
    "ServerStats",
    "SimOption",
    "completion_body",
    "create_app",
    "parse_chat_request",
    "plan_reply",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SYSTEM_FINGERPRINT = "fp_streamkit"
MAX_BODY_BYTES = 4 * 1024 * 1024
# A stream that is behind schedule sends its due pieces without suspending; after this many in
# a row it yields once so that one fast stream cannot starve the others.
_MAX_BURST = 16


# --------------------------------------------------------------------------------------------
# Counters


@dataclass(slots=True)
class ServerStats:
    """Counters, updated on the server's event loop only (plain ints: no locks needed there;
    other threads may read them, and a read is at worst one event stale).

    Attributes:
        requests: HTTP requests received, on any route.
        errors: responses with a 4xx or 5xx status.
        streams_started: streaming completions whose headers were sent.
        streams_completed: streams that sent ``[DONE]``.
        streams_disconnected: streams the client abandoned before the end.
        streams_aborted: streams the server cut short because it was shutting down.
        active_streams: streams in progress now.
        tokens_sent: completion pieces sent, streamed or not.
    """

    requests: int = 0
    errors: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    streams_aborted: int = 0
    active_streams: int = 0
    tokens_sent: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict (a copy)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Errors, as OpenAI writes them


class RequestError(Exception):
    """A request the server refuses, with the OpenAI-style error body to answer with.

    Args:
        status: HTTP status.
        message: what is wrong and what would be right.
        param: the offending field, if one.
        code: OpenAI's machine-readable code (``"model_not_found"``, ``"invalid_api_key"``).
        type: OpenAI's error type.
        headers: extra response headers (``allow`` on a 405).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or []
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> bytes:
        """The JSON error body."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


def _bad(param: str, message: str) -> NoReturn:
    raise RequestError(400, message, param=param)


def _shutting_down() -> RequestError:
    return RequestError(
        503,
        "The streamkit simulator is shutting down; retry against a running server.",
        type="server_error",
        code="server_shutting_down",
    )


# --------------------------------------------------------------------------------------------
# Validation: pure checks of a decoded body


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number_in(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[object], bool]:
    def check(v: object) -> bool:
        if not _is_number(v):
            return False
        x = float(v)  # type: ignore[arg-type]
        return (lo < x if lo_open else lo <= x) and x <= hi

    return check


def _int_in(lo: int, hi: int) -> Callable[[object], bool]:
    return lambda v: _is_int(v) and lo <= v <= hi  # type: ignore[operator]


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_bool(v: object) -> bool:
    return isinstance(v, bool)


def _is_obj(v: object) -> bool:
    return isinstance(v, dict)


def _is_list(v: object) -> bool:
    return isinstance(v, list)


def _is_stop(v: object) -> bool:
    if isinstance(v, str):
        return True
    return isinstance(v, list) and len(v) <= 4 and all(isinstance(s, str) for s in v)


@dataclass(frozen=True, slots=True)
class SimOption:
    """One accepted key of the ``streamkit`` body field.

    Attributes:
        check: whether a value is acceptable (``None`` is handled before, as "not set").
        allowed: the allowed values, in words, for the error message.
    """

    check: Callable[[object], bool]
    allowed: str


SIM_OPTIONS: dict[str, SimOption] = {
    "ttft": SimOption(_number_in(0, 600), "a number of seconds from 0 to 600"),
    "tokens_per_second": SimOption(
        _number_in(0, 100_000, lo_open=True), "a number greater than 0 and at most 100000"
    ),
    "jitter": SimOption(_number_in(0, 1), "a number from 0 to 1 (0.15 = each gap ±15%)"),
    "length": SimOption(_int_in(1, 100_000), "an integer from 1 to 100000 (completion tokens)"),
}
"""Every key the ``streamkit`` body field accepts. Extend this table to add a setting."""

# Standard parameters the simulator accepts and ignores, with their checks: a wrong type is
# still an error, as with OpenAI, so a client tested here does not fail there.
_IGNORED_PARAMS: dict[str, tuple[Callable[[object], bool], str]] = {
    "temperature": (_number_in(0, 2), "a number from 0 to 2"),
    "top_p": (_number_in(0, 1), "a number from 0 to 1"),
    "presence_penalty": (_number_in(-2, 2), "a number from -2 to 2"),
    "frequency_penalty": (_number_in(-2, 2), "a number from -2 to 2"),
    "top_logprobs": (_int_in(0, 20), "an integer from 0 to 20"),
    "user": (_is_str, "a string"),
    "stop": (_is_stop, "a string or an array of at most 4 strings"),
    "logit_bias": (_is_obj, "an object"),
    "metadata": (_is_obj, "an object"),
    "store": (_is_bool, "a boolean"),
    "parallel_tool_calls": (_is_bool, "a boolean"),
    "tools": (_is_list, "an array"),
    "tool_choice": (lambda v: isinstance(v, (str, dict)), "a string or an object"),
    "functions": (_is_list, "an array"),
    "function_call": (lambda v: isinstance(v, (str, dict)), "a string or an object"),
    "service_tier": (_is_str, "a string"),
    "reasoning_effort": (_is_str, "a string"),
    "verbosity": (_is_str, "a string"),
    "modalities": (_is_list, "an array"),
    "prompt_cache_key": (_is_str, "a string"),
    "safety_identifier": (_is_str, "a string"),
    "prediction": (_is_obj, "an object"),
    "web_search_options": (_is_obj, "an object"),
}
_HANDLED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "n",
        "logprobs",
        "response_format",
        "streamkit",
    }
)
_STREAM_OPTIONS = frozenset({"include_usage", "include_obfuscation"})
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# OpenAI's accounting: every message costs a few tokens of framing, and the reply is primed
# with a few more (see the OpenAI cookbook's "How to count tokens with tiktoken").
_TOKENS_PER_MESSAGE = 3
_TOKENS_REPLY_PRIMING = 3


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat completion request.

    Attributes:
        model: the simulated model.
        prompt: the conversation as one text (``"role: content"`` lines); it seeds the reply.
        prompt_tokens: the prompt's token count, as ``usage.prompt_tokens`` reports it.
        stream: whether to stream.
        include_usage: ``stream_options.include_usage``.
        max_tokens: the completion limit, if any.
        seed: the seed (0 when absent: the reply is then a function of the prompt alone).
        ttft: seconds to the first content piece (model default or override).
        tokens_per_second: decode rate (model default or override).
        jitter: relative spread of the gaps (model default or override).
        length: exact completion length asked for with ``streamkit.length``, if any.
        sim_options: every validated key of the ``streamkit`` field, as sent.
    """

    model: SimModel
    prompt: str
    prompt_tokens: int
    stream: bool
    include_usage: bool
    max_tokens: int | None
    seed: int
    ttft: float
    tokens_per_second: float
    jitter: float
    length: int | None
    sim_options: Mapping[str, object] = field(default_factory=dict)


def _reject_constant(name: str) -> NoReturn:
    # json.loads accepts NaN and Infinity by default; OpenAI (and JSON) do not.
    raise ValueError(f"{name} is not valid JSON")


def _text_of(content: object, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for j, part in enumerate(content):
            where = f"{param}[{j}]"
            if not isinstance(part, dict):
                _bad(
                    where, f"Invalid type for '{where}': expected an object with 'type' and 'text'."
                )
            kind = part.get("type")
            if kind != "text":
                _bad(
                    f"{where}.type",
                    f"Invalid value for '{where}.type': {kind!r}. The simulator supports only "
                    "'text' content parts.",
                )
            text = part.get("text")
            if not isinstance(text, str):
                _bad(f"{where}.text", f"Invalid type for '{where}.text': expected a string.")
            texts.append(text)
        return "".join(texts)
    _bad(param, f"Invalid type for '{param}': expected a string or an array of text parts.")


def _parse_messages(messages: object) -> tuple[str, int]:
    """The conversation as one text, and its token count as OpenAI would bill it."""
    if not isinstance(messages, list) or not messages:
        _bad("messages", "'messages' must be a non-empty array of message objects.")
    lines: list[str] = []
    tokens = _TOKENS_REPLY_PRIMING
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            _bad(
                where, f"Invalid type for '{where}': expected an object with 'role' and 'content'."
            )
        role = message.get("role")
        if role not in _ROLES:
            _bad(
                f"{where}.role",
                f"Invalid value for '{where}.role': {role!r}. Supported values are: "
                + ", ".join(repr(r) for r in _ROLES)
                + ".",
            )
        content = message.get("content")
        # Assistant turns that only called tools carry no content.
        text = (
            ""
            if content is None and role in ("assistant", "tool")
            else _text_of(content, f"{where}.content")
        )
        lines.append(f"{role}: {text}")
        tokens += _TOKENS_PER_MESSAGE + len(tokenize(text))
    return "\n".join(lines), tokens


def _parse_sim_options(raw: object) -> dict[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        _bad(
            "streamkit", "Invalid type for 'streamkit': expected an object of simulation settings."
        )
    unknown = sorted(set(raw) - set(SIM_OPTIONS))
    if unknown:
        _bad(
            f"streamkit.{unknown[0]}",
            f"Unknown key(s) in 'streamkit': {', '.join(repr(k) for k in unknown)}. "
            f"Allowed keys: {', '.join(sorted(SIM_OPTIONS))}.",
        )
    options: dict[str, object] = {}
    for key, value in raw.items():
        if value is None:
            continue
        spec = SIM_OPTIONS[key]
        if not spec.check(value):
            _bad(
                f"streamkit.{key}",
                f"Invalid value for 'streamkit.{key}': {value!r}. Expected {spec.allowed}.",
            )
        options[key] = value
    return options


def _optional(
    body: Mapping[str, object], key: str, check: Callable[[object], bool], allowed: str
) -> Any:
    value = body.get(key)
    if value is not None and not check(value):
        _bad(key, f"Invalid value for '{key}': {value!r}. Expected {allowed}.")
    return value


def parse_chat_request(body: bytes, models: Mapping[str, SimModel]) -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` body.

    Args:
        body: the raw request body.
        models: the models on offer, by id.

    Returns:
        The validated request, with the model's defaults filled in.

    Raises:
        RequestError: 400 for a malformed body or field (naming the field and what is allowed),
            404 for an unknown model.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(
            400,
            f"We could not parse the JSON body of your request ({exc}). Send a JSON object with "
            "'Content-Type: application/json'.",
        ) from None
    if not isinstance(data, dict):
        raise RequestError(400, "The request body must be a JSON object.")

    unknown = sorted(set(data) - _HANDLED_PARAMS - set(_IGNORED_PARAMS))
    if unknown:
        _bad(
            unknown[0],
            f"Unrecognized request argument supplied: {', '.join(unknown)}. Put simulation "
            f"settings in the 'streamkit' object ({', '.join(sorted(SIM_OPTIONS))}).",
        )

    model_id = data.get("model")
    if model_id is None:
        _bad("model", "You must provide a model parameter (one of: " + ", ".join(models) + ").")
    if not isinstance(model_id, str):
        _bad("model", f"Invalid type for 'model': expected a string (one of: {', '.join(models)}).")
    model = models.get(model_id)
    if model is None:
        raise RequestError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it; "
            f"available: {', '.join(models)}.",
            code="model_not_found",
        )

    prompt, prompt_tokens = _parse_messages(data.get("messages"))

    stream = bool(_optional(data, "stream", _is_bool, "a boolean"))
    stream_options = _optional(data, "stream_options", _is_obj, "an object")
    include_usage = False
    if stream_options is not None:
        if not stream:
            _bad(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is true.",
            )
        extra = sorted(set(stream_options) - _STREAM_OPTIONS)
        if extra:
            _bad(
                f"stream_options.{extra[0]}",
                f"Unrecognized key(s) in 'stream_options': {', '.join(extra)}. "
                f"Allowed: {', '.join(sorted(_STREAM_OPTIONS))}.",
            )
        usage = stream_options.get("include_usage")
        if usage is not None and not isinstance(usage, bool):
            _bad(
                "stream_options.include_usage",
                "Invalid type for 'stream_options.include_usage': expected a boolean.",
            )
        include_usage = bool(usage)

    limit = _int_in(1, 10_000_000)
    # max_tokens is OpenAI's older name; the newer one wins when both are sent.
    max_tokens = _optional(data, "max_completion_tokens", limit, "an integer of at least 1")
    legacy_max = _optional(data, "max_tokens", limit, "an integer of at least 1")
    if max_tokens is None:
        max_tokens = legacy_max
    seed = _optional(data, "seed", _int_in(-(2**63), 2**63 - 1), "a 64-bit integer")
    n = _optional(data, "n", _is_int, "an integer")
    if n is not None and n != 1:
        _bad(
            "n",
            f"Invalid value for 'n': {n}. The simulator writes one choice per request; use n=1.",
        )
    if _optional(data, "logprobs", _is_bool, "a boolean"):
        _bad(
            "logprobs",
            "The simulator does not produce logprobs; omit 'logprobs' or set it to false.",
        )
    response_format = _optional(data, "response_format", _is_obj, "an object")
    if response_format is not None and response_format.get("type") != "text":
        _bad(
            "response_format.type",
            f"Invalid value for 'response_format.type': {response_format.get('type')!r}. "
            "The simulator writes plain text only: use 'text' or omit 'response_format'.",
        )
    for key, (check, allowed) in _IGNORED_PARAMS.items():
        _optional(data, key, check, allowed)

    options = _parse_sim_options(data.get("streamkit"))
    return ChatRequest(
        model=model,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        seed=0 if seed is None else seed,
        ttft=float(options.get("ttft", model.ttft)),  # type: ignore[arg-type]
        tokens_per_second=float(options.get("tokens_per_second", model.tokens_per_second)),  # type: ignore[arg-type]
        jitter=float(options.get("jitter", model.jitter)),  # type: ignore[arg-type]
        length=options.get("length"),  # type: ignore[arg-type]
        sim_options=options,
    )


# --------------------------------------------------------------------------------------------
# Planning: what to send and when


@dataclass(frozen=True, slots=True)
class Plan:
    """A reply decided in full before the first byte is sent.

    Attributes:
        pieces: the completion's token pieces.
        offsets: when each piece is due, in seconds after the request arrived.
        finish_reason: ``"stop"`` (the text ended) or ``"length"`` (``max_tokens`` cut it).
        prompt_tokens: for ``usage``.
    """

    pieces: list[str]
    offsets: list[float]
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        """For ``usage``: one token per piece sent."""
        return len(self.pieces)

    def usage(self) -> dict[str, object]:
        """OpenAI's ``usage`` object for this reply."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }


def plan_reply(req: ChatRequest) -> Plan:
    """Decide the reply: its pieces, their due times, and its finish reason.

    Args:
        req: a validated request.
    """
    if req.length is not None:
        # An exact length is the reply's natural length: it finishes with "stop" unless
        # max_tokens is shorter.
        n = req.length if req.max_tokens is None else min(req.length, req.max_tokens)
        pieces = generate(req.prompt, req.seed, n, req.model)
        cut = n < req.length
    else:
        pieces = generate(req.prompt, req.seed, None, req.model)
        cut = req.max_tokens is not None and len(pieces) > req.max_tokens
        if cut:
            pieces = pieces[: req.max_tokens]
    offsets = schedule(
        req.prompt,
        req.seed,
        len(pieces),
        ttft=req.ttft,
        tokens_per_second=req.tokens_per_second,
        jitter=req.jitter,
    )
    return Plan(pieces, offsets, "length" if cut else "stop", req.prompt_tokens)


# --------------------------------------------------------------------------------------------
# Wire formats


@functools.lru_cache(maxsize=16384)
def _json_string(piece: str) -> bytes:
    # Replies draw on a small vocabulary, so nearly every piece is encoded once per process.
    return json.dumps(piece).encode()


class ChunkEncoder:
    """The SSE frames of one stream, byte for byte as OpenAI sends them.

    Each frame is ``data: {chunk}\\n\\n``; the constant parts of a chunk are encoded once per
    stream, so a content frame costs two concatenations and a cached string encoding.

    Args:
        completion_id: the ``chatcmpl-…`` id shared by every chunk.
        created: Unix time of the request.
        model: the model id echoed in every chunk.
        include_usage: whether chunks carry ``"usage": null`` and a usage chunk comes last.
    """

    __slots__ = ("_choice_tail", "_content_head", "_head", "_tail")

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = (
            f'data: {{"id":{json.dumps(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{json.dumps(model)},'
            f'"system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":['
        ).encode()
        self._tail = (b',"usage":null' if include_usage else b"") + b"}\n\n"
        self._content_head = self._head + b'{"index":0,"delta":{"content":'
        self._choice_tail = b'},"logprobs":null,"finish_reason":null}]' + self._tail

    def role(self) -> bytes:
        """The first frame: the assistant role and empty content."""
        return (
            self._head + b'{"index":0,"delta":{"role":"assistant","content":""' + self._choice_tail
        )

    def content(self, piece: str) -> bytes:
        """One content frame (the hot path)."""
        return self._content_head + _json_string(piece) + self._choice_tail

    def finish(self, reason: str) -> bytes:
        """The frame with an empty delta and the finish reason."""
        return (
            self._head
            + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + _json_string(reason)
            + b"}]"
            + self._tail
        )

    def usage(self, usage: Mapping[str, object]) -> bytes:
        """The usage frame: no choices, the usage object."""
        return (
            self._head
            + b'],"usage":'
            + json.dumps(usage, separators=(",", ":")).encode()
            + b"}\n\n"
        )

    @staticmethod
    def done() -> bytes:
        """The end-of-stream sentinel."""
        return b"data: [DONE]\n\n"


def completion_body(completion_id: str, created: int, model: str, plan: Plan) -> bytes:
    """A non-streaming ``chat.completion`` response body.

    Args:
        completion_id: the ``chatcmpl-…`` id.
        created: Unix time of the request.
        model: the model id.
        plan: the reply.
    """
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(plan.pieces),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": plan.finish_reason,
            }
        ],
        "usage": plan.usage(),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return json.dumps(body).encode()


def _model_card(model: SimModel) -> dict[str, object]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "streamkit",
        "streamkit": {
            "ttft": model.ttft,
            "tokens_per_second": model.tokens_per_second,
            "jitter": model.jitter,
            "length_range": list(model.length_range),
            "pricing": model.pricing,
            "pricing_unit": "USD per 1M tokens",
        },
    }


# --------------------------------------------------------------------------------------------
# I/O


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client went away first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    # After the body, the next receive() only returns when the client disconnects (or the
    # response completed). uvicorn drops sends to a closed connection silently, so this is the
    # only way a stream learns that nobody is listening.
    while (await receive())["type"] != "http.disconnect":
        pass


class _Outcome(enum.Enum):
    DONE = "done"  # the reply went out in full
    DISCONNECTED = "disconnected"  # the client left first
    ABORTED = "aborted"  # the server is shutting down and ended it


async def _watched(
    work: Coroutine[Any, Any, None], receive: Receive, inflight: set[asyncio.Task[None]]
) -> _Outcome:
    """Run ``work`` as a task registered in ``inflight`` while watching for the client leaving.

    Returns:
        How it ended. Unless DONE, ``work`` has been cancelled and awaited.
    """
    task = asyncio.ensure_future(work)
    inflight.add(task)
    listener = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((task, listener), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            if task.cancelled():  # by App.close_streams, not by our own cancellation
                return _Outcome.ABORTED
            task.result()  # re-raise what went wrong, if anything
            return _Outcome.DONE
        return _Outcome.DISCONNECTED
    finally:
        inflight.discard(task)
        for t in (task, listener):
            t.cancel()
        # Wait for both so nothing is left pending (and no exception goes unretrieved).
        await asyncio.gather(task, listener, return_exceptions=True)


class App:
    """The simulator as an ASGI 3 application.

    Args:
        api_key: if set, every ``/v1`` route requires ``Authorization: Bearer <api_key>``.
        models: the models to offer (default :data:`~.models.MODELS`).

    Attributes:
        stats: live counters (:class:`ServerStats`).
        models: the models on offer, by id.
    """

    def __init__(
        self, api_key: str | None = None, models: Mapping[str, SimModel] | None = None
    ) -> None:
        self._api_key = api_key.encode() if api_key is not None else None
        self.models: dict[str, SimModel] = dict(MODELS if models is None else models)
        if not self.models:
            raise ValueError("the server needs at least one model")
        self.stats = ServerStats()
        self._pacer: Pacer | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing = False

    def __repr__(self) -> str:
        # Never show the key.
        auth = "key required" if self._api_key is not None else "no key"
        return f"<streamkit App models={list(self.models)} {auth}>"

    def pacer(self) -> Pacer:
        """The pacer of the running loop (made on first use, and again if the loop changes)."""
        loop = asyncio.get_running_loop()
        if self._pacer is None or self._pacer.loop is not loop:
            self._pacer = Pacer(loop=loop)
        return self._pacer

    def close_streams(self) -> None:
        """End every reply in progress and refuse new ones (503); call on the server's loop.

        The runner calls this as the server shuts down, so each open stream ends its HTTP
        response cleanly, without ``[DONE]`` (a client sees a stream cut short, which is the
        truth), instead of being cancelled after the graceful timeout, which uvicorn reports as
        an application error.
        """
        self._closing = True
        for task in list(self._inflight):
            task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "no WebSocket route"})

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
        request_id = _new_id("req_")
        method: str = scope["method"]
        path: str = scope["path"]
        if len(path) > 1:
            path = path.rstrip("/")
        try:
            if path.startswith("/v1"):
                self._authorize(scope)
            if path == "/health":
                self._allow(method, "GET", path)
                await self._json(send, 200, {"status": "ok"}, request_id)
            elif path == "/v1/models":
                self._allow(method, "GET", path)
                cards = [_model_card(m) for m in self.models.values()]
                await self._json(send, 200, {"object": "list", "data": cards}, request_id)
            elif path.startswith("/v1/models/"):
                self._allow(method, "GET", path)
                model = self.models.get(path[len("/v1/models/") :])
                if model is None:
                    raise RequestError(
                        404,
                        f"The model `{path[len('/v1/models/') :]}` does not exist; "
                        f"available: {', '.join(self.models)}.",
                        code="model_not_found",
                    )
                await self._json(send, 200, _model_card(model), request_id)
            elif path == "/v1/chat/completions":
                self._allow(method, "POST", path)
                await self._chat(receive, send, t0, request_id)
            else:
                raise RequestError(
                    404,
                    f"Invalid URL ({method} {scope['path']}): the streamkit simulator serves "
                    "GET /health, GET /v1/models, GET /v1/models/{id} and "
                    "POST /v1/chat/completions.",
                    code="unknown_url",
                )
        except RequestError as exc:
            self.stats.errors += 1
            await self._send(send, exc.status, exc.body(), request_id, exc.headers)

    def _authorize(self, scope: Scope) -> None:
        if self._api_key is None:
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        # compare_digest: the time taken must not reveal how much of the key was right.
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._api_key):
            return
        hint = "No API key provided" if not given else "Incorrect API key provided"
        raise RequestError(
            401,
            f"{hint}: this server was started with an API key; send it as "
            "'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )

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
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *(extra_headers or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _json(self, send: Send, status: int, obj: object, request_id: str) -> None:
        await self._send(send, status, json.dumps(obj).encode(), request_id)

    async def _chat(self, receive: Receive, send: Send, t0: float, request_id: str) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        req = parse_chat_request(body, self.models)
        if self._closing:
            raise _shutting_down()
        plan = plan_reply(req)
        completion_id = _new_id("chatcmpl-")
        created = int(time.time())
        if req.stream:
            await self._stream(receive, send, t0, request_id, completion_id, created, req, plan)
            return
        work = self._complete(send, t0, request_id, completion_id, created, req, plan)
        if await _watched(work, receive, self._inflight) is _Outcome.ABORTED:
            raise _shutting_down()

    async def _complete(
        self,
        send: Send,
        t0: float,
        request_id: str,
        completion_id: str,
        created: int,
        req: ChatRequest,
        plan: Plan,
    ) -> None:
        if plan.offsets:
            await self.pacer().wait_until(t0 + plan.offsets[-1])
        body = completion_body(completion_id, created, req.model.id, plan)
        await self._send(send, 200, body, request_id)
        self.stats.tokens_sent += plan.completion_tokens

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        t0: float,
        request_id: str,
        completion_id: str,
        created: int,
        req: ChatRequest,
        plan: Plan,
    ) -> None:
        encoder = ChunkEncoder(completion_id, created, req.model.id, req.include_usage)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", request_id.encode()),
            # Reverse proxies (nginx) buffer responses unless told not to.
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The role chunk goes out at once: clients measure time to first byte from it.
        await send({"type": "http.response.body", "body": encoder.role(), "more_body": True})

        stats = self.stats
        stats.streams_started += 1
        stats.active_streams += 1
        try:
            work = self._emit(send, t0, encoder, req, plan)
            outcome = await _watched(work, receive, self._inflight)
            if outcome is _Outcome.DONE:
                stats.streams_completed += 1
            elif outcome is _Outcome.DISCONNECTED:
                stats.streams_disconnected += 1
            else:
                stats.streams_aborted += 1
                # End the HTTP response properly; the missing [DONE] tells the client why.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            stats.active_streams -= 1

    async def _emit(
        self, send: Send, t0: float, encoder: ChunkEncoder, req: ChatRequest, plan: Plan
    ) -> None:
        pacer = self.pacer()
        wait_until = pacer.wait_until
        content = encoder.content
        stats = self.stats
        burst = 0
        for piece, offset in zip(plan.pieces, plan.offsets, strict=True):
            if await wait_until(t0 + offset):
                burst = 0
            else:
                burst += 1
                if burst >= _MAX_BURST:
                    burst = 0
                    await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": content(piece), "more_body": True})
            stats.tokens_sent += 1

        tail = encoder.finish(plan.finish_reason)
        if req.include_usage:
            tail += encoder.usage(plan.usage())
        await send(
            {"type": "http.response.body", "body": tail + encoder.done(), "more_body": False}
        )


def create_app(api_key: str | None = None, models: Mapping[str, SimModel] | None = None) -> App:
    """Make the simulator's ASGI app.

    Args:
        api_key: if set, every ``/v1`` route requires ``Authorization: Bearer <api_key>``;
            ``/health`` stays open.
        models: the models to offer, by id (default :data:`~.models.MODELS`).

    Returns:
        The app; its ``stats`` attribute holds live counters.
    """
    return App(api_key=api_key, models=models)
