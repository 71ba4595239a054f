"""The simulator's ASGI app: OpenAI Chat Completions answered by simulated models.

A plain ASGI callable (no framework): on uvicorn it spends about a third of the CPU per chunk
that starlette with sse-starlette does, which is what lets one core carry hundreds of paced
streams. The module is layered so the logic is testable without a socket:

- request validation (:func:`parse_chat_request`): bytes in, a :class:`ChatRequest` or a
  :class:`RequestError` carrying an OpenAI-style error body out. Per-request simulation settings
  in the ``streamkit`` body field are checked against the :data:`SIM_OPTIONS` table; the fault
  list and the attempt key are entries there, parsed by :mod:`.faults`.
- planning (:func:`plan_reply`): which pieces to send, when, and why it ends.
- wire formats (:class:`ChunkEncoder`, :func:`completion_body`): bytes exactly as OpenAI sends
  them, plus the SSE ``id:`` line of each content frame (docs/protocol.md). The per-token path
  formats the id and concatenates a prebuilt prefix, the JSON-encoded piece and a prebuilt
  suffix; no dict is serialised and no SDK model is built per token.
- I/O (:class:`App`): routing, auth, limits (:mod:`.limits`), admission (attempt counting and
  status faults, shared with the WebSocket endpoint in :mod:`.ws`), and the SSE framing of
  :func:`~.produce.produce`, which paces every stream on one shared :class:`~.pacer.Pacer` and
  fires stream faults; with the optional capacity model (:mod:`.capacity`), in a bounded batch
  sharing a decode rate.

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions`` (``Last-Event-ID`` resumes a stream), and the WebSocket endpoint
``GET /v1/ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import hmac
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .capacity import Batch
from .faults import (
    AttemptCounter,
    Drop,
    Fault,
    InvalidSetting,
    Malformed,
    Stall,
    active_faults,
    error_for_status,
    first_status,
    parse_attempt_key,
    parse_faults,
    stream_faults,
)
from .limits import ConcurrencyLimiter, RateLimiter
from .models import MODELS, SimModel
from .pacer import Pacer
from .produce import Ending, produce
from .textgen import generate, schedule, tokenize

if TYPE_CHECKING:
    from .ws import WebSocketEndpoint

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

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

T = TypeVar("T")

SYSTEM_FINGERPRINT = "fp_streamkit"
DEFAULT_MAX_BODY_BYTES = 1 << 20
"""The largest request body accepted by default (1 MiB); larger ones get 413."""
# After a drop fault closes a connection, the kernel still flushes what was written; a client
# that never reads would keep it half-open, so the connection is reset after this long.
_DROP_GRACE = 2.0
# A body over the limit is drained (and thrown away) up to this much before the 413 goes out.
_DRAIN_BYTES = 16 << 20
_DRAIN_SECONDS = 2.0


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
        streams_dropped: streams whose connection a ``drop`` fault cut.
        active_streams: streams in progress now.
        tokens_sent: completion pieces sent, streamed or not, over HTTP or WebSocket.
        faults_injected: faults that fired (a status answered, a stall, a drop, …).
        rate_limited: requests refused by ``max_concurrent_streams`` or
            ``requests_per_minute``.
        ws_connections: WebSocket connections accepted.
        ws_active_connections: WebSocket connections open now.
        ws_streams_started: WebSocket streams that sent ``start``.
        ws_streams_completed: WebSocket streams that sent ``end``.
        ws_streams_cancelled: WebSocket streams stopped by ``chat.cancel``.
        ws_active_streams: WebSocket streams in progress now.
        queued: completions waiting for a place in the batch now (``max_batch``; always 0
            without a capacity model).
        running: completions in the batch now, streamed or not, over HTTP or WebSocket
            (counted only with a capacity model: ``max_batch`` or ``decode_capacity``).
    """

    requests: int = 0
    errors: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    streams_aborted: int = 0
    streams_dropped: int = 0
    active_streams: int = 0
    tokens_sent: int = 0
    faults_injected: int = 0
    rate_limited: int = 0
    ws_connections: int = 0
    ws_active_connections: int = 0
    ws_streams_started: int = 0
    ws_streams_completed: int = 0
    ws_streams_cancelled: int = 0
    ws_active_streams: int = 0
    queued: int = 0
    running: int = 0

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
        retry_after: seconds the client should wait before retrying; sent as ``Retry-After``
            (and ``retry-after-ms``, which the openai SDK prefers).
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
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or []
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.retry_after = retry_after
        if retry_after is not None:
            # Whole seconds print as integers (RFC 9110's delay-seconds); a fraction asked for
            # by a fault is kept, since the clients that matter here parse it as a float.
            self.headers += [
                (b"retry-after", f"{retry_after:g}".encode()),
                (b"retry-after-ms", str(round(retry_after * 1000)).encode()),
            ]

    def error(self) -> dict[str, object]:
        """The OpenAI error object (the value of the body's ``error`` key)."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> bytes:
        """The JSON error body."""
        return json.dumps({"error": self.error()}).encode()


def _bad(param: str, message: str) -> NoReturn:
    raise RequestError(400, message, param=param)


def _shutting_down() -> RequestError:
    return RequestError(
        503,
        "The streamkit simulator is shutting down; retry against a running server.",
        type="server_error",
        code="server_shutting_down",
    )


def _failing_error(status: int, retry_after: float | None) -> RequestError:
    """The error a server switched to failing (:meth:`App.set_failing`) answers with."""
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
        message = "Rate limit reached for requests. Please try again later."
    elif status == 503:
        kind, code = "server_error", "overloaded"
        message = "The server is overloaded or not ready yet."
    else:
        kind, code = "server_error", "server_error"
        message = "The server had an error while processing your request."
    # Say it was asked for, so nobody debugs a real outage that was switched on.
    note = " (switched on with set_failing"
    if retry_after is not None:
        note += f"; retry after {retry_after:g} s"
    return RequestError(status, message + note + ")", type=kind, code=code, retry_after=retry_after)


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
        parse: for structured values, turns an accepted value into what the server uses,
            raising :class:`~.faults.InvalidSetting` naming the bad part (e.g.
            ``streamkit.faults[1].at``).
    """

    check: Callable[[object], bool]
    allowed: str
    parse: Callable[[object], object] | None = None


