"""A Client's settings: the transports it knows, its default retry policy, and their checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .errors import UsageError
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_RETRY",
    "LOCAL_KEY",
    "TRANSPORTS",
    "Transport",
    "check_api",
    "check_options",
    "request_body",
]

Transport = Literal["sse", "generic-sse", "fast-sse", "ws"]
TRANSPORTS = ("sse", "generic-sse", "fast-sse", "ws")
LOCAL_KEY = "streamkit-local"  # the bundled server needs no key; the SDK insists on one
DEFAULT_RETRY = RetryPolicy()
"""The policy a :class:`~streamkit.Client` uses unless told otherwise: up to 5 attempts in a row
without progress (a resume that brings new tokens starts the count again), full-jitter backoff."""


def check_options(
    *,
    timeout: Any,
    max_retries: Any,
    transport: Any,
    retry: Any,
    on_interrupt: Any,
    first_token_timeout: Any,
    idle_timeout: Any,
    resume: Any,
) -> None:
    """Raise :class:`~streamkit.errors.UsageError` naming the first invalid Client option."""
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise UsageError(f"timeout={timeout!r} is invalid: must be a number of seconds > 0")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise UsageError(f"max_retries={max_retries!r} is invalid: must be an integer >= 0")
    if transport not in TRANSPORTS:
        raise UsageError(
            f"transport={transport!r} is invalid: use 'sse' (the openai SDK), "
            "'generic-sse' (httpx2), 'fast-sse' (asyncio + httptools) or 'ws' (WebSocket)"
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise UsageError(
            f"retry={retry!r} is invalid: pass a RetryPolicy(...), or None for no retries"
        )
    if on_interrupt not in ("raise", "restart"):
        raise UsageError(f"on_interrupt={on_interrupt!r} is invalid: use 'raise' or 'restart'")
    for name, value in (
        ("first_token_timeout", first_token_timeout),
        ("idle_timeout", idle_timeout),
    ):
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or not value > 0
        ):
            raise UsageError(
                f"{name}={value!r} is invalid: must be a number of seconds > 0, or None"
            )
    if not isinstance(resume, bool):
        raise UsageError(f"resume={resume!r} is invalid: must be True or False")


def check_api(api: Any, transport: str) -> None:
    """Raise :class:`~streamkit.errors.UsageError` unless ``api`` is a dialect ``transport``
    speaks: ``"chat"`` (Chat Completions) anywhere, ``"responses"`` on the SSE transports."""
    if api not in ("chat", "responses"):
        raise UsageError(
            f"api={api!r} is invalid: use 'chat' (POST /chat/completions) or 'responses' "
            "(POST /responses, OpenAI's Responses API)"
        )
    if api == "responses" and transport == "ws":
        raise UsageError(
            "api='responses' is not spoken over transport='ws': use 'sse', 'generic-sse' or "
            "'fast-sse'"
        )


def request_body(
    model: str | None,
    base_url: str,
    max_tokens: int | None,
    seed: int | None,
    temperature: float | None,
    extra_body: Mapping[str, Any] | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The Chat Completions fields of one request (no messages), checked.

    Raises:
        UsageError: no model, or an invalid ``max_tokens``.
    """
    if not model:  # Client.events resolves it first; kept for direct callers
        raise UsageError(f"no model given for {base_url}: pass model= to Client or chat")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise UsageError(f"max_tokens={max_tokens!r} is invalid: must be an integer >= 1")
    request: dict[str, Any] = {"model": model, **params}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    if seed is not None:
        request["seed"] = seed
    if temperature is not None:
        request["temperature"] = temperature
    if extra_body:
        request["extra_body"] = dict(extra_body)
    return request
