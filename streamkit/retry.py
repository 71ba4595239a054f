"""When to try a failed stream again, and how long to wait first: a pure retry policy.

:class:`RetryPolicy` does no I/O and takes its random source as an argument, so a backoff schedule
is tested exactly. The waits are AWS's "full jitter" exponential backoff (Marc Brooker, "Exponential
Backoff And Jitter", AWS Architecture Blog, 2015)::

    delay(attempt) = uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))

Full jitter spreads clients that failed together (a server restart drops every stream at once)
across the whole window, so they do not come back in lock-step.

Decisions, written down once:

- **Limits count a streak without progress.** ``attempt`` and ``elapsed`` are the failed attempts
  in a row and the time since that streak began; the resilience layer starts a new streak when a
  resumed attempt delivered new tokens, so a long stream may drop any number of times as long as
  it moves forward (see :mod:`streamkit.resume`).

- **Retry-After is a floor, not capped.** When the server says how long to wait (``Retry-After`` on
  a 429/503, or an SSE ``retry:`` field), the delay is ``max(backoff, retry_after)``: waiting less
  only earns another 429, and ``max_delay`` caps *our* guess, not the server's ask. The
  ``max_elapsed`` budget still holds: a wait that would start the next attempt after it is not
  taken, and the error is raised at once (it carries ``retry_after`` for the caller to act on).
- **Never retried**, whatever ``retryable`` says: :class:`~streamkit.errors.AuthError`,
  :class:`~streamkit.errors.BadRequestError`, :class:`~streamkit.errors.NotFoundError`,
  :class:`~streamkit.errors.UsageError` (the same request fails the same way) and
  :class:`~streamkit.errors.StreamCancelled` (the user asked to stop).
- **Malformed data is not retried by default.** A :class:`~streamkit.errors.ProtocolError` means the
  server (or a proxy) sent bytes that are not a valid stream; asking the same server again usually
  gets the same bytes, and a retry loop would hide a real bug. Where a resumable server is known to
  corrupt frames now and then, ``RetryPolicy(retry_on=(ProtocolError,))`` resumes after the last
  good token instead; a resume never duplicates or drops text (see :mod:`streamkit.resume`).
- Everything else follows the error's ``retryable`` flag: connection failures, timeouts, dropped
  streams, 429 and 5xx are retried.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .errors import (
    APIStatusError,
    AuthError,
    BadRequestError,
    NotFoundError,
    StreamCancelled,
    StreamkitError,
    UsageError,
)

__all__ = ["NEVER_RETRIED", "Jitter", "RetryPolicy", "Streak"]

Jitter = Literal["full", "equal", "none"]
"""``full``: uniform(0, cap) (the default); ``equal``: cap/2 + uniform(0, cap/2); ``none``: cap."""

NEVER_RETRIED: tuple[type[StreamkitError], ...] = (
    AuthError,
    BadRequestError,
    NotFoundError,
    UsageError,
    StreamCancelled,
)
"""Errors no policy retries: the same request would fail the same way, or the user stopped it."""

_JITTERS = ("full", "equal", "none")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try a stream, how long to wait between tries, and which errors qualify.

    Args:
        max_attempts: attempts in a row without progress, the first included (1 means never
            retry).
        base_delay: seconds; the backoff window of the first retry.
        max_delay: seconds; the largest backoff window (the server's Retry-After may exceed it).
        max_elapsed: seconds of failing without progress (from the first send, or from the
            last failure that came after new tokens) after which no new attempt starts; None:
            no limit.
        jitter: ``"full"`` (AWS full jitter, the default), ``"equal"`` or ``"none"``.
        retry_on: extra error classes to retry although they are not ``retryable``, e.g.
            ``(ProtocolError,)`` for a resumable server that garbles a frame now and then. It
            cannot enable the errors in :data:`NEVER_RETRIED`.
        random: the source of uniform numbers in [0, 1); inject a fake one in tests.

    Raises:
        UsageError: a setting is out of range (the message names it and the allowed range).
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_elapsed: float | None = 60.0
    jitter: Jitter = "full"
    retry_on: tuple[type[StreamkitError], ...] = ()
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> UsageError:
            value = getattr(self, name)
            return UsageError(f"RetryPolicy({name}={value!r}) is invalid: {allowed}")

        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise bad("max_attempts", "must be an integer >= 1 (1 means no retry)")
        if not _number(self.base_delay) or self.base_delay < 0:
            raise bad("base_delay", "must be a number of seconds >= 0")
        if not _number(self.max_delay) or self.max_delay < self.base_delay:
            raise bad("max_delay", f"must be a number of seconds >= base_delay ({self.base_delay})")
        if self.max_elapsed is not None and (
            not _number(self.max_elapsed) or self.max_elapsed <= 0
        ):
            raise bad("max_elapsed", "must be a number of seconds > 0, or None for no limit")
        if self.jitter not in _JITTERS:
            raise bad("jitter", "must be 'full', 'equal' or 'none'")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(cls, type) and issubclass(cls, StreamkitError) for cls in self.retry_on
        ):
            raise bad("retry_on", "must be a tuple of streamkit error classes")
        if not callable(self.random):
            raise bad("random", "must be a callable returning a float in [0, 1)")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries: the first failure is raised as it is."""
        return cls(max_attempts=1)

    @property
    def retries(self) -> int:
        """Retries after the first attempt (``max_attempts - 1``)."""
        return self.max_attempts - 1

    def backoff(self, attempt: int) -> float:
        """The backoff window after failed attempt ``attempt`` (1-based), before jitter.

        ``min(max_delay, base_delay * 2 ** (attempt - 1))``: 0.5, 1, 2, 4, … seconds by default.
        """
        if attempt < 1:
            raise UsageError(f"attempt={attempt!r} is invalid: attempts are numbered from 1")
        exponent = attempt - 1
        if exponent >= 64:  # 2**64 * any sane base is past every cap; avoid float overflow
            return self.max_delay
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def delay(
        self,
        attempt: int,
        error: StreamkitError | None = None,
        *,
        retry_after: float | None = None,
    ) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

        Args:
            attempt: the number of the attempt that failed (1 for the first).
            error: why it failed; an :class:`~streamkit.errors.APIStatusError` with
                ``retry_after`` sets a floor on the wait.
            retry_after: a floor from elsewhere (an SSE ``retry:`` field); the larger floor wins.

        Returns:
            The jittered backoff, raised to the server's ask if it asked for more.
        """
        cap = self.backoff(attempt)
        if self.jitter == "full":
            wait = cap * self.random()
        elif self.jitter == "equal":
            wait = cap / 2 + cap / 2 * self.random()
        else:
            wait = cap
        floors = [retry_after] if retry_after is not None else []
        if isinstance(error, APIStatusError) and error.retry_after is not None:
            floors.append(error.retry_after)
        return max([wait, *floors])

    def should_retry(self, error: StreamkitError, attempt: int, elapsed: float) -> bool:
        """Whether another attempt may follow failed attempt ``attempt``.

        Args:
            error: why the attempt failed.
            attempt: failed attempts in a row, this one included (1 for the first).
            elapsed: seconds since the streak began (the first send, for the first streak).

        Returns:
            False when attempts or time are used up, for the classes in :data:`NEVER_RETRIED`,
            and for errors that are not ``retryable`` (unless listed in ``retry_on``).
        """
        if attempt >= self.max_attempts:
            return False
        if self.max_elapsed is not None and elapsed >= self.max_elapsed:
            return False
        if isinstance(error, NEVER_RETRIED):
            return False
        return error.retryable or isinstance(error, self.retry_on)

    def next_delay(
        self,
        error: StreamkitError,
        attempt: int,
        elapsed: float,
        *,
        retry_after: float | None = None,
    ) -> float | None:
        """The wait before the next attempt, or None to give up and raise ``error``.

        :meth:`should_retry` and :meth:`delay` together, plus the budget: None also when the
        wait would start the next attempt after ``max_elapsed``.
        """
        if not self.should_retry(error, attempt, elapsed):
            return None
        wait = self.delay(attempt, error, retry_after=retry_after)
        if self.max_elapsed is not None and elapsed + wait > self.max_elapsed:
            return None
        return wait


class Streak:
    """What a :class:`RetryPolicy`'s limits count: failures in a row without progress, since when.

    The one place for the rule "progress starts a new streak", shared by the resilience loop
    (:func:`streamkit.resume.resilient_events`) and the reconnecting
    :class:`~streamkit.transports.sse.EventSource`: a stream that moves forward may drop any
    number of times; one that fails again and again without new data is given up on.

    Args:
        policy: the limits and the backoff.
        clock: seconds, monotonic (``time.perf_counter``); inject a fake one in tests.
    """

    __slots__ = ("clock", "failures", "policy", "started")

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.failures = 0  # attempts of this streak that failed
        self.started = clock()  # when this streak began

    def restart(self) -> None:
        """New data arrived since the last failure: the next failure begins a new streak."""
        self.failures, self.started = 0, self.clock()

    def fail(self) -> int:
        """Count one more failed attempt; return the streak's length."""
        self.failures += 1
        return self.failures

    def next_delay(
        self, error: StreamkitError, *, retry_after: float | None = None
    ) -> float | None:
        """The policy's wait after the streak's last failure, or None to give up (see
        :meth:`RetryPolicy.next_delay`)."""
        elapsed = self.clock() - self.started
        return self.policy.next_delay(error, self.failures, elapsed, retry_after=retry_after)