SIM_OPTIONS: dict[str, SimOption] = {
    "ttft": SimOption(_number_in(0, 600), "a number of seconds from 0 to 600"),
    "tokens_per_second": SimOption(
        _number_in(0, 100_000, lo_open=True), "a number greater than 0 and at most 100000"
    ),
    "jitter": SimOption(_number_in(0, 1), "a number from 0 to 1 (0.15 = each gap ±15%)"),
    "length": SimOption(_int_in(1, 100_000), "an integer from 1 to 100000 (completion tokens)"),
    "attempt_key": SimOption(
        _is_str, "a string of 1 to 128 characters naming one logical request", parse_attempt_key
    ),
    "faults": SimOption(_is_list, "a list of fault objects", parse_faults),
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
        "ignore_eos",
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
        ignore_eos: vLLM's sampling extension: generate until ``max_tokens`` whatever the
            natural length, finishing with ``"length"`` (benchmarks use it for exact output
            lengths).
        sim_options: every validated key of the ``streamkit`` field (structured ones parsed).
        attempt_key: ``streamkit.attempt_key``: names the logical request across attempts.
        faults: ``streamkit.faults``, parsed, in the order given.
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
    ignore_eos: bool = False
    sim_options: Mapping[str, object] = field(default_factory=dict)
    attempt_key: str | None = None
    faults: tuple[Fault, ...] = ()


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
                f"Invalid value for 'streamkit.{key}': {value!r:.200}. Expected {spec.allowed}.",
            )
        if spec.parse is not None:
            try:
                value = spec.parse(value)
            except InvalidSetting as exc:
                _bad(exc.param, exc.message)
        options[key] = value
    return options


def _optional(
    body: Mapping[str, object], key: str, check: Callable[[object], bool], allowed: str
) -> Any:
    value = body.get(key)
    if value is not None and not check(value):
        _bad(key, f"Invalid value for '{key}': {value!r}. Expected {allowed}.")
    return value


