"""Chat Completions over SSE through the real ``openai`` SDK, parsed lean.

The SDK builds the request, authenticates, maps HTTP errors and works with every OpenAI-compatible
server (OpenAI, vLLM, Ollama, llama.cpp). Its per-chunk loop, though, builds a pydantic model for
every chunk (~170–210 µs of CPU here, against ~3 µs for ``json.loads``), which saturates a core at a
few thousand chunks/s. So we open the request with ``with_streaming_response`` and decode the raw
bytes ourselves with :class:`~streamkit._sse.SSEDecoder` and ``jiter``: no SDK model objects on the
hot path.

Every third-party exception is translated here, once, into :mod:`streamkit.errors`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import httpx2
import openai
from jiter import from_json

from .._sse import SSEDecoder
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
from ..events import Event, StreamEnd, StreamStart, TokenDelta, Usage

__all__ = ["stream_chat_completion", "translate_error"]

_clock = time.perf_counter


async def stream_chat_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
) -> AsyncIterator[Event]:
    """Stream one chat completion as streamkit events.

    Yields one :class:`StreamStart`, then a :class:`TokenDelta` per content chunk, then one
    :class:`StreamEnd`. Asks for the usage chunk (``stream_options.include_usage``); servers that
    ignore it (llama.cpp) simply end with ``usage=None``.

    Args:
        client: the SDK client; its ``base_url``, key, timeout and ``max_retries`` apply.
        model: the model id.
        messages: OpenAI chat messages.
        params: further request fields (``max_tokens``, ``seed``, ``extra_body``, …).

    Raises:
        StreamkitError: a typed error; ``partial_text`` holds the text received before it.
            Leaving the iterator early (``aclose``, task cancel) closes the connection at once.
    """
    url = str(client.base_url).rstrip("/")
    kwargs: dict[str, Any] = dict(params or {})
    kwargs.setdefault("stream_options", {"include_usage": True})
    parts: list[str] = []
    sent_at = _clock()
    try:
        manager = client.chat.completions.with_streaming_response.create(
            model=model,
            messages=list(messages),  # type: ignore[arg-type]  # plain dicts, as users write them
            stream=True,
            **kwargs,
        )
        async with manager as response:
            # The SDK numbers its attempts in a request header; the accepted one tells the retries.
            retries = response.http_request.headers.get("x-stainless-retry-count", "0")
            yield StreamStart(
                sent_at,
                _clock(),
                model,
                response.headers.get("x-request-id"),
                int(retries) if retries.isdigit() else 0,
            )
            decoder = SSEDecoder()
            finish_reason: str | None = None
            usage: Usage | None = None
            done = False
            index = 0
            loads = from_json  # jiter, as the SDK itself uses: ~1 µs a chunk against ~3.6 for json
            async for raw in response.http_response.aiter_bytes():
                now = _clock()  # one read, one arrival time: chunks in it arrived together
                for sse in decoder.feed(raw):
                    data = sse.data
                    if data == b"[DONE]":
                        done = True
                        continue
                    try:
                        chunk = loads(data)
                    except ValueError as exc:
                        raise ProtocolError(
                            f"malformed JSON in the stream from {url}: {data[:80]!r}",
                            url=url,
                            partial_text="".join(parts),
                        ) from exc
                    if not isinstance(chunk, dict):
                        raise ProtocolError(
                            f"unexpected stream data from {url}: {data[:80]!r}",
                            url=url,
                            partial_text="".join(parts),
                        )
                    if "error" in chunk:
                        raise _stream_error(chunk["error"], url, "".join(parts))
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta")
                        content = delta.get("content") if delta else None
                        if content:  # role-only and empty chunks are not tokens
                            parts.append(content)
                            yield TokenDelta(content, index, now)
                            index += 1
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                    raw_usage = chunk.get("usage")
                    if raw_usage:
                        usage = Usage.from_dict(raw_usage)
            leftover = decoder.close()
            if not done and finish_reason is None:
                cut = " mid-frame" if leftover.strip() else ""
                raise StreamInterrupted(
                    f"the stream from {url} ended{cut} before the server finished "
                    f"(no finish_reason, no [DONE]) after {index} chunks",
                    url=url,
                    partial_text="".join(parts),
                )
            yield StreamEnd(finish_reason, usage, _clock())
    except StreamkitError:
        raise
    except (openai.OpenAIError, httpx2.HTTPError) as exc:
        raise translate_error(exc, url, "".join(parts)) from exc


def translate_error(exc: BaseException, url: str, partial_text: str = "") -> StreamkitError:
    """Map an openai / httpx2 exception to the streamkit error that names its cause and fix."""
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, url, partial_text)
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ReadTimeout(
            f"timed out waiting for {url} (raise timeout= or check the server)",
            url=url,
            partial_text=partial_text,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        if partial_text and isinstance(cause, httpx2.HTTPError):
            return _read_error(cause, url, partial_text)
        reason = _describe(cause) if cause is not None else str(exc)
        return ConnectError(
            f"cannot connect to {url}: {reason} (is the server running? check base_url)",
            url=url,
            partial_text=partial_text,
        )
    if isinstance(exc, httpx2.HTTPError):
        return _read_error(exc, url, partial_text)
    return StreamkitError(f"{type(exc).__name__} from {url}: {exc}", url=url)


def _read_error(exc: BaseException, url: str, partial_text: str) -> StreamkitError:
    if isinstance(exc, httpx2.TimeoutException):
        return ReadTimeout(
            f"no data from {url} within the read timeout", url=url, partial_text=partial_text
        )
    if isinstance(exc, httpx2.ConnectError | httpx2.UnsupportedProtocol | httpx2.InvalidURL):
        return ConnectError(
            f"cannot connect to {url}: {_describe(exc)} (check base_url)",
            url=url,
            partial_text=partial_text,
        )
    return StreamInterrupted(
        f"the connection to {url} dropped mid-stream: {_describe(exc)}",
        url=url,
        partial_text=partial_text,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def _status_error(exc: openai.APIStatusError, url: str, partial_text: str) -> APIStatusError:
    status = exc.status_code
    body = exc.body if isinstance(exc.body, Mapping) else {}
    message = str(body.get("message") or exc.message)
    code = body.get("code")
    cls = _STATUS_CLASSES.get(status, ServerError if status >= 500 else APIStatusError)
    hint = ""
    if cls is AuthError:
        hint = " (set OPENAI_API_KEY or pass api_key=)"
    elif cls is NotFoundError:
        hint = (
            " (list the models with GET /v1/models)"
            if code == "model_not_found" or "model" in message.lower()
            else " (check that base_url ends in /v1)"
        )
    return cls(
        f"{status} from {url}: {message}{hint}",
        status_code=status,
        url=url,
        retry_after=_retry_after(exc.response.headers),
        code=str(code) if code is not None else None,
        partial_text=partial_text,
    )


def _stream_error(error: object, url: str, partial_text: str) -> StreamkitError:
    # OpenAI (and vLLM) may send an error object as a data frame after the stream has started.
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


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
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
