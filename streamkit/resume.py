"""The resilience layer: retry a failed stream, resuming where it broke, so a drop is a non-event.

:func:`resilient_events` wraps any *attempt factory* (a function that opens one attempt of a
stream on some transport and yields its events) and turns a sequence of failing attempts into one
clean stream of events:

- **Resume** where the server numbers its tokens (the bundled server's SSE ``id:`` lines and
  WebSocket ``seq``; any SSE server with ids): the next attempt asks to continue after the last
  token received (``Last-Event-ID`` / ``resume_after``), and token indices carry on. Every token
  is checked against the index it should have: a token already kept is skipped (it must repeat the
  kept text exactly, or the stream cannot be stitched and a
  :class:`~streamkit.errors.ProtocolError` is raised); a token past the next index means the
  server skipped some, which is also a ``ProtocolError``. Text is never duplicated and never
  dropped silently. Reasoning and tool-call pieces share the index space with content tokens
  (the server numbers every piece), so they are kept, skipped and checked exactly as text is.
- **Restart or raise** where the server gives no ids (a real OpenAI endpoint): with
  ``on_interrupt="raise"`` (the default) a failure after the first token is raised as it is, with
  the partial text; with ``"restart"`` the next attempt starts over and its
  :class:`~streamkit.events.StreamRetry` says how many tokens it ``discarded``.
- **Timeouts** that a read timeout cannot express: a *first-token* timeout (send to first content
  token: a model that never starts) and an *idle* timeout (the longest gap between chunks: a
  stream that stalls). One watchdog timer per attempt checks a deadline that moves with every
  read; it wakes at most once per timeout period, never once per token (see :class:`_Watchdog`).

Between attempts it emits a :class:`~streamkit.events.StreamRetry` (cause, attempt, delay,
``resume_after``) and sleeps the :class:`~streamkit.retry.RetryPolicy`'s delay. The clock and the
sleep are injectable, so the loop is tested without waiting.

**Moving** to another place (an endpoint of a :class:`~streamkit.balance.LoadBalancer`) is a
policy of this same loop, not a loop of its own: a ``failover`` callback is asked after every failed
attempt where the next one should go. It answers with a :class:`Move` (another attempt factory,
and whether that place regenerates the same stream, so the next attempt resumes there after the
last kept token with the same ``Last-Event-ID``) or None (the loop retries where it was, as
above). A move takes no backoff (another server is not the one that just failed) and counts in
the streak; the failover keeps its own limit on how often one stream moves. A move that starts
over is only taken with ``on_interrupt="restart"`` once text was shown, and is a
:class:`~streamkit.events.StreamRetry` with ``discarded`` set, as a restart in place is.

The policy's limits count a *streak*: failed attempts in a row without progress, and the time
since the streak began. An attempt that resumed and delivered new tokens made progress and starts
a new streak, so a long reply survives any number of separate drops (a five-minute stream that
drops every minute is fine), while a server that fails again and again without sending anything
new is given up on after ``max_attempts``. Progress always ends: each such attempt keeps at least
one more token of a finite reply. A restart discards its tokens, so it never counts as progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from .errors import FirstTokenTimeout, IdleTimeout, ProtocolError, ReadTimeout, StreamkitError
from .events import (
    Event,
    Piece,
    ReasoningDelta,
    ReconnectDelay,
    StreamEnd,
    StreamRetry,
    TokenDelta,
    ToolCallDelta,
)
from .retry import RetryPolicy, Streak

__all__ = ["Attempt", "AttemptFactory", "Failover", "Move", "OnInterrupt", "resilient_events"]

OnInterrupt = Literal["raise", "restart"]
"""What to do when a stream without event ids fails after its first token."""

_NO_RETRY = RetryPolicy.none()
# The watchdog may wake a hair early (the loop's clock is time.monotonic, ours perf_counter).
_SLACK = 0.001


@dataclass(slots=True)
class Attempt:
    """One attempt of a stream: where the transport is asked to start.

    The resilience layer fills it; the transport reads it as a
    :class:`~streamkit.transports._attempt.ResumeFrom` and never writes to it. What the transport
    learns comes back as fields of its events: a token's server id as
    :attr:`~streamkit.events.TokenDelta.event_id`, the server's ``retry:`` as a
    :class:`~streamkit.events.ReconnectDelay`. ``event_id`` and ``reconnect_delay`` remain for
    an attempt factory of your own that cannot put them on its events: the loop reads them when
    the events do not carry them.

    Attributes:
        number: 1 for the first attempt, 2 for the first retry, …
        key: the ``attempt_key`` naming the logical request across attempts, if one is sent.
        resume_after: the index of the last token kept: continue after it (WebSocket
            ``resume_after``); None to start from the beginning.
        last_event_id: the SSE id of the last token kept (send it as ``Last-Event-ID``); None to
            start from the beginning.
        use_ids: False makes the transport ignore the server's ids, as if it sent none (what a
            real OpenAI endpoint does); the stream can then only be restarted.
        event_id: the server's id of the last token yielded, for a factory whose tokens do not
            carry ``event_id``; None while the server has given none.
        reconnect_delay: the server's SSE ``retry:`` field, in seconds, for a factory that does
            not yield a :class:`~streamkit.events.ReconnectDelay`.
    """

    number: int
    key: str | None = None
    resume_after: int | None = None
    last_event_id: str | None = None
    use_ids: bool = True
    event_id: str | None = None
    reconnect_delay: float | None = None

    @property
    def first_index(self) -> int:
        """The index the attempt's first token should have (where a local count starts)."""
        return 0 if self.resume_after is None else self.resume_after + 1


