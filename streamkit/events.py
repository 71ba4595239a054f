"""The small, immutable events every transport yields and every stage downstream consumes.

A stream is, in order: one :class:`StreamStart` (response headers arrived), zero or more
:class:`TokenDelta` (each content chunk, with its index and monotonic arrival time), then exactly
one of :class:`StreamEnd` (the server finished) or :class:`StreamError` (it did not). Role-only
chunks and the usage chunk are folded into these; they are never tokens. A stream that is retried
has a :class:`StreamRetry` after the failed attempt's events and a new :class:`StreamStart` for
the next attempt. When the next attempt resumes (``resume_after`` set), token indices carry on
across attempts, never repeating; when it starts over (a server without event ids), the retry says
how many tokens it ``discarded``, and indices start again at 0, so an index is always the token's
position in the text that is kept. A transport may also yield a :class:`ReconnectDelay` (the
server's SSE ``retry:``) for the resilience layer, which consumes it.

Reasoning models stream their thinking before the answer, and tool-calling replies stream calls
instead of (or besides) text: those pieces are :class:`ReasoningDelta` and :class:`ToolCallDelta`,
events of their own beside :class:`TokenDelta`, so a consumer that only wants the answer keeps
matching on ``TokenDelta`` and never sees them. Every *piece* (content, reasoning or tool-call
fragment) takes the next ``index`` of one shared sequence: the bundled server gives each piece an
SSE id, whatever its kind, so a resume after piece N continues at N + 1 on every wire. In a stream
of content alone the index is still the content chunk's position.

All times are ``time.perf_counter()`` seconds: monotonic, comparable within one process, and
meaningless across processes (use them for intervals only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import StreamkitError

__all__ = [
    "Event",
    "Piece",
    "ReasoningDelta",
    "ReconnectDelay",
    "StreamEnd",
    "StreamError",
    "StreamRetry",
    "StreamStart",
    "TokenDelta",
    "ToolCallDelta",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as the server reported it (OpenAI's ``usage`` object).

    ``reasoning_tokens`` is ``completion_tokens_details.reasoning_tokens`` (part of
    ``completion_tokens``), 0 when the server did not say."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Usage:
        """Build from an OpenAI ``usage`` mapping; missing counts read as 0."""

        def count(value: object) -> int:
            return value if isinstance(value, int) else 0

        details = data.get("prompt_tokens_details")
        cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        prompt = count(data.get("prompt_tokens"))
        completion = count(data.get("completion_tokens"))
        total = count(data.get("total_tokens")) or prompt + completion
        out = data.get("completion_tokens_details")
        reasoning = count(out.get("reasoning_tokens")) if isinstance(out, dict) else 0
        return cls(prompt, completion, total, cached, reasoning)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The response headers arrived: the request was accepted and the stream is open.

    Attributes:
        sent_at: when the request was handed to the HTTP client.
        time: when the response headers arrived (time to first byte is ``time - sent_at``).
        model: the model asked for.
        request_id: the server's request id header, when it sends one.
        retries: how many earlier attempts of this request failed before it was accepted.
        endpoint: the name of the endpoint that accepted it, when a
            :class:`~streamkit.balance.LoadBalancer` chose one (None otherwise).
    """

    sent_at: float
    time: float
    model: str
    request_id: str | None = None
    retries: int = 0
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """One content chunk: ``text`` is what it added, ``index`` its 0-based position among the
    stream's content chunks, ``time`` its arrival. One chunk may carry several tokens.

    ``event_id`` is the server's id for the stream up to this chunk (the SSE ``id`` in force, a
    WebSocket ``seq``), once the server has given one in this attempt and ids are in use; None
    otherwise. The resilience layer resumes after the last kept chunk's id (``Last-Event-ID``).
    """

    text: str
    index: int
    time: float
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """One reasoning chunk: the model's thinking before (or between) its answer.

    Servers send it as ``delta.reasoning_content`` (DeepSeek, llama.cpp, older vLLM) or
    ``delta.reasoning`` (newer vLLM, Ollama, OpenRouter); both arrive as this event. ``index``,
    ``time`` and ``event_id`` mean what they mean on :class:`TokenDelta` (one shared index).
    """

    text: str
    index: int
    time: float
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One piece of a streamed tool call (``delta.tool_calls[i]``).

    Attributes:
        call_index: which call of the reply this piece belongs to (the wire's ``index``).
        id: the call's id (``call_…``), in the call's first piece; None in later ones.
        name: the function's name, in the call's first piece; None in later ones.
        arguments_piece: the next fragment of the call's JSON ``arguments`` (may be empty).
        index: the piece's position in the stream's shared sequence (see :class:`TokenDelta`).
        time: its arrival.
        event_id: the server's id, as on :class:`TokenDelta`.
    """

    call_index: int
    id: str | None
    name: str | None
    arguments_piece: str
    index: int
    time: float
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The server ended the stream: why (``finish_reason``), and its usage if it sent any."""

    finish_reason: str | None
    usage: Usage | None
    time: float


@dataclass(frozen=True, slots=True)
class ReconnectDelay:
    """The server set its reconnection delay (the SSE ``retry:`` field, WHATWG HTML §9.2).

    A transport yields it when the value changes (rarely more than once a stream); the
    resilience layer waits at least ``delay`` seconds before the next attempt, and does not pass
    the event on.
    """

    delay: float
    time: float


@dataclass(frozen=True, slots=True)
class StreamRetry:
    """An attempt failed with a retryable error; another follows after ``delay`` seconds.

    Attributes:
        error: why the attempt failed (its ``partial_text`` is what that attempt received).
        attempt: the 1-based number of the attempt that failed.
        delay: seconds until the next attempt (backoff with jitter, or the server's Retry-After).
        resume_after: the index of the last token kept, when the next attempt resumes after it;
            None when it starts over.
        time: when the failure was noticed.
        discarded: tokens received so far that the next attempt throws away because it starts
            over (0 when it resumes, or when nothing had arrived).
        max_attempts: the policy's limit on attempts in a row, for "retrying (2/5)"; None if
            unknown.
        failures: attempts in a row that failed without progress, this one included (an
            attempt that resumed and delivered new tokens starts the count again); the policy
            gives up when it reaches ``max_attempts``.
    """

    error: StreamkitError
    attempt: int
    delay: float
    resume_after: int | None
    time: float
    discarded: int = 0
    max_attempts: int | None = None
    failures: int = 1


@dataclass(frozen=True, slots=True)
class StreamError:
    """The stream failed or was stopped; ``error`` is typed and carries the partial text."""

    error: StreamkitError
    time: float


Piece = TokenDelta | ReasoningDelta | ToolCallDelta
"""A streamed piece of the reply, whatever its kind: each takes one index of the stream."""

Event = (
    StreamStart
    | TokenDelta
    | ReasoningDelta
    | ToolCallDelta
    | ReconnectDelay
    | StreamRetry
    | StreamEnd
    | StreamError
)
