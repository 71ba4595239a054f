"""Chat Completions over SSE through the real ``openai`` SDK, parsed lean.

The SDK builds the request, authenticates, maps HTTP errors and works with every OpenAI-compatible
server (OpenAI, vLLM, Ollama, llama.cpp). Its per-chunk loop, though, builds a pydantic model for
every chunk (~170–210 µs of CPU here, against ~3 µs for ``json.loads``), which saturates a core at a
few thousand chunks/s. So we open the request with ``with_streaming_response`` and decode the raw
bytes ourselves with :class:`~streamkit._sse.SSEDecoder` and ``jiter``: no SDK model objects on the
hot path.

Resume: given an attempt that continues a stream (a :class:`~._attempt.ResumeFrom`), the request
carries ``Last-Event-ID`` (through the SDK's ``extra_headers``), and each content frame's SSE ``id``
(the bundled server numbers tokens from 0) becomes the token's index and its ``event_id``, so the
resilience layer can check that nothing repeats or goes missing. Servers without ids (OpenAI
itself) are counted locally. The server's ``retry:`` is yielded as a
:class:`~streamkit.events.ReconnectDelay`.

The clock (``StreamStart.sent_at``) starts when the SDK is handed the request, after a one-time
rehearsal of the SDK and httpx2 code paths (:mod:`._rehearsal`), so the first request's TTFT is
not inflated by the SDK's lazy imports and caches.

Every third-party exception is translated here, once, into :mod:`streamkit.errors`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import httpx2
import openai

from .._sse import SSEDecoder
from ..errors import (
    APIStatusError,
    ConnectError,
    ReadTimeout,
    StreamkitError,
)
from ..events import Event, StreamStart
from ._attempt import ResumeFrom
from ._common import (
    BODY_ENDS,
    ChatChunks,
    describe,
    is_event_stream,
    not_event_stream,
    read_error,
    retry_after_from_headers,
    status_error,
)
from ._rehearsal import MESSAGES, MODEL, http_client, rehearse, rehearsed
from ._responses import Api, ResponseEvents, responses_fields, responses_input, resume_point

__all__ = ["stream_chat_completion", "translate_error"]

_clock = time.perf_counter


async def stream_chat_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
    attempt: ResumeFrom | None = None,
    api: Api = "chat",
) -> AsyncIterator[Event]:
    """Stream one chat completion as streamkit events.

    Yields one :class:`StreamStart`, then a :class:`TokenDelta` per content chunk, then one
    :class:`StreamEnd` (and a :class:`~streamkit.events.ReconnectDelay` when the server sends
    ``retry:``). Asks for the usage chunk (``stream_options.include_usage``); servers that
    ignore it (llama.cpp) simply end with ``usage=None``.

    Args:
        client: the SDK client; its ``base_url``, key, timeout and ``max_retries`` apply.
        model: the model id.
        messages: OpenAI chat messages.
        params: further request fields (``max_tokens``, ``seed``, ``extra_body``, …).
        attempt: where the attempt starts, when a resilience layer drives it: a resume sends
            ``Last-Event-ID``. The server's ids come back on the tokens (``event_id``) and its
            ``retry:`` field as a :class:`~streamkit.events.ReconnectDelay`.
        api: ``"chat"``, or ``"responses"``: the request goes through
            ``client.responses.with_streaming_response`` (``create``, or ``retrieve`` with
            ``starting_after`` on a resume) and its events are folded by :mod:`._responses`.

    Raises:
        StreamkitError: a typed error; ``partial_text`` holds the text received before it.
            Leaving the iterator early (``aclose``, task cancel) closes the connection at once.
    """
    url = str(client.base_url).rstrip("/")
    kwargs: dict[str, Any] = dict(params or {})
    chunks: ChatChunks | ResponseEvents
    if api == "responses":
        chunks = ResponseEvents(url, attempt)
    else:
        kwargs.setdefault("stream_options", {"include_usage": True})
        use_ids = attempt is not None and attempt.use_ids
        if use_ids and attempt is not None and attempt.last_event_id is not None:
            headers = dict(kwargs.get("extra_headers") or {})
            headers["Last-Event-ID"] = attempt.last_event_id
            kwargs["extra_headers"] = headers
        chunks = ChatChunks(url, attempt)
    decoder = SSEDecoder()
    if not rehearsed("sse"):
        await rehearse("sse", _rehearsal)  # the first request's setup, before its clock
    sent_at = _clock()
    try:
        if api == "responses":
            manager: Any = _open_response(client, model, messages, kwargs, attempt)
        else:
            manager = client.chat.completions.with_streaming_response.create(
                model=model,
                messages=list(messages),  # type: ignore[arg-type]  # plain dicts
                stream=True,
                **kwargs,
            )
        async with manager as response:
            opened_at = _clock()
            kind = response.headers.get("content-type")
            if not is_event_stream(kind):  # as the other transports: only an event stream
                raise not_event_stream(str(response.http_request.url), response.status_code, kind)
            # The SDK numbers its attempts in a request header; the accepted one tells the retries.
            retries = response.http_request.headers.get("x-stainless-retry-count", "0")
            yield StreamStart(
                sent_at,
                opened_at,
                model,
                response.headers.get("x-request-id"),
                int(retries) if retries.isdigit() else 0,
            )
            try:
                async for raw in response.http_response.aiter_bytes():
                    now = _clock()  # one read, one arrival time: chunks in it arrived together
                    events = decoder.feed(raw)
                    if decoder.retry is not None:  # SSE retry: is in milliseconds
                        hint = chunks.reconnect(decoder.retry / 1000, now)
                        if hint is not None:
                            yield hint
                    for sse in events:
                        for piece in chunks.feed(sse, now):
                            yield piece
            except httpx2.HTTPError as exc:
                error = translate_error(exc, url, chunks.partial_text)
                if not (chunks.complete and isinstance(error, BODY_ENDS)):
                    raise error from exc
                # The reply is complete: a body that then drops or stalls ends it (ChatChunks.end).
            yield chunks.end(_clock(), cut=bool(decoder.close().strip()))
    except StreamkitError:
        raise
    except (openai.OpenAIError, httpx2.HTTPError) as exc:
        raise translate_error(exc, url, chunks.partial_text) from exc


def _open_response(
    client: openai.AsyncOpenAI,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    kwargs: dict[str, Any],
    attempt: ResumeFrom | None,
) -> Any:
    """The SDK's streaming-response manager for one Responses attempt: ``create`` (every field
    but the input through ``extra_body``, so Chat Completions fields such as ``seed`` pass as
    they do over the other transports), or ``retrieve`` after the last kept event."""
    options = {k: kwargs.pop(k) for k in ("extra_headers", "extra_query", "timeout") if k in kwargs}
    extra_body = kwargs.pop("extra_body", None) or {}
    raw = client.responses.with_streaming_response
    point = resume_point(attempt)
    if point is not None:
        return raw.retrieve(point[0], stream=True, starting_after=point[1], **options)
    return raw.create(
        model=model,
        input=responses_input(messages),  # type: ignore[arg-type]  # plain dicts
        stream=True,
        extra_body={**responses_fields(kwargs), **extra_body},
        **options,
    )


async def _rehearsal(base_url: str) -> None:
    """One request through a throwaway SDK client and httpx2 client (see :mod:`._rehearsal`)."""
    async with http_client() as http:
        sdk = openai.AsyncOpenAI(
            base_url=base_url, api_key="rehearsal", http_client=http, max_retries=0
        )
        async for _ in stream_chat_completion(sdk, model=MODEL, messages=MESSAGES):
            pass


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
            return read_error(cause, url, partial_text)
        reason = describe(cause) if cause is not None else str(exc)
        return ConnectError(
            f"cannot connect to {url}: {reason} (is the server running? check base_url)",
            url=url,
            partial_text=partial_text,
        )
    if isinstance(exc, httpx2.HTTPError):
        return read_error(exc, url, partial_text)
    return StreamkitError(f"{type(exc).__name__} from {url}: {exc}", url=url)


def _status_error(exc: openai.APIStatusError, url: str, partial_text: str) -> APIStatusError:
    body = exc.body if isinstance(exc.body, Mapping) else {}
    code = body.get("code")
    return status_error(
        exc.status_code,
        str(body.get("message") or exc.message),
        url=url,
        code=str(code) if code is not None else None,
        retry_after=retry_after_from_headers(exc.response.headers),
        partial_text=partial_text,
    )