def loads_json(raw: str | bytes) -> object:
    """Decode JSON as strictly as OpenAI does: ``NaN`` and ``Infinity`` are errors.

    Raises:
        ValueError: not valid JSON (``UnicodeDecodeError`` is one).
    """
    return json.loads(raw, parse_constant=_reject_constant)


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
        data = loads_json(body)
    except ValueError as exc:
        raise RequestError(
            400,
            f"We could not parse the JSON body of your request ({exc}). Send a JSON object with "
            "'Content-Type: application/json'.",
        ) from None
    return parse_chat_object(data, models)


def parse_chat_object(data: object, models: Mapping[str, SimModel]) -> ChatRequest:
    """Validate a decoded chat completion body (the WebSocket endpoint's ``body`` too).

    Args:
        data: the decoded JSON value.
        models: the models on offer, by id.

    Raises:
        RequestError: as :func:`parse_chat_request`.
    """
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
    ignore_eos = bool(_optional(data, "ignore_eos", _is_bool, "a boolean"))
    if ignore_eos and max_tokens is None:
        # vLLM then runs to the context length; the simulator has none to run to.
        _bad(
            "ignore_eos",
            "'ignore_eos' generates until the token limit: send 'max_completion_tokens' (or "
            "'max_tokens') with it.",
        )

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
        ignore_eos=ignore_eos,
        sim_options=options,
        attempt_key=options.get("attempt_key"),  # type: ignore[arg-type]
        faults=options.get("faults", ()),  # type: ignore[arg-type]
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
    if req.ignore_eos and req.max_tokens is not None:
        # vLLM's ignore_eos: the natural end (and streamkit.length) is passed over, so the
        # reply is exactly max_tokens long and finishes with "length".
        pieces = generate(req.prompt, req.seed, req.max_tokens, req.model)
        cut = True
    elif req.length is not None:
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
    """The SSE frames of one stream, byte for byte as OpenAI sends them, plus content ids.

    Each frame is ``data: {chunk}\\n\\n``; a content frame is preceded by ``id: N\\n``, N
    being the token's 0-based index in the logical stream (docs/protocol.md), so a client can
    resume with ``Last-Event-ID``. OpenAI clients ignore the line. The constant parts of a chunk
    are encoded once per stream, so a content frame costs one bytes formatting and a cached
    string encoding.

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

    def content(self, seq: int, piece: str) -> bytes:
        """One content frame, with its ``id:`` line (the hot path).

        Args:
            seq: the token's 0-based index in the logical stream.
            piece: the token's text.
        """
        return b"id: %d\n%b%b%b" % (seq, self._content_head, _json_string(piece), self._choice_tail)

    def malformed(self) -> bytes:
        """A frame whose data is a content chunk cut short: not valid JSON (a fault)."""
        return self._content_head + b'"\n\n'

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


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower case), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def caller_of(scope: Scope) -> str:
    """Who a request comes from, for the per-key limits.

    The bearer token it carries (the API key, checked or not: a server without a key still
    tells callers apart by the key their SDK sends), or its client address when it carries none.
    The token is kept as a digest: the limiter's memory holds no secrets.
    """
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            return "key:" + hashlib.blake2b(token, digest_size=16).hexdigest()
    client = scope.get("client")
    return f"client:{client[0]}" if client else "client:?"


def transport_of(send: Send) -> asyncio.Transport | None:
    """The connection's transport behind an ASGI ``send``, when the server exposes it.

    ASGI has no way to cut a connection, which a ``drop`` fault needs: ending the response sends
    the terminating chunk (a clean end), and raising makes the server log an application error.
    uvicorn's ``send`` is a bound method of the object that owns the connection (the HTTP
    request cycle, or the WebSocket protocol), and that object holds the asyncio transport.
    Under another server this returns ``None`` and the caller falls back to raising.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


