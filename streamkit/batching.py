"""The token buffer: when waiting text is flushed to a view (after ``max_tokens`` or ``max_delay``).

Pure logic, no I/O: every method that depends on time takes ``now`` from the caller, so the policy
is tested exactly with a fake clock and the caller decides which clock counts (views use
``time.perf_counter``, like the events). The buffer only decides *when* text is shown; it never
drops or reorders text, so every token that is added ends up in some flush.

A flush is due when ``max_tokens`` tokens are waiting, or when ``max_delay`` seconds have passed
since the *first* waiting token (not the last: a steady trickle of tokens must not postpone the
flush forever). ``max_delay=0`` shows every token as it comes.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import UsageError

__all__ = ["TokenBuffer"]

MAX_TOKENS_RANGE = (1, 10_000)
"""Allowed ``max_tokens``, inclusive."""

MAX_DELAY_RANGE = (0.0, 10.0)
"""Allowed ``max_delay`` in seconds, inclusive."""


def _check_max_tokens(value: object) -> int:
    low, high = MAX_TOKENS_RANGE
    # bool is an int subclass, but max_tokens=True is a mistake, not "1".
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise UsageError(
            f"max_tokens={value!r} is not an integer ({type(value).__name__}): "
            f"must be a whole number of tokens between {low} and {high}"
        )
    count = int(value)
    if not low <= count <= high:
        raise UsageError(
            f"max_tokens={value!r} is out of range: must be between {low} and {high} tokens"
        )
    return count


def _check_max_delay(value: object) -> float:
    low, high = MAX_DELAY_RANGE
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UsageError(
            f"max_delay={value!r} is not a number ({type(value).__name__}): "
            f"must be seconds between {low:g} and {high:g}"
        )
    delay = float(value)
    if math.isnan(delay):
        raise UsageError(
            f"max_delay={value!r} is not a number: must be between {low:g} and {high:g} seconds"
        )
    if not low <= delay <= high:
        raise UsageError(
            f"max_delay={value!r} is out of range: must be between {low:g} and {high:g} seconds"
        )
    return delay


class TokenBuffer:
    """Collects tokens and says when to flush them: after ``max_tokens`` or ``max_delay``.

    Both settings may be changed while a stream runs (e.g. from a slider); the new values apply
    from the next call: lowering ``max_tokens`` below :attr:`pending` flushes at the next
    :meth:`add`, and :attr:`deadline` is always the first waiting token's time plus the current
    ``max_delay``.

    Args:
        max_tokens: flush once this many tokens are waiting (1 to 10 000).
        max_delay: flush once the first waiting token has waited this many seconds (0 to 10;
            0 flushes every token).

    Raises:
        UsageError: a setting has the wrong type or is out of range (never clamped silently).
    """

    __slots__ = ("_first_at", "_max_delay", "_max_tokens", "_parts")

    def __init__(self, max_tokens: int = 4, max_delay: float = 0.05) -> None:
        self._max_tokens = _check_max_tokens(max_tokens)
        self._max_delay = _check_max_delay(max_delay)
        self._parts: list[str] = []
        self._first_at: float | None = None

    @property
    def max_tokens(self) -> int:
        """Flush once this many tokens are waiting (1 to 10 000)."""
        return self._max_tokens

    @max_tokens.setter
    def max_tokens(self, value: int) -> None:
        self._max_tokens = _check_max_tokens(value)

    @property
    def max_delay(self) -> float:
        """Flush once the first waiting token has waited this many seconds (0 to 10)."""
        return self._max_delay

    @max_delay.setter
    def max_delay(self, value: float) -> None:
        self._max_delay = _check_max_delay(value)

    @property
    def pending(self) -> int:
        """How many tokens are waiting to be flushed."""
        return len(self._parts)

    @property
    def deadline(self) -> float | None:
        """When the waiting tokens must be flushed by time, or None when nothing waits."""
        if self._first_at is None:
            return None
        return self._first_at + self._max_delay

    def due(self, now: float) -> bool:
        """Whether the waiting tokens have waited ``max_delay`` by ``now``.

        Args:
            now: the current time, on the clock passed to :meth:`add`.
        """
        return self._first_at is not None and now >= self._first_at + self._max_delay

    def add(self, text: str, now: float) -> str | None:
        """Add one token; return the text to flush if a flush is due now, else None.

        A flush is due when ``max_tokens`` tokens are waiting, or when the deadline has already
        passed (the caller's timer was late, or ``max_delay`` is 0).

        Args:
            text: the token's text.
            now: its arrival time (any clock, as long as every call uses the same one).
        """
        # Called once per token: plain attribute access only, no property calls.
        parts = self._parts
        parts.append(text)
        if self._first_at is None:
            self._first_at = now
        if len(parts) >= self._max_tokens or now >= self._first_at + self._max_delay:
            return self.flush()
        return None

    def flush(self) -> str:
        """Take everything waiting ("" if nothing) and start over."""
        text = "".join(self._parts)
        self._parts.clear()
        self._first_at = None
        return text