AttemptFactory = Callable[[Attempt], AsyncIterator[Event]]
"""Opens one attempt and yields its events: StreamStart, TokenDelta…, StreamEnd, or raises a
typed :class:`~streamkit.errors.StreamkitError` (closing the iterator closes the connection)."""


@dataclass(frozen=True, slots=True)
class Move:
    """Where a failed stream's next attempt goes instead of the place that failed.

    Attributes:
        factory: opens the attempts at the new place (e.g. another endpoint's transport).
        resume: True when the new place regenerates the same stream for the same request (a
            replica with the same model and deterministic decoding): the next attempt continues
            after the last kept token. False starts over there; the tokens kept so far are
            discarded, and counted in the :class:`~streamkit.events.StreamRetry`.
    """

    factory: AttemptFactory
    resume: bool


class Failover(Protocol):
    """Asked after every failed attempt where the next one goes (see :func:`resilient_events`)."""

    def __call__(
        self,
        error: StreamkitError,
        attempt: Attempt,
        *,
        tokens: int,
        can_resume: bool,
        can_restart: bool,
    ) -> Move | None:
        """Choose the next attempt's place.

        Args:
            error: why ``attempt`` failed.
            attempt: the attempt that failed.
            tokens: tokens kept so far (0: nothing shown, so any place may start afresh).
            can_resume: the stream can be continued after its last kept token (the server
                numbered its tokens, and ``resume`` is on), by a place that regenerates it.
            can_restart: shown text may be discarded to start over (``on_interrupt="restart"``).

        Returns:
            A :class:`Move`, or None to retry where the stream was (under the retry policy).
        """
        ...