def cut_connection(transport: asyncio.Transport) -> None:
    """End the TCP connection right after the bytes already written, as a network failure would.

    ``close`` flushes what was written, then sends FIN: the client reads every byte sent before
    the fault, then an end of stream in the middle of the response (no terminating chunk, no
    close frame), so it sees a broken connection after exactly the tokens the fault allowed. An
    ``abort`` (RST) would be more brutal but could discard data the client had not read yet,
    making the cut point nondeterministic. A client that stops reading would keep a closing
    connection half-open, so it is reset after a grace period.
    """
    transport.close()
    asyncio.get_running_loop().call_later(_DROP_GRACE, transport.abort)


class ConnectionDropped(Exception):
    """Raised out of the app to cut a connection when the server does not expose its transport
    (the server then closes the connection; uvicorn is not such a server)."""


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413,
        f"The request body is larger than this server accepts ({limit} bytes; set with "
        "`streamkit serve --max-body-bytes`). Send a smaller body.",
        code="request_too_large",
        # The rest of the body is left unread, so the connection cannot be reused.
        headers=[(b"connection", b"close")],
    )


async def _discard_rest(receive: Receive) -> None:
    """Read and throw away the rest of a refused body, within a budget of bytes and time.

    A server that answers 413 and closes while the client is still sending makes the kernel
    reset the connection, and the client then sees a connection error instead of the 413 (it
    happened here with a chunked upload). Draining first, as nginx's lingering close does,
    lets the answer arrive; nothing drained is kept, and a body past the budget is cut off.
    """
    budget = _DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` if the client went away first.

    Raises:
        RequestError: 413 as soon as the declared or received size passes ``limit``; nothing
            past the limit is kept (see :func:`_discard_rest`).
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _discard_rest(receive)
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            if more:
                await _discard_rest(receive)
            raise _too_large(limit)
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def _last_event_id(scope: Scope) -> int | None:
    """The ``Last-Event-ID`` header as a token index, or ``None`` when absent."""
    raw = header(scope, b"last-event-id")
    if raw is None:
        return None
    value = raw.strip()
    if not value.isdigit() or len(value) > 9:
        raise RequestError(
            400,
            f"Invalid Last-Event-ID header: {raw.decode('latin-1')[:40]!r}. Send the 'id' of "
            "the last content frame received (an integer >= 0) to resume after it.",
            param="Last-Event-ID",
        )
    return int(value)


def resume_start(resume_after: int | None, plan: Plan, where: str) -> int:
    """The first token to send when resuming after token ``resume_after`` (0 when not resuming).

    Args:
        resume_after: the last token index the client has, or ``None``.
        plan: the reply (regenerated from the same body, so the same text).
        where: how the client said it (``"Last-Event-ID"``, ``"resume_after"``), for messages.

    Raises:
        RequestError: 400 when the index is not in the reply: the body differs from the one
            first sent, or the client counted wrong.
    """
    if resume_after is None:
        return 0
    n = len(plan.pieces)
    if resume_after >= n:
        raise RequestError(
            400,
            f"Cannot resume after token {resume_after}: this reply has {n} content tokens "
            f"(ids 0 to {n - 1}). Resend the same body as the interrupted request.",
            param=where,
        )
    return resume_after + 1


async def _wait_disconnect(receive: Receive) -> None:
    # After the body, the next receive() only returns when the client disconnects (or the
    # response completed). uvicorn drops sends to a closed connection silently, so this is the
    # only way a stream learns that nobody is listening.
    while (await receive())["type"] != "http.disconnect":
        pass


async def _forever() -> NoReturn:
    """Wait until cancelled: a dropped stream waits here for the server to see the close."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")  # pragma: no cover


class _Outcome(enum.Enum):
    DONE = "done"  # the reply went out in full
    DISCONNECTED = "disconnected"  # the client left first
    ABORTED = "aborted"  # the server is shutting down and ended it


async def _watched(
    work: Coroutine[Any, Any, T], receive: Receive, inflight: set[asyncio.Task[Any]]
) -> tuple[_Outcome, T | None]:
    """Run ``work`` as a task registered in ``inflight`` while watching for the client leaving.

    Returns:
        How it ended, and ``work``'s result when DONE. Unless DONE, ``work`` has been cancelled
        and awaited.
    """
    task = asyncio.ensure_future(work)
    inflight.add(task)
    listener = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((task, listener), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            if task.cancelled():  # by App.close_streams, not by our own cancellation
                return _Outcome.ABORTED, None
            return _Outcome.DONE, task.result()  # re-raises what went wrong, if anything
        return _Outcome.DISCONNECTED, None
    finally:
        inflight.discard(task)
        for t in (task, listener):
            t.cancel()
        # Wait for both so nothing is left pending (and no exception goes unretrieved).
        await asyncio.gather(task, listener, return_exceptions=True)


class Admission:
    """An admitted completion: the faults that apply to it, and its concurrency slot.

    Attributes:
        faults: the faults that apply to this attempt.
    """

    __slots__ = ("_release", "faults")

    def __init__(self, faults: tuple[Fault, ...], release: Callable[[], None] | None) -> None:
        self.faults = faults
        self._release = release

    def release(self) -> None:
        """Give the caller's concurrency slot back (idempotent).

        Called just before the last bytes of a reply go out (the end of the body, the ``end``
        message, a dropped connection), not when the handler has unwound: a client that has
        read the whole reply may send its next request at once, and must find the slot free.
        """
        release, self._release = self._release, None
        if release is not None:
            release()


class _SSEWire:
    """The SSE framing :func:`~.produce.produce` writes one streamed response through."""

    __slots__ = ("_admission", "_content", "_encoder", "_plan", "_send", "dropped")

    def __init__(self, send: Send, encoder: ChunkEncoder, plan: Plan, admission: Admission) -> None:
        self._send = send
        self._encoder = encoder
        self._content = encoder.content
        self._plan = plan
        self._admission = admission
        self.dropped = False

    async def token(self, seq: int, piece: str) -> None:
        await self._send(
            {"type": "http.response.body", "body": self._content(seq, piece), "more_body": True}
        )

    async def malformed(self, seq: int) -> None:
        body = self._encoder.malformed()
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def drop(self, seq: int, mid_frame: bool) -> None:
        transport = transport_of(self._send)
        if transport is None:
            raise ConnectionDropped("drop fault: cutting the connection")
        if mid_frame:
            pieces = self._plan.pieces
            frame = (
                self._content(seq, pieces[seq])
                if seq < len(pieces)
                else self._encoder.finish(self._plan.finish_reason)
            )
            half = frame[: len(frame) // 2]
            await self._send({"type": "http.response.body", "body": half, "more_body": True})
        self.dropped = True
        self._admission.release()
        cut_connection(transport)

    async def end(self, tail: bytes) -> None:
        """Send the response's last bytes and end it (the terminating chunk)."""
        self._admission.release()
        await self._send({"type": "http.response.body", "body": tail, "more_body": False})


class App:
    """The simulator as an ASGI 3 application.

    Args:
        api_key: if set, every ``/v1`` route requires ``Authorization: Bearer <api_key>``.
        models: the models to offer (default :data:`~.models.MODELS`).
        max_concurrent_streams: completions (streamed or not, HTTP or WebSocket) one caller may
            have in progress; more get 429. ``None``: unlimited.
        requests_per_minute: completions one caller may start in any 60 s; more get 429 with
            ``Retry-After``. ``None``: unlimited.
        max_body_bytes: the largest request body (and WebSocket message) accepted; larger get
            413.
        max_batch: the most completions generating at once, over every caller (vLLM's
            ``max_num_seqs``); later ones wait in line, first come first served, and their time
            to first token counts from when they get a place. ``None``: no limit.
        decode_capacity: decode tokens per second shared by the running batch: a stream's
            gap is at least ``running / decode_capacity``. ``None``: each stream keeps its
            model's rate. See :mod:`.capacity`.

    A caller is the bearer token a request carries, or its client address when it carries none
    (:func:`caller_of`).

    Attributes:
        stats: live counters (:class:`ServerStats`).
        models: the models on offer, by id.
        attempts: attempts counted per ``streamkit.attempt_key``.
        batch: the capacity model (:class:`~.capacity.Batch`), or ``None`` when neither
            ``max_batch`` nor ``decode_capacity`` is set.
    """

    def __init__(
        self,
        api_key: str | None = None,
        models: Mapping[str, SimModel] | None = None,
        *,
        max_concurrent_streams: int | None = None,
        requests_per_minute: int | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch: int | None = None,
        decode_capacity: float | None = None,
    ) -> None:
        self._api_key = api_key.encode() if api_key is not None else None
        self.models: dict[str, SimModel] = dict(MODELS if models is None else models)
        if not self.models:
            raise ValueError("the server needs at least one model")
        for name, value in (
            ("max_concurrent_streams", max_concurrent_streams),
            ("requests_per_minute", requests_per_minute),
            ("max_body_bytes", max_body_bytes),
        ):
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
        self.max_concurrent_streams = max_concurrent_streams
        self.requests_per_minute = requests_per_minute
        self.max_body_bytes = max_body_bytes
        self._concurrency = (
            ConcurrencyLimiter(max_concurrent_streams) if max_concurrent_streams else None
        )
        self._rate = RateLimiter(requests_per_minute) if requests_per_minute else None
        self.attempts = AttemptCounter()
        self.stats = ServerStats()
        self.max_batch = max_batch
        self.decode_capacity = decode_capacity
        # Off by default, and then no request or token does any capacity work.
        self.batch = (
            Batch(max_batch, decode_capacity, self.stats)
            if max_batch is not None or decode_capacity is not None
            else None
        )
        self._pacer: Pacer | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closing = False
        # (status, retry_after) while switched to failing; read once per request, never per token
        self._failing: tuple[int, float | None] | None = None
        # ws.py builds on this module (validation, admission, wire formats), so it is imported
        # here rather than at the top, where it would be a cycle.
        from .ws import WebSocketEndpoint

        self._ws: WebSocketEndpoint = WebSocketEndpoint(self)

    def __repr__(self) -> str:
        # Never show the key.
        auth = "key required" if self._api_key is not None else "no key"
        return f"<streamkit App models={list(self.models)} {auth}>"

    @property
    def closing(self) -> bool:
        """Whether the server is shutting down (new replies get 503)."""
        return self._closing

    @property
    def failing(self) -> int | None:
        """The status the API routes answer with while switched to failing, else None."""
        return self._failing[0] if self._failing is not None else None

    def set_failing(self, status: int | None = 503, *, retry_after: float | None = None) -> None:
        """Make ``/v1/models`` and every completion (HTTP and WebSocket) answer ``status``.

        A runtime switch for health checks and failover: the server stays up and answers
        quickly, with an OpenAI-style error body, until switched back with ``None``. Streams
        already in progress go on. Safe to call from any thread (one attribute store).

        Args:
            status: 429 or a 5xx status; None to serve normally again.
            retry_after: seconds sent as ``Retry-After`` with each refusal, if given.

        Raises:
            ValueError: a status other than 429 or 500-599, or a bad ``retry_after``.
        """
        if status is None:
            self._failing = None
            return
        if not _is_int(status) or not (status == 429 or 500 <= status <= 599):
            raise ValueError(f"status must be 429 or 500-599, or None (got {status!r})")
        if retry_after is not None and not (_is_number(retry_after) and 0 <= retry_after <= 3600):
            raise ValueError(f"retry_after must be seconds from 0 to 3600 (got {retry_after!r})")
        self._failing = (status, retry_after)

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
        an application error. (WebSocket connections are closed by uvicorn itself, with code
        1012, which stops their streams.)
        """
        self._closing = True
        for task in list(self._inflight):
            task.cancel()

    @contextlib.contextmanager
    def admit(self, req: ChatRequest, caller: str) -> Iterator[Admission]:
        """Let a validated completion in, or refuse it, for HTTP and WebSocket alike.

        In order: shutting down (503), switched to failing (:meth:`set_failing`), the
        caller's concurrency limit (429), its requests per minute (429, recorded only when
        admitted), then the attempt is counted for its ``attempt_key`` and a ``status`` fault
        that applies answers instead (counted as an attempt, so a retry can succeed). The
        request then holds one of the caller's concurrency slots until
        :meth:`Admission.release`, or the end of the ``with`` body.

        Args:
            req: the validated request.
            caller: who sent it (:func:`caller_of`).

        Yields:
            The admission: the faults that apply to this attempt, and the slot.

        Raises:
            RequestError: the refusal to answer with.
        """
        if self._closing:
            raise _shutting_down()
        if (failing := self._failing) is not None:  # one read: another thread sets it
            raise _failing_error(*failing)
        stats = self.stats
        concurrency = self._concurrency
        if concurrency is not None and concurrency.full(caller):
            stats.rate_limited += 1
            raise RequestError(
                429,
                f"Too many concurrent requests: this server allows {concurrency.limit} in "
                "progress per API key (`streamkit serve --max-concurrent-streams`). Retry when "
                "one of yours has finished.",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=1,
            )
        if self._rate is not None:
            wait = self._rate.acquire(caller, time.monotonic())
            if wait is not None:
                stats.rate_limited += 1
                seconds = RateLimiter.retry_after_header(wait)
                raise RequestError(
                    429,
                    f"Rate limit reached for requests: limit {self._rate.per_minute} per minute "
                    "per API key (`streamkit serve --requests-per-minute`). Please try again in "
                    f"{seconds} s.",
                    type="requests",
                    code="rate_limit_exceeded",
                    retry_after=seconds,
                )
        faults = active_faults(req.faults, self.attempts.next(req.attempt_key))
        status = first_status(faults)
        if status is not None:
            stats.faults_injected += 1
            message, kind, code = error_for_status(status)
            raise RequestError(
                status.code, message, type=kind, code=code, retry_after=status.retry_after
            )
        if concurrency is None:
            yield Admission(faults, None)
            return
        concurrency.acquire(caller)
        admission = Admission(faults, functools.partial(concurrency.release, caller))
        try:
            yield admission
        finally:
            admission.release()

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
        request_id = _new_id("req_")
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
            elif path == "/v1/models":
                self._allow(method, "GET", path)
                if (failing := self._failing) is not None:  # one read: another thread sets it
                    raise _failing_error(*failing)
                cards = [_model_card(m) for m in self.models.values()]
                await self._json(send, 200, {"object": "list", "data": cards}, request_id)
            elif path.startswith("/v1/models/"):
                self._allow(method, "GET", path)
                if (failing := self._failing) is not None:  # one read: another thread sets it
                    raise _failing_error(*failing)
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
                await self._chat(scope, receive, send, t0, request_id)
            else:
                raise RequestError(
                    404,
                    f"Invalid URL ({method} {scope['path']}): the streamkit simulator serves "
                    "GET /health, GET /v1/models, GET /v1/models/{id}, "
                    "POST /v1/chat/completions and the WebSocket endpoint /v1/ws.",
                    code="unknown_url",
                )
        except RequestError as exc:
            self.stats.errors += 1
            await self._send(send, exc.status, exc.body(), request_id, exc.headers)

    def authorize(self, scope: Scope) -> None:
        """Check the request's API key (when the server has one).

        Raises:
            RequestError: 401 with OpenAI's ``invalid_api_key`` body.
        """
        if self._api_key is None:
            return
        given = header(scope, b"authorization") or b""
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

    async def _chat(
        self, scope: Scope, receive: Receive, send: Send, t0: float, request_id: str
    ) -> None:
        body = await _read_body(scope, receive, self.max_body_bytes)
        if body is None:
            return
        req = parse_chat_request(body, self.models)
        resume_after = _last_event_id(scope)
        if resume_after is not None and not req.stream:
            raise RequestError(
                400,
                "Last-Event-ID resumes a stream: send it with 'stream': true, or drop the header.",
                param="Last-Event-ID",
            )
        plan = plan_reply(req)
        start = resume_start(resume_after, plan, "Last-Event-ID")
        with self.admit(req, caller_of(scope)) as admission:
            completion_id = _new_id("chatcmpl-")
            created = int(time.time())
            if req.stream:
                await self._stream(
                    receive,
                    send,
                    t0,
                    request_id,
                    completion_id,
                    created,
                    req,
                    plan,
                    start,
                    admission,
                )
                return
            work = self._complete(
                send, t0, request_id, completion_id, created, req, plan, admission
            )
            outcome, _ = await _watched(work, receive, self._inflight)
            if outcome is _Outcome.ABORTED:
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
        admission: Admission,
    ) -> None:
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
            await _forever()  # until the server sees the connection close
        body = completion_body(completion_id, created, req.model.id, plan)
        if any(isinstance(f, Malformed) for f in reached):
            self.stats.faults_injected += 1
            body = body[: len(body) // 2]
        self.stats.faults_injected += sum(isinstance(f, Stall) for f in reached)
        admission.release()
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
        start: int,
        admission: Admission,
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
        wire = _SSEWire(send, encoder, plan, admission)
        try:
            work = self._emit(wire, t0, encoder, req, plan, start, admission.faults)
            outcome, ending = await _watched(work, receive, self._inflight)
            if outcome is _Outcome.DONE:
                if ending is Ending.FINISHED:
                    stats.streams_completed += 1
            elif outcome is _Outcome.DISCONNECTED:
                if wire.dropped:
                    stats.streams_dropped += 1
                else:
                    stats.streams_disconnected += 1
            else:
                stats.streams_aborted += 1
                # End the HTTP response properly; the missing [DONE] tells the client why.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            stats.active_streams -= 1

    async def _emit(
        self,
        wire: _SSEWire,
        t0: float,
        encoder: ChunkEncoder,
        req: ChatRequest,
        plan: Plan,
        start: int,
        faults: tuple[Fault, ...],
    ) -> Ending:
        ending = await produce(
            wire,
            plan.pieces,
            plan.offsets,
            start=start,
            t0=t0,
            faults=stream_faults(faults, start, len(plan.pieces)),
            pacer=self.pacer(),
            stats=self.stats,
            batch=self.batch,
        )
        if ending is Ending.DROPPED:
            await _forever()  # the connection is closing; the disconnect listener ends this
        tail = b""
        if ending is Ending.FINISHED:
            tail = encoder.finish(plan.finish_reason)
            if req.include_usage:
                tail += encoder.usage(plan.usage())
            tail += encoder.done()
        await wire.end(tail)
        return ending


def create_app(
    api_key: str | None = None,
    models: Mapping[str, SimModel] | None = None,
    *,
    max_concurrent_streams: int | None = None,
    requests_per_minute: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int | None = None,
    decode_capacity: float | None = None,
) -> App:
    """Make the simulator's ASGI app.

    Args:
        api_key: if set, every ``/v1`` route requires ``Authorization: Bearer <api_key>``;
            ``/health`` stays open.
        models: the models to offer, by id (default :data:`~.models.MODELS`).
        max_concurrent_streams: completions one caller (API key, or client address without
            one) may have in progress; more get 429. ``None``: unlimited.
        requests_per_minute: completions one caller may start in any 60 s; more get 429 with
            ``Retry-After``. ``None``: unlimited.
        max_body_bytes: the largest request body accepted (1 MiB by default); larger get 413.
        max_batch: the capacity model's batch: the most completions generating at once, over
            every caller; later ones wait in line (FIFO) and their time to first token includes
            the wait. ``None`` (the default): no limit.
        decode_capacity: the capacity model's decode rate: tokens per second shared by the
            running batch (each stream's gap is at least ``running / decode_capacity``).
            ``None`` (the default): every stream keeps its model's rate.

    Returns:
        The app; its ``stats`` attribute holds live counters (``queued`` and ``running`` for
        the capacity model).

    Raises:
        ValueError: a limit that is not an integer >= 1, or a ``decode_capacity`` that is not
            a number > 0.
    """
    return App(
        api_key=api_key,
        models=models,
        max_concurrent_streams=max_concurrent_streams,
        requests_per_minute=requests_per_minute,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        decode_capacity=decode_capacity,
    )
