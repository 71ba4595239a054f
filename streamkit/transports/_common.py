"""What every transport shares: HTTP status and httpx2 errors → typed errors, ``Retry-After``.

One table maps a status to its :mod:`streamkit.errors` class, so a 429 is a
:class:`~streamkit.errors.RateLimitError` whether it came as an HTTP response, through the openai
SDK, or as a WebSocket ``error`` message.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import httpx2

from ..errors import (
    APIStatusError,
    AuthError,
    BadRequestError,
    ConnectError,
    NotFoundError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    StreamInterrupted,
    StreamkitError,
)

__all__ = [
    "STATUS_CLASSES",
    "describe",
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
        hint = (
            " (list the models with GET /v1/models)"
            if code == "model_not_found" or "model" in message.lower()
            else " (check that base_url ends in /v1)"
        )
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