async def resilient_events(
    factory: AttemptFactory,
    *,
    policy: RetryPolicy | None = None,
    on_interrupt: OnInterrupt = "raise",
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    resume: bool = True,
    key: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    failover: Failover | None = None,
) -> AsyncIterator[Event]:
    """Yield one stream's events across as many attempts as ``policy`` allows.

    Args:
        factory: opens one attempt (see :class:`Attempt`).
        policy: when to retry and how long to wait; None never retries.
        on_interrupt: when a stream without ids fails after its first token: ``"raise"`` the
            error with the partial text, or ``"restart"`` from the beginning.
        first_token_timeout: seconds from sending an attempt to its first content token.
        idle_timeout: the longest gap between chunks, in seconds (also before the first token
            when ``first_token_timeout`` is None).
        resume: False ignores the server's ids (forces the no-id path: restart or raise).
        key: the attempt key, passed to every attempt.
        clock: the clock for elapsed time and timeouts (``time.perf_counter``).
        sleep: how to wait between attempts (``asyncio.sleep``).
        failover: asked after each failed attempt whether the next goes elsewhere (a
            :class:`Move`, taken at once, outside the policy's backoff) or stays (None).

    Raises:
        StreamkitError: the last attempt's error, once no retry is left or allowed; its
            ``partial_text`` is all the text kept across attempts.
    """
    policy = policy or _NO_RETRY
    streak = Streak(policy, clock)  # failed attempts in a row without progress, and since when
    # What every kept piece said (a content token's text, or a key for reasoning and tool-call
    # pieces); its length is the next index expected.
    kept: list[object] = []
    last_id: str | None = None  # the server's id of the last kept token, if it gives ids
    number = 1
    resume_after: int | None = None
    timed = first_token_timeout is not None or idle_timeout is not None
    while True:
        attempt = Attempt(
            number,
            key,
            resume_after,
            last_id if resume_after is not None else None,
            resume,
        )
        kept_before = len(kept)
        reconnect: float | None = None  # the server's retry: in this attempt
        stream = factory(attempt)
        if timed:
            stream = _timed(stream, _Watchdog(first_token_timeout, idle_timeout, len(kept), clock))
        try:
            try:
                async for event in stream:
                    kind = type(event)
                    if kind is TokenDelta or kind is ReasoningDelta or kind is ToolCallDelta:
                        assert isinstance(event, TokenDelta | ReasoningDelta | ToolCallDelta)
                        index = event.index
                        said = event.text if type(event) is TokenDelta else _key(event)
                        if index != len(kept):
                            if 0 <= index < len(kept) and kept[index] == said:
                                continue  # a piece already kept, repeated the same
                            raise _mismatch(event, kept, attempt)
                        kept.append(said)
                        event_id = event.event_id
                        last_id = event_id if event_id is not None else attempt.event_id
                        yield event
                    elif type(event) is ReconnectDelay:
                        reconnect = event.delay  # for this loop only: not passed on
                    else:
                        yield event
                        if type(event) is StreamEnd:
                            return
            finally:
                await stream.aclose()  # type: ignore[attr-defined]  # an async generator
        except StreamkitError as exc:
            error = exc
        else:
            return  # the transport ended without an end event; it raises when that is wrong

        can_resume = resume and last_id is not None
        can_restart = on_interrupt == "restart"
        move = None
        if failover is not None:
            move = failover(
                error,
                attempt,
                tokens=len(kept),
                can_resume=can_resume,
                can_restart=can_restart,
            )
            if move is not None and kept and not ((move.resume and can_resume) or can_restart):
                move = None  # it would throw shown text away, which on_interrupt forbids
        if move is None and kept and not can_resume and not can_restart:
            raise _with_text(error, kept)
        if can_resume and len(kept) > kept_before:
            streak.restart()  # progress: a new streak begins with this failure
        failures = streak.fail()
        if move is not None:
            factory = move.factory
            wait: float | None = 0.0  # another place: nothing to wait for
            keep = can_resume and move.resume
        else:
            if reconnect is None:
                reconnect = attempt.reconnect_delay
            wait = streak.next_delay(error, retry_after=reconnect)
            keep = can_resume
        if wait is None:
            raise _with_text(error, kept)
        discarded = 0
        if kept and keep:
            resume_after = len(kept) - 1
        else:
            discarded = len(kept)
            kept.clear()
            last_id = resume_after = None
        yield StreamRetry(
            error, number, wait, resume_after, clock(), discarded, policy.max_attempts, failures
        )
        await sleep(wait)
        number += 1


def _text(kept: list[object]) -> str:
    """The content text among the kept pieces (reasoning and tool calls are keyed tuples)."""
    return "".join(said for said in kept if type(said) is str)


def _key(event: Piece) -> object:
    """What a reasoning or tool-call piece said, comparable with a repeat of it."""
    if type(event) is ReasoningDelta:
        return ("reasoning", event.text)
    assert isinstance(event, ToolCallDelta)
    return ("tool_call", event.call_index, event.id, event.name, event.arguments_piece)


def _with_text(error: StreamkitError, kept: list[object]) -> StreamkitError:
    # The transport knows only its own attempt's text; the user kept everything before it too.
    error.partial_text = _text(kept)
    return error


