"""Request validation: a ``POST /v1/chat/completions`` body in, a :class:`ChatRequest` or a
:class:`RequestError` carrying an OpenAI-style error body out.

Per-request simulation settings in the ``streamkit`` body field are checked against the
:data:`SIM_OPTIONS` table; the fault list and the attempt key are entries there, parsed by
:mod:`.faults`. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ._checks import is_int, is_number
from .faults import Fault, InvalidSetting, parse_attempt_key, parse_faults
from .models import SimModel
from .textgen import tokenize

__all__ = [
    "SIM_OPTIONS",
    "ChatRequest",
    "RequestError",
    "SimOption",
    "loads_json",
    "parse_chat_object",
    "parse_chat_request",
]


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


# --------------------------------------------------------------------------------------------
# Validation: pure checks of a decoded body


def _number_in(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[object], bool]:
    def check(v: object) -> bool:
        if not is_number(v):
            return False
        x = float(v)  # type: ignore[arg-type]
        return (lo < x if lo_open else lo <= x) and x <= hi

    return check


def _int_in(lo: int, hi: int) -> Callable[[object], bool]:
    return lambda v: is_int(v) and lo <= v <= hi  # type: ignore[operator]


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
    "reasoning_field": SimOption(
        lambda v: v in ("reasoning_content", "reasoning"),
        "'reasoning_content' (DeepSeek, llama.cpp) or 'reasoning' (newer vLLM, Ollama)",
    ),
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
_KNOWN_PARAMS = _HANDLED_PARAMS | frozenset(_IGNORED_PARAMS)
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
        tools: the request's ``tools`` (validated when the reply is planned).
        tool_choice: the request's ``tool_choice``.
        parallel_tool_calls: the request's ``parallel_tool_calls`` (default true).
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
    tools: tuple[object, ...] = ()
    tool_choice: object = None
    parallel_tool_calls: bool = True


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
    unknown = sorted(raw.keys() - SIM_OPTIONS.keys())
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


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_json(raw: str | bytes) -> object:
    """Decode JSON as strictly as OpenAI does: ``NaN`` and ``Infinity`` are errors.

    Raises:
        ValueError: not valid JSON (``UnicodeDecodeError`` is one).
    """
    # json.loads(raw, parse_constant=...) builds a decoder per call; this is what it then does.
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
    else:
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    return _DECODER.decode(raw)


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

    unknown = sorted(data.keys() - _KNOWN_PARAMS)
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
    n = _optional(data, "n", is_int, "an integer")
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
    if not _IGNORED_PARAMS.keys().isdisjoint(data):  # most requests send none of them
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
        tools=tuple(data.get("tools") or ()),
        tool_choice=data.get("tool_choice"),
        parallel_tool_calls=data.get("parallel_tool_calls") is not False,
    )
