"""What one chat stream produced: the text, how it ended, and its basic timings.

A :class:`StreamResult` is built by folding events into it (:meth:`StreamResult.apply`), so the same
object serves a stream that completed, one that failed half-way (its text is the partial text) and
one the user stopped. Timing definitions follow vLLM's ``bench serve``: time to first token counts
the first streamed piece of any kind (reasoning, content or a tool-call piece; role-only chunks do
not count), :attr:`StreamResult.ttft_answer` the first content chunk; end-to-end latency runs
from send to the last piece. Reasoning and tool calls are kept beside the text
(:attr:`StreamResult.reasoning`, :attr:`StreamResult.tool_calls`).

Left as a notebook cell's value, a result shows itself as a compact table with the start of its
text (``_repr_html_``, every value escaped: model text is untrusted) and, as text, one short line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal, Protocol

from .errors import ProtocolError, StreamCancelled, StreamkitError
from .events import (
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamRetry,
    StreamStart,
    TokenDelta,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "EndLog",
    "OutputTokensSource",
    "StreamResult",
    "StreamStatus",
    "ToolCall",
    "ToolCallArgumentsError",
    "close_log",
    "output_tokens_from",
]


class ToolCallArgumentsError(ProtocolError):
    """A tool call's joined ``arguments`` are not valid JSON (the model wrote bad JSON, or the
    stream lost a piece). Names the call; the raw text stays on :attr:`ToolCall.arguments`."""

    def __init__(self, call: ToolCall, cause: ValueError) -> None:
        super().__init__(
            f"tool call {call.index} ({call.id or 'no id'}, {call.name or 'no name'}): its "
            f"arguments are not valid JSON ({cause}): {call.arguments[:80]!r}"
        )
        self.call_id = call.id
        self.name = call.name


@dataclass(slots=True)
class ToolCall:
    """One tool call of a reply, joined from its streamed pieces.

    Attributes:
        index: the call's position in the reply (the wire's ``tool_calls[].index``).
        id: the call's id (``call_…``), if the server gave one.
        name: the function's name.
        arguments: the JSON arguments as text, every piece joined.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def parsed(self) -> Any:
        """The arguments decoded from JSON (``{}`` when the server sent none).

        Raises:
            ToolCallArgumentsError: the joined text is not valid JSON; it names the call.
        """
        if not self.arguments.strip():
            return {}
        try:
            return json.loads(self.arguments)
        except ValueError as exc:
            raise ToolCallArgumentsError(self, exc) from exc

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the call, its raw arguments, and either ``parsed`` or ``error``."""
        out: dict[str, object] = {
            "index": self.index,
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
        }
        try:
            out["parsed"] = self.parsed()
        except ToolCallArgumentsError as exc:
            out["error"] = exc.message
        return out


StreamStatus = Literal["pending", "streaming", "completed", "stopped", "failed"]


class EndLog(Protocol):
    """What :func:`close_log` fills in: a log of one stream (a result, a metrics recorder)."""

    finish_reason: str | None
    usage: Usage | None
    error: StreamkitError | None
    ended_at: float | None
    status: StreamStatus


def close_log(log: EndLog, event: StreamEnd | StreamError) -> None:
    """Close ``log`` with how its stream ended: the one rule for :class:`StreamResult` and the
    metrics alike. An end completes it with its finish reason and usage; an error fails it, or
    stops it when the user cancelled (:class:`~streamkit.errors.StreamCancelled`)."""
    log.ended_at = event.time
    if isinstance(event, StreamEnd):
        log.finish_reason = event.finish_reason
        log.usage = event.usage
        log.status = "completed"
    else:
        log.error = event.error
        log.status = "stopped" if isinstance(event.error, StreamCancelled) else "failed"


OutputTokensSource = Literal["usage", "counted"]
"""Where an output-token count came from: the server's usage chunk, or content chunks counted."""