def _mismatch(event: Piece, kept: list[object], attempt: Attempt) -> ProtocolError:
    expected = len(kept)
    where = f"attempt {attempt.number}" + (
        f", resumed after token {attempt.resume_after}" if attempt.resume_after is not None else ""
    )
    if event.index > expected:
        message = (
            f"the server sent token {event.index} when token {expected} was next ({where}): "
            f"tokens {expected}–{event.index - 1} would be lost, so the stream is stopped "
            "rather than shown with a hole (the server does not resume where it was asked to)"
        )
    else:
        message = (
            f"the server resent token {event.index} with different text ({where}): it does "
            "not regenerate the reply deterministically, so the stream cannot be stitched "
            "(send the same seed on every attempt, or use resume=False to start over)"
        )
    return ProtocolError(message, partial_text=_text(kept))


class _Watchdog:
    """First-token and idle deadlines for one attempt, checked by one lazily re-armed timer.

    The consumer records when it starts waiting for the next event (one clock read per event).
    The timer fires at the earliest possible deadline; if an event came meanwhile, it re-arms for
    the new deadline instead of expiring, so a steady stream costs one wake-up per timeout
    period, not a timer per token. On expiry it cancels the waiting task, and :func:`_timed`
    turns that cancellation into a :class:`~streamkit.errors.ReadTimeout` subclass. Time spent
    in the consumer (between events) never counts: only waiting for the server does.
    """

    __slots__ = (
        "_clock",
        "_handle",
        "_loop",
        "_task",
        "expired",
        "first_token_timeout",
        "got_token",
        "idle_timeout",
        "sent_at",
        "tokens_before",
        "waiting_since",
    )

    def __init__(
        self,
        first_token_timeout: float | None,
        idle_timeout: float | None,
        tokens_before: int,
        clock: Callable[[], float],
    ) -> None:
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.tokens_before = tokens_before
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self.sent_at = 0.0
        self.waiting_since: float | None = None
        self.got_token = False
        self.expired: ReadTimeout | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.sent_at = self._clock()
        self._arm(self._period())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _period(self) -> float:
        limits = [t for t in (self.first_token_timeout, self.idle_timeout) if t is not None]
        return min(limits)

    def _deadline(self) -> float | None:
        if not self.got_token and self.first_token_timeout is not None:
            return self.sent_at + self.first_token_timeout
        since = self.waiting_since
        if since is None or self.idle_timeout is None:
            return None
        return since + self.idle_timeout

    def _arm(self, delay: float) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.got_token and self.idle_timeout is None:
            return  # only a first-token limit was set, and it was met
        now = self._clock()
        deadline = self._deadline()
        if deadline is None or self.waiting_since is None:
            # Not waiting on the server (the consumer is busy): look again one period later.
            self._arm(self._period())
        elif deadline - now > _SLACK:
            self._arm(deadline - now)
        else:
            self.expired = self._error()
            if self._task is not None:
                self._task.cancel()

    def _error(self) -> ReadTimeout:
        if not self.got_token and self.first_token_timeout is not None:
            return FirstTokenTimeout(
                f"no token within {self.first_token_timeout:g} s of sending "
                "(raise first_token_timeout= if the model is slow to start)"
            )
        tokens = self.tokens_before
        after = f"after token {tokens - 1}" if tokens else "before the first token"
        return IdleTimeout(
            f"stream stalled: no data for {self.idle_timeout:g} s {after} "
            "(raise idle_timeout= if the server pauses longer)"
        )


async def _timed(stream: AsyncIterator[Event], watchdog: _Watchdog) -> AsyncIterator[Event]:
    """``stream`` with ``watchdog``'s deadlines enforced on every wait for the next event."""
    clock = watchdog._clock
    watchdog.start()
    try:
        while True:
            watchdog.waiting_since = clock()
            try:
                event = await anext(stream)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if watchdog.expired is not None and task is not None and task.uncancel() == 0:
                    raise watchdog.expired from None
                raise
            watchdog.waiting_since = None
            kind = type(event)
            if kind is TokenDelta or kind is ReasoningDelta or kind is ToolCallDelta:
                # Any piece is a first token: a reasoning model starts with its thinking.
                watchdog.got_token = True
                watchdog.tokens_before += 1
            yield event
    finally:
        watchdog.stop()
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator
