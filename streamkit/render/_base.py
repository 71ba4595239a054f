"""The view protocol and the buffered base every streamkit view shares.

A runner drives a view in three steps, on one thread (the event loop's, when there is one)::

    view.start(model=..., prompt=..., on_stop=...)  # before the request is sent
    view.on_event(event)                            # every event in order; cheap, per token
    view.finish(result)                             # always, also after a failure or a stop

A :class:`~streamkit.events.StreamRetry` (an attempt failed and another follows) flushes what is
waiting and calls the ``_on_retry`` hook, so each view can say what is happening ("connection lost
after 37 tokens — resuming in 1.2 s (2/5)", the line :func:`retry_line` writes). When the retry
starts over, the text shown so far is void: the base forgets it before the hook runs.

:class:`BufferedView` throttles the *screen*, never the data: tokens go through a
:class:`~streamkit.batching.TokenBuffer`, a flush happens after ``max_tokens`` tokens or
``max_delay`` seconds (one loop timer per batch fires the time-based flush), and everything still
waiting is flushed at the end, so every token is rendered exactly once and in order.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..batching import TokenBuffer
from ..errors import (
    APIStatusError,
    ConnectError,
    FirstTokenTimeout,
    IdleTimeout,
    ProtocolError,
    ReadTimeout,
    StreamInterrupted,
)
from ..events import (
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamRetry,
    TokenDelta,
    ToolCallDelta,
)
from ..result import StreamResult

__all__ = ["BufferedView", "StopCallback", "View", "failure_line", "joined", "retry_line"]

StopCallback = Callable[[], object]
"""What a view calls when the user asks to stop (e.g. ``task.cancel``); its return is ignored."""

# A timer may fire a hair before the deadline on the buffer's clock (the loop runs on
# time.monotonic, views on time.perf_counter); within this margin it flushes instead of rearming.
_TIMER_SLACK = 0.001


@runtime_checkable
class View(Protocol):
    """Anything that can show one stream at a time, as it arrives."""

    def start(
        self, *, model: str = "", prompt: str = "", on_stop: StopCallback | None = None
    ) -> None:
        """Reset and show an empty stream; ``on_stop`` is what a Stop control calls."""

    def on_event(self, event: Event) -> None:
        """Take one event; called for every token, so it must be cheap."""

    def finish(self, result: StreamResult) -> None:
        """Show the final state (text flushed, status, summary); called once per stream."""


def joined(parts: list[str]) -> str:
    """The text of ``parts``, joined in place: reads stay cheap and appends stay O(1).

    The list is left holding the one joined string, so the next read joins only what was
    appended since.
    """
    if len(parts) > 1:
        parts[:] = ["".join(parts)]
    return parts[0] if parts else ""


class BufferedView(ABC):
    """Batches tokens before rendering them; subclasses only say how to show text and status.

    Subclasses implement :meth:`_render` and may override :meth:`_on_start` and
    :meth:`_on_finish`. Rendering happens on the thread that calls :meth:`on_event`; the
    time-based flush is a ``call_later`` timer on the running asyncio loop, and without a running
    loop (plain synchronous code) nothing could fire a timer, so every token is rendered at once.

    Args:
        max_tokens: render after this many tokens are waiting.
        max_delay: render once the first waiting token has waited this long (seconds).
        clock: the clock for flush times; ``time.perf_counter`` like the events.

    Attributes:
        buffer: the :class:`~streamkit.batching.TokenBuffer`; change its ``max_tokens`` and
            ``max_delay`` at any time, also while a stream runs.
        flush_count: how many times text was rendered in the current stream.
        flush_log: ``(flush_time, characters_shown_so_far)`` for every flush of the current stream,
            on ``clock`` (render lag = flush time minus a token's arrival time).
        model: the model of the current stream.
        prompt: the prompt of the current stream.
        retries: retries seen in the current stream.
        streaming: True between :meth:`start` and :meth:`finish`.
    """

    def __init__(
        self,
        *,
        max_tokens: int = 4,
        max_delay: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.buffer = TokenBuffer(max_tokens, max_delay)
        self._clock = clock
        self._parts: list[str] = []
        self._chars = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._on_stop: StopCallback | None = None
        self._stop_requested = False
        self.flush_count = 0
        self.flush_log: list[tuple[float, int]] = []
        self.retries = 0
        self.model = ""
        self.prompt = ""
        self.streaming = False
        self._on_init()

    # -- what subclasses provide -------------------------------------------------------------

    def _on_init(self) -> None:  # noqa: B027  (an optional hook, empty on purpose)
        """Make what the view shows (its widgets); called once, at the end of ``__init__``.

        A subclass that only builds its display needs no ``__init__`` of its own, so the
        buffer settings and their defaults are declared once, here.
        """

    @abstractmethod
    def _render(self, new_text: str) -> None:
        """Show ``new_text`` after what is already shown (``self.text`` already includes it)."""

    def _on_start(self) -> None:  # noqa: B027  (an optional hook, empty on purpose)
        """Show an empty stream (``self.model``, ``self.prompt`` are set)."""

    def _on_finish(self, result: StreamResult) -> None:  # noqa: B027  (optional hook)
        """Show how the stream ended; all text is rendered before this is called."""

    def _on_piece(self, event: ReasoningDelta | ToolCallDelta) -> None:  # noqa: B027
        """Show a reasoning or tool-call piece (an optional hook: by default the view shows the
        answer only). Never batched: such pieces come before the answer, or instead of it."""

    def _on_retry(self, event: StreamRetry) -> None:  # noqa: B027  (optional hook)
        """Show that an attempt failed and another follows (:func:`retry_line` says it).

        Everything received before is rendered; after a restart (``event.discarded``),
        ``self.text`` is already empty and the view should clear what it showed.
        """

    # -- the View protocol -------------------------------------------------------------------

    def start(
        self, *, model: str = "", prompt: str = "", on_stop: StopCallback | None = None
    ) -> None:
        """Forget any previous stream and show an empty one.

        Args:
            model: the model asked for, shown in headers.
            prompt: the prompt sent (kept for views that show it).
            on_stop: called when the user asks to stop (a Stop button); None disables stopping.
        """
        self._cancel_timer()
        self.buffer.flush()
        self._parts = []
        self._chars = 0
        self.flush_count = 0
        self.flush_log = []
        self.retries = 0
        self.model = model
        self.prompt = prompt
        self._on_stop = on_stop
        self._stop_requested = False
        self.streaming = True
        self._on_start()

    def on_event(self, event: Event) -> None:
        """Take one event: buffer a token, or flush everything when the stream ends.

        Args:
            event: the next event of the stream.
        """
        if isinstance(event, TokenDelta):
            now = self._clock()
            text = self.buffer.add(event.text, now)
            if text is not None:
                # The count (or an overdue deadline) flushed first: the timer has nothing to do.
                self._cancel_timer()
                self._show(text, now)
            elif self._timer is None or self._timer_deadline != self.buffer.deadline:
                # First waiting token, or max_delay changed since the timer was armed.
                self._arm_timer(now)
        elif isinstance(event, ReasoningDelta | ToolCallDelta):
            self._on_piece(event)
        elif isinstance(event, (StreamEnd, StreamError)):
            self.flush()
        elif isinstance(event, StreamRetry):
            self.flush()
            self.retries += 1
            if event.discarded:
                self._parts = []
                self._chars = 0
            self._on_retry(event)

    def finish(self, result: StreamResult) -> None:
        """Render whatever still waits, then show the outcome; the view is idle afterwards.

        If ``result`` holds text this view never received as events (the runner built the result
        from events the view missed), the missing tail is rendered too, so the screen ends with
        the whole transcript.

        Args:
            result: the stream's outcome, complete, failed or stopped.
        """
        self.flush()
        shown = self.text
        final = result.text
        if len(final) > len(shown) and final.startswith(shown):
            self._show(final[len(shown) :], self._clock())
        self.streaming = False
        self._on_finish(result)
        self._on_stop = None

    # -- public methods ----------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The text rendered so far in the current stream."""
        return joined(self._parts)

    @property
    def can_stop(self) -> bool:
        """Whether a stream is running, someone can stop it, and nobody asked yet."""
        return self.streaming and self._on_stop is not None and not self._stop_requested

    def stop(self) -> None:
        """Ask the runner to stop the current stream: calls ``on_stop`` at most once per stream.

        No-op when idle or already asked. The view keeps streaming until :meth:`finish` arrives:
        the runner decides when the stream has really ended, and text arriving meanwhile is shown.
        """
        if self.can_stop and self._on_stop is not None:
            self._stop_requested = True
            self._on_stop()

    def flush(self) -> None:
        """Render everything waiting in the buffer now (no-op when nothing waits)."""
        self._cancel_timer()
        if self.buffer.pending:
            now = self._clock()
            self._show(self.buffer.flush(now), now)

    # -- internals ---------------------------------------------------------------------------

    def _show(self, text: str, now: float) -> None:
        self._parts.append(text)
        self._chars += len(text)
        self.flush_count += 1
        self.flush_log.append((now, self._chars))
        self._render(text)

    def _arm_timer(self, now: float) -> None:
        self._cancel_timer()
        deadline = self.buffer.deadline
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Driven from plain synchronous code: no loop can fire a deadline later, and text
            # must not sit unseen until the next token, so render it right away.
            self._show(self.buffer.flush(now), now)
            return
        # call_later, not call_at: the loop's clock (time.monotonic) need not be the buffer's.
        self._timer = loop.call_later(max(0.0, deadline - now), self._on_timer)
        self._timer_deadline = deadline

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_deadline = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        deadline = self.buffer.deadline
        if deadline is None:
            return
        now = self._clock()
        if deadline - now > _TIMER_SLACK:
            # max_delay was raised after the timer was armed: wait for the new deadline.
            self._arm_timer(now)
        else:
            self._show(self.buffer.flush(now), now)


def failure_line(result: StreamResult) -> str | None:
    """``[stopped]`` or ``[failed: <Kind>: <message>]`` for a stream that did not complete.

    Plain text on one line, the same in every view, so logs and saved notebooks read alike; None
    for a completed stream.
    """
    if result.status == "stopped":
        return "[stopped]"
    if result.status == "failed":
        if result.error is None:
            return "[failed]"
        # One line, whatever the server put in its message.
        message = " ".join(result.error.message.split())
        return f"[failed: {result.error.kind}: {message}]"
    return None


def _cause(event: StreamRetry) -> str:
    error = event.error
    if isinstance(error, APIStatusError):
        return f"{error.status_code} {error.kind}"
    tokens = event.discarded or (event.resume_after + 1 if event.resume_after is not None else 0)
    after = f" after {tokens} tokens" if tokens else ""
    if isinstance(error, FirstTokenTimeout):
        return "no first token in time"
    if isinstance(error, IdleTimeout):
        return f"stream stalled{after}"
    if isinstance(error, ConnectError):
        return "cannot connect"
    if isinstance(error, StreamInterrupted | ReadTimeout):
        return f"connection lost{after}"
    if isinstance(error, ProtocolError):
        return f"malformed data{after}"
    return f"{error.kind}{after}"


def retry_line(event: StreamRetry) -> str:
    """What a retry means for the user, on one line, the same in every view.

    ``connection lost after 37 tokens — resuming in 1.2 s (2/5)``; ``429 RateLimitError —
    retrying in 2.0 s (2/5)``; ``connection lost after 37 tokens — restarting in 0.4 s (2/5):
    37 tokens discarded``. The ``(2/5)`` is the next attempt of the current streak without
    progress, and the policy's limit on it.
    """
    if event.resume_after is not None:
        action = "resuming"
    elif event.discarded:
        action = "restarting"
    else:
        action = "retrying"
    count = f"{event.failures + 1}/{event.max_attempts}" if event.max_attempts else ""
    line = f"{_cause(event)} — {action} in {event.delay:.1f} s" + (f" ({count})" if count else "")
    if event.discarded:
        line += f": {event.discarded} tokens discarded"
    return line