def output_tokens_from(usage: Usage | None, counted: int) -> tuple[int, OutputTokensSource]:
    """N_out and its source: the one rule, for :class:`StreamResult` and the metrics alike.

    ``usage.completion_tokens`` whenever the server sent usage, else ``counted`` (the pieces of
    the kept reply: content, reasoning and tool-call chunks, as completion tokens count them).
    Usage stands after a retry too: after a resume the bundled server reports the whole logical
    stream, not the last attempt (docs/protocol.md, "SSE ids and resume"; WebSocket ``end``
    likewise), and after a restart the kept reply *is* the last attempt.

    Args:
        usage: the usage the server reported, if any.
        counted: the content chunks received (kept, after a restart).
    """
    if usage is not None:
        return usage.completion_tokens, "usage"
    return counted, "counted"


# How much text the one-line repr and the HTML table show before cutting it with "…".
_REPR_TEXT_CHARS = 24
_HTML_TEXT_CHARS = 1000


@dataclass(repr=False)
class StreamResult:
    """The outcome of one chat stream, complete or partial.

    Attributes:
        model: the model asked for.
        text: every content delta received, joined (the partial text if the stream failed).
        status: ``completed``, ``stopped`` (by the user), ``failed``, or still ``streaming``.
        finish_reason: why the server stopped (``stop``, ``length``), if it said.
        usage: the usage chunk, if the server sent one.
        error: the typed error when ``status`` is ``failed`` or ``stopped``.
        chunks: number of content chunks received (kept, after a restart).
        reasoning_chunks: reasoning chunks received (kept).
        tool_call_chunks: tool-call pieces received (kept).
        tool_calls: the reply's tool calls, by index, joined from their pieces.
        first_answer_at: the first content chunk's arrival (``first_token_at`` is the first
            piece of any kind).
        retries: attempts that failed and were retried.
        discarded_tokens: tokens thrown away because a retry started over (no event ids).
        sent_at / opened_at / first_token_at / last_token_at / ended_at: ``perf_counter`` times.
    """

    model: str = ""
    status: StreamStatus = "pending"
    finish_reason: str | None = None
    usage: Usage | None = None
    error: StreamkitError | None = None
    chunks: int = 0
    sent_at: float | None = None
    opened_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None
    request_id: str | None = None
    retries: int = 0
    discarded_tokens: int = 0
    reasoning_chunks: int = 0
    tool_call_chunks: int = 0
    first_answer_at: float | None = None
    tool_calls: list[ToolCall] = field(default_factory=list, repr=False)
    token_times: list[float] = field(default_factory=list, repr=False)
    _parts: list[str] = field(default_factory=list, repr=False)
    _reasoning: list[str] = field(default_factory=list, repr=False)

    def apply(self, event: Event) -> None:
        """Fold one event into the result."""
        if isinstance(event, TokenDelta):
            if self.first_token_at is None:
                self.first_token_at = event.time
            if self.first_answer_at is None:
                self.first_answer_at = event.time
            self.last_token_at = event.time
            self.token_times.append(event.time)
            self.chunks += 1
            self._parts.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._piece(event.time)
            self.reasoning_chunks += 1
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._piece(event.time)
            self.tool_call_chunks += 1
            self._tool_call(event)
        elif isinstance(event, StreamStart):
            if self.sent_at is None:  # a retry's new attempt keeps the first send as time zero
                self.sent_at = event.sent_at
                self.opened_at = event.time
            self.model = event.model or self.model
            self.request_id = event.request_id
            self.retries += event.retries  # attempts the SDK retried before this one was accepted
        elif isinstance(event, StreamRetry):
            self.retries += 1
            self.status = "streaming"
            if event.discarded:
                # The next attempt starts over: what arrived so far is void, and the kept text,
                # its chunk count and its timings describe the attempt that is kept.
                self.discarded_tokens += event.discarded
                self._parts.clear()
                self._reasoning.clear()
                self.tool_calls.clear()
                self.token_times.clear()
                self.chunks = self.reasoning_chunks = self.tool_call_chunks = 0
                self.first_token_at = self.last_token_at = self.first_answer_at = None
        elif isinstance(event, StreamEnd | StreamError):
            close_log(self, event)

    def _piece(self, time: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = time
        self.last_token_at = time
        self.token_times.append(time)

    def _tool_call(self, event: ToolCallDelta) -> None:
        calls = self.tool_calls
        call = next((c for c in reversed(calls) if c.index == event.call_index), None)
        if call is None:
            call = ToolCall(event.call_index)
            calls.append(call)
            calls.sort(key=lambda c: c.index)
        if event.id and call.id is None:
            call.id = event.id
        if event.name and call.name is None:
            call.name = event.name
        call.arguments += event.arguments_piece

    @property
    def reasoning(self) -> str:
        """Every reasoning delta received so far, joined ("" from a model that does not reason)."""
        if len(self._reasoning) > 1:
            self._reasoning[:] = ["".join(self._reasoning)]
        return self._reasoning[0] if self._reasoning else ""

    @property
    def text(self) -> str:
        """Every content delta received so far, joined (the partial text after a failure)."""
        if len(self._parts) > 1:
            # Join once and keep the join, so repeated reads stay cheap while appends stay O(1).
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def ok(self) -> bool:
        """True when the server finished the stream normally."""
        return self.status == "completed"

    @property
    def ttft(self) -> float | None:
        """Seconds from send to the first piece of any kind (reasoning, content or tool call),
        as ``vllm bench serve`` counts it; the same as :attr:`ttft_answer` without reasoning."""
        if self.sent_at is None or self.first_token_at is None:
            return None
        return self.first_token_at - self.sent_at

    @property
    def ttft_answer(self) -> float | None:
        """Seconds from send to the first content chunk: when the answer itself starts."""
        if self.sent_at is None or self.first_answer_at is None:
            return None
        return self.first_answer_at - self.sent_at

    @property
    def reasoning_tokens(self) -> int:
        """Reasoning tokens: the usage's ``completion_tokens_details.reasoning_tokens`` when the
        server reported some, else the reasoning chunks counted."""
        if self.usage is not None and self.usage.reasoning_tokens:
            return self.usage.reasoning_tokens
        return self.reasoning_chunks

    @property
    def answer_tokens(self) -> int:
        """Output tokens that are not reasoning (the answer and any tool calls)."""
        return max(0, self.output_tokens - self.reasoning_tokens)

    @property
    def ttfb(self) -> float | None:
        """Seconds from send to the response headers (time to first byte)."""
        if self.sent_at is None or self.opened_at is None:
            return None
        return self.opened_at - self.sent_at

    @property
    def e2e(self) -> float | None:
        """Seconds from send to the last piece (of any kind)."""
        if self.sent_at is None or self.last_token_at is None:
            return None
        return self.last_token_at - self.sent_at

    @property
    def itl(self) -> list[float]:
        """Every gap in seconds between consecutive pieces (inter-token latency)."""
        return [b - a for a, b in pairwise(self.token_times)]

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (E2E − TTFT) / (N_out − 1); None for N_out < 2."""
        if self.e2e is None or self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    @property
    def output_tokens_source(self) -> OutputTokensSource:
        """Where :attr:`output_tokens` came from: ``usage`` or ``counted`` (chunks); see
        :func:`output_tokens_from`, the rule the metrics share."""
        return output_tokens_from(self.usage, self.pieces)[1]

    def to_dict(self) -> dict[str, object]:
        """The request's metrics as JSON-ready values (seconds; None where undefined)."""
        return {
            "model": self.model,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "ttfb": self.ttfb,
            "ttft": self.ttft,
            "ttft_answer": self.ttft_answer,
            "tpot": self.tpot,
            "itl": self.itl,
            "e2e": self.e2e,
            "output_tokens": self.output_tokens,
            "output_tokens_source": self.output_tokens_source,
            "prompt_tokens": self.usage.prompt_tokens if self.usage else None,
            "chunks": self.chunks,
            "reasoning_tokens": self.reasoning_tokens,
            "answer_tokens": self.answer_tokens,
            "reasoning_chunks": self.reasoning_chunks,
            "tool_call_chunks": self.tool_call_chunks,
            "reasoning": self.reasoning,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
            "tokens_per_second": self.tokens_per_second,
            "retries": self.retries,
            "discarded_tokens": self.discarded_tokens,
            "error": f"{self.error.kind}: {self.error.message}" if self.error else None,
        }

    @property
    def output_tokens(self) -> int:
        """Completion tokens: from the usage chunk when present (after a resume too), else the
        chunks counted (:func:`output_tokens_from`)."""
        return output_tokens_from(self.usage, self.pieces)[0]

    @property
    def pieces(self) -> int:
        """Chunks of every kind received (kept): content, reasoning and tool-call pieces."""
        return self.chunks + self.reasoning_chunks + self.tool_call_chunks

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens per second after the first token (decode speed), vLLM-style."""
        if self.first_token_at is None or self.last_token_at is None or self.output_tokens < 2:
            return None
        span = self.last_token_at - self.first_token_at
        return (self.output_tokens - 1) / span if span > 0 else None

    def __repr__(self) -> str:
        """One line, e.g. ``<StreamResult completed sim-small · 140 tokens · TTFT 85 ms · "Str…">``.

        Short on purpose (the dataclass default printed every field): :meth:`summary` has the
        rest, :meth:`to_dict` every metric.
        """
        from ._html import one_line

        head = f"{self.status} {self.model}" if self.model else self.status
        parts = [head, f"{self.output_tokens} tokens"]
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.error is not None and self.status != "completed":
            parts.append(self.error.kind)
        if self.text:
            parts.append(f'"{one_line(self.text, _REPR_TEXT_CHARS)}"')
        return f"<StreamResult {' · '.join(parts)}>"

    def _repr_html_(self) -> str:
        """A compact table of the metrics and the start of the text, every value escaped."""
        from . import _html
        from .cost.pricing import cost_if_priced

        rows: list[tuple[str, object]] = [("status", self.status), ("model", self.model or None)]
        if self.error is not None and self.status != "completed":
            rows.append(("error", f"{self.error.kind}: {self.error.message}"))
        speed = self.tokens_per_second
        source = "from usage" if self.output_tokens_source == "usage" else "chunks counted"
        rows += [
            ("TTFT", _html.ms(self.ttft)),
            ("TPOT", _html.ms(self.tpot, 2)),
            ("tokens/s", None if speed is None else f"{speed:.1f}"),
            ("E2E", _html.ms(self.e2e)),
            ("output tokens", f"{self.output_tokens} ({source})"),
            ("finish reason", self.finish_reason),
        ]
        retries = str(self.retries)
        if self.discarded_tokens:
            retries += f" ({self.discarded_tokens} tokens discarded)"
        rows.append(("retries", retries))
        usage = self.usage
        if usage is None:
            rows.append(("usage", "not reported"))
        else:
            cached = f" ({usage.cached_tokens} cached)" if usage.cached_tokens else ""
            rows.append(
                ("usage", f"{usage.prompt_tokens} in{cached} + {usage.completion_tokens} out")
            )
        cost = cost_if_priced(usage, self.model)
        if cost is not None:
            rows.append(("cost", f"{_html.usd(cost.total_usd)} ({cost.source} prices)"))
        table = _html.key_value_table("StreamResult", rows)
        text = _html.text_block(self.text, _HTML_TEXT_CHARS) if self.text else ""
        return _html.wrap(table, text)

    def summary(self) -> str:
        """One line for humans: status, TTFT, speed, usage, finish reason."""
        parts: list[str] = [self.status]
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tok/s")
        if self.usage is not None:
            parts.append(
                f"usage {self.usage.prompt_tokens} in + {self.usage.completion_tokens} out"
            )
        else:
            parts.append(f"{self.chunks} chunks (no usage reported)")
        if self.reasoning_chunks:
            parts.append(f"{self.reasoning_tokens} reasoning tokens")
        if self.tool_calls:
            n = len(self.tool_calls)
            parts.append(f"{n} tool call{'' if n == 1 else 's'}")
        if self.finish_reason:
            parts.append(f"finish {self.finish_reason}")
        if self.retries:
            parts.append(f"{self.retries} {'retry' if self.retries == 1 else 'retries'}")
        if self.discarded_tokens:
            parts.append(f"{self.discarded_tokens} tokens discarded")
        if self.error is not None and self.status != "completed":
            parts.append(f"{self.error.kind}: {self.error.message}")
        return " · ".join(parts)
