"""The token buffer: when waiting text is flushed to a view (after ``max_tokens`` or ``max_delay``).

Pure logic, no I/O: every method that depends on time takes ``now`` from the caller, so the policy
is tested exactly with a fake clock and the caller decides which clock counts (views use
``time.perf_counter``, like the events). The buffer only decides *when* text is shown; it never
drops or reorders text, so every token that is added ends up in some flush.

A flush is due when ``max_tokens`` tokens are waiting, or when ``max_delay`` seconds have passed
since the *first* waiting token (not the last: a steady trickle of tokens must not postpone the
flush forever). ``max_delay=0`` shows every token as it comes.

An optional ``min_gap`` caps the flush rate whatever the other two say: no flush the buffer calls
for comes sooner than ``min_gap`` seconds after the previous one (tokens wait, none is dropped),
and a token that finds the buffer idle for a whole ``max_delay`` is shown at once. The count alone
cannot cap the rate: one token per flush at 200 tokens/s is 200 flushes/s.

:class:`AdaptivePolicy` picks the two settings from what it measures (the token rate, the render
lag the browser acknowledges, the connection latency), and :data:`PRESETS` names three fixed
choices (``fast``, ``medium``, ``slow``). Both are as pure as the buffer: times come from the
caller or from an injected clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from types import MappingProxyType

from .errors import UsageError

__all__ = ["PRESETS", "AdaptivePolicy", "BatchSettings", "TokenBuffer", "preset"]

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


def _check_max_delay(value: object, name: str = "max_delay") -> float:
    low, high = MAX_DELAY_RANGE
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UsageError(
            f"{name}={value!r} is not a number ({type(value).__name__}): "
            f"must be seconds between {low:g} and {high:g}"
        )
    delay = float(value)
    if math.isnan(delay):
        raise UsageError(
            f"{name}={value!r} is not a number: must be between {low:g} and {high:g} seconds"
        )
    if not low <= delay <= high:
        raise UsageError(
            f"{name}={value!r} is out of range: must be between {low:g} and {high:g} seconds"
        )
    return delay


def _check_min_gap(value: object) -> float:
    return _check_max_delay(value, "min_gap")


class TokenBuffer:
    """Collects tokens and says when to flush them: after ``max_tokens`` or ``max_delay``, and
    never sooner than ``min_gap`` after the previous flush.

    Settings may be changed while a stream runs (e.g. from a slider); the new values apply
    from the next call: lowering ``max_tokens`` to :attr:`pending` or below makes a flush due at
    once (at the next :meth:`add`, or by :attr:`deadline`), and :attr:`deadline` always follows
    the current settings.

    With ``min_gap`` > 0 (an :class:`AdaptivePolicy` sets it to ``1 / max_flush_rate``) the
    buffer also remembers when it last flushed, and:

    - a flush that ``max_tokens`` or ``max_delay`` calls for waits until ``min_gap`` has passed
      since the previous flush, so at most one flush per ``min_gap`` ever comes from the buffer;
    - a token arriving when nothing was flushed for at least ``max_delay`` (a stall, or the first
      token of a stream) is due at once: the reader has waited, and one flush keeps the cap.

    Args:
        max_tokens: flush once this many tokens are waiting (1 to 10 000).
        max_delay: flush once the first waiting token has waited this many seconds (0 to 10;
            0 flushes every token).
        min_gap: the least time between two flushes (0 to 10 seconds; 0, the default, caps
            nothing).

    Raises:
        UsageError: a setting has the wrong type or is out of range (never clamped silently).
    """

    __slots__ = (
        "_first_at",
        "_last_add_at",
        "_last_flush_at",
        "_max_delay",
        "_max_tokens",
        "_min_gap",
        "_parts",
    )

    def __init__(self, max_tokens: int = 4, max_delay: float = 0.05, min_gap: float = 0.0) -> None:
        self._max_tokens = _check_max_tokens(max_tokens)
        self._max_delay = _check_max_delay(max_delay)
        self._min_gap = _check_min_gap(min_gap)
        self._parts: list[str] = []
        self._first_at: float | None = None
        self._last_add_at: float | None = None
        self._last_flush_at: float | None = None

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
    def min_gap(self) -> float:
        """The least time between two flushes (0 to 10 seconds; 0 caps nothing)."""
        return self._min_gap

    @min_gap.setter
    def min_gap(self, value: float) -> None:
        self._min_gap = _check_min_gap(value)

    @property
    def pending(self) -> int:
        """How many tokens are waiting to be flushed."""
        return len(self._parts)

    @property
    def last_flush_at(self) -> float | None:
        """When the buffer last flushed tokens (on the caller's clock), or None."""
        return self._last_flush_at

    @property
    def deadline(self) -> float | None:
        """When the waiting tokens must be flushed by time, or None when nothing waits."""
        first = self._first_at
        if first is None:
            return None
        if not self._min_gap:
            if len(self._parts) >= self._max_tokens:
                return first
            return first + self._max_delay
        return self._capped_deadline(first)

    def _capped_deadline(self, first: float) -> float:
        last = self._last_flush_at
        if last is None or first >= last + self._max_delay:
            return first if last is None else max(first, last + self._min_gap)
        due = first if len(self._parts) >= self._max_tokens else first + self._max_delay
        return max(due, last + self._min_gap)

    def due(self, now: float) -> bool:
        """Whether the waiting tokens are due for a flush by ``now``.

        Args:
            now: the current time, on the clock passed to :meth:`add`.
        """
        deadline = self.deadline
        return deadline is not None and now >= deadline

    def add(self, text: str, now: float) -> str | None:
        """Add one token; return the text to flush if a flush is due now, else None.

        A flush is due when ``max_tokens`` tokens are waiting, or when the deadline has already
        passed (the caller's timer was late, or ``max_delay`` is 0), and (with a ``min_gap``)
        the previous flush is at least ``min_gap`` old.

        Args:
            text: the token's text.
            now: its arrival time (any clock, as long as every call uses the same one).
        """
        # Called once per token: plain attribute access only, no property calls.
        parts = self._parts
        parts.append(text)
        self._last_add_at = now
        first = self._first_at
        if first is None:
            self._first_at = first = now
        if not self._min_gap:
            if len(parts) >= self._max_tokens or now >= first + self._max_delay:
                return self.flush(now)
            return None
        if now >= self._capped_deadline(first):
            return self.flush(now)
        return None

    def flush(self, now: float | None = None) -> str:
        """Take everything waiting ("" if nothing) and start over.

        Args:
            now: when the flush happens, on the clock passed to :meth:`add`; ``min_gap`` counts
                from it. Omitted, the last token's arrival time is taken: a caller whose timer
                flushes later than that should pass the time, or the next flush may come early.
        """
        parts = self._parts
        if not parts:
            return ""
        text = "".join(parts)
        parts.clear()
        self._first_at = None
        self._last_flush_at = now if now is not None else self._last_add_at
        return text


# -- fixed presets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """One flush rule: at most ``max_tokens`` tokens, or ``max_delay`` seconds, per flush, and
    (``min_gap`` > 0) at most one flush per ``min_gap`` seconds.

    Validated like the buffer's setters, so a preset or a policy can never hand a buffer a value
    it would refuse.

    Raises:
        UsageError: a setting has the wrong type or is out of range.
    """

    max_tokens: int
    max_delay: float
    min_gap: float = 0.0

    def __post_init__(self) -> None:
        # frozen: coerce through object.__setattr__ (e.g. max_delay=0 becomes 0.0).
        object.__setattr__(self, "max_tokens", _check_max_tokens(self.max_tokens))
        object.__setattr__(self, "max_delay", _check_max_delay(self.max_delay))
        object.__setattr__(self, "min_gap", _check_min_gap(self.min_gap))

    def apply(self, buffer: TokenBuffer) -> None:
        """Give ``buffer`` these settings (only the ones that differ are set)."""
        if buffer.max_tokens != self.max_tokens:
            buffer.max_tokens = self.max_tokens
        if buffer.max_delay != self.max_delay:
            buffer.max_delay = self.max_delay
        if buffer.min_gap != self.min_gap:
            buffer.min_gap = self.min_gap


PRESETS: Mapping[str, BatchSettings] = MappingProxyType(
    {
        # Every token as it comes (the delay never matters with max_tokens=1): the lowest lag
        # and one message per token, right for slow streams (<= ~25 tokens/s, e.g. a big model
        # or a reasoning trace read as it is written). 16 ms is one frame at 60 Hz.
        "fast": BatchSettings(1, 0.016),
        # The buffer's default: a few tokens or 50 ms, about what a reader cannot tell apart
        # from per-token output at typical chat speeds (30-100 tokens/s): 8-25 messages/s.
        "medium": BatchSettings(4, 0.05),
        # Whole phrases, at most ~7 updates/s from the delay: for fast streams, a busy browser,
        # or a remote JupyterHub where each message costs a round of network traffic.
        "slow": BatchSettings(10, 0.15),
    }
)
"""The fixed choices a controls panel offers, by name (no ``min_gap``). A count alone cannot cap
the message rate of a fast stream (``medium`` at 500 tokens/s flushes ~125 times a second);
:class:`AdaptivePolicy` can."""


def preset(name: str) -> BatchSettings:
    """The settings of preset ``name`` (``fast``, ``medium`` or ``slow``).

    Raises:
        UsageError: there is no such preset.
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        names = ", ".join(PRESETS)
        raise UsageError(f"preset {name!r} is unknown: choose one of {names}") from None


# -- the adaptive policy ----------------------------------------------------------------------

# At high rates the delay should set the cadence (at most 1/interval flushes per second) and the
# count only catch bursts: it is set to twice the tokens expected per interval. Less headroom let
# bursty arrival (a server sharing the kernel's GIL, TCP coalescing) trigger the count early:
# 1.25 gave ~30 flushes/s instead of 25 at 2,000 tokens/s in a kernel.
_COUNT_HEADROOM = 2.0
# Grow the flush interval fast when the browser falls behind, relax it slowly when it keeps up
# (TCP's caution: overload costs more than a slightly coarse stream).
_GROW = 1.5
_SHRINK = 1.25
# Weight of each flush's delivery lag in the moving average: a handful of flushes (a fraction of
# a second at 25/s) is enough to see a backlog build or clear.
_LAG_WEIGHT = 0.25


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise UsageError(f"{name}={value!r} is not a number: must be a finite number {bound}")
    number = float(value)
    if math.isinf(number) or number < 0 or (number == 0 and not allow_zero):
        raise UsageError(f"{name}={value!r} is out of range: must be a finite number {bound}")
    return number


class AdaptivePolicy:
    """Picks ``max_tokens`` and ``max_delay`` from the measured token rate and render lag.

    The policy keeps one number it steers, the flush *interval* (seconds between flushes of a
    steady stream), starting at ``1 / max_flush_rate`` (40 ms for the default 25 flushes/s, about
    what a reader perceives as continuous and well under the ~1,000 messages/s at which the
    Jupyter server starts dropping output). From it and the token rate ``r`` (a time-weighted
    moving average):

    - ``max_delay = interval``: a steady stream never flushes more often than that;
    - ``max_tokens = 1`` when at most one token is expected per interval (``r * interval <= 1``):
      a slow stream shows every token the moment it arrives, and still flushes at most
      ``max_flush_rate`` times a second;
    - else ``max_tokens = ceil(2 * r * interval)``: a fast stream is flushed by the delay, and
      the count only catches bursts of twice the average rate;
    - ``min_gap = 1 / max_flush_rate``: the cap holds in every state, whatever the estimate says.
      The estimate lags the stream: after a stall it is far below the rate that resumes, and
      ``max_tokens = 1`` alone then flushed every token (36 flushes in the second after a 2 s
      stall of a 200 tokens/s stream). With the gap, the tokens that come too soon wait for the
      next flush, and the first token after a stall still shows at once.

    The interval grows (x1.5, up to ``max_interval``) when the *delivery lag* (a flush sent to
    the browser acknowledging it on screen, minus the connection's own latency) exceeds
    ``lag_target``: the browser or the link is queueing messages, and fewer, larger messages
    relieve it. It shrinks back (/1.25, down to ``1 / max_flush_rate``) when the excess falls
    below half the target. It moves at most once per ``adjust_every`` seconds, so one slow frame
    does not swing it. The delivery lag excludes the time tokens wait in the buffer on purpose:
    that wait grows with the interval, and steering on it would feed back on itself.

    The latency is what batching cannot remove: a ping round trip to the browser if the caller
    knows one (:meth:`observe_latency`), else the smallest delivery lag seen so far.

    All methods take ``now`` (seconds on any one clock) or read ``clock`` when it is omitted.
    Nothing here does I/O; a view feeds the measurements and applies :meth:`settings`.

    Args:
        max_flush_rate: the most flushes per second to aim for (> 0; default 25).
        lag_target: the delivery lag above the latency that counts as falling behind (seconds).
        max_interval: the longest flush interval the policy will choose (seconds, <= 10).
        rate_halflife: the token rate's moving average halves a sample's weight in this time.
        adjust_every: the least time between two changes of the interval (seconds).
        latency: a known round trip to the browser (seconds), or None to learn it.
        clock: where ``now`` comes from when a method is called without it.

    Raises:
        UsageError: a setting is not a positive finite number, or ``max_interval`` is shorter
            than ``1 / max_flush_rate`` or longer than the buffer allows.
    """

    def __init__(
        self,
        *,
        max_flush_rate: float = 25.0,
        lag_target: float = 0.05,
        max_interval: float = 0.5,
        rate_halflife: float = 0.5,
        adjust_every: float = 0.25,
        latency: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.max_flush_rate = _positive("max_flush_rate", max_flush_rate)
        self.lag_target = _positive("lag_target", lag_target)
        self.max_interval = _positive("max_interval", max_interval)
        self.rate_halflife = _positive("rate_halflife", rate_halflife)
        self.adjust_every = _positive("adjust_every", adjust_every, allow_zero=True)
        self.min_interval = 1.0 / self.max_flush_rate
        if not self.min_interval <= self.max_interval <= MAX_DELAY_RANGE[1]:
            raise UsageError(
                f"max_interval={max_interval!r} is out of range: must be between "
                f"1/max_flush_rate ({self.min_interval:g} s) and {MAX_DELAY_RANGE[1]:g} s"
            )
        self._clock = clock
        self._latency = None if latency is None else _positive("latency", latency, allow_zero=True)
        self._interval = self.min_interval
        self._rate: float | None = None
        self._last_tokens_at: float | None = None
        self._carry = 0
        self._lag: float | None = None
        self._min_lag: float | None = None
        self._last_adjust: float | None = None

    # -- what it has measured ------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """The flush interval the policy aims for now (seconds)."""
        return self._interval

    @property
    def token_rate(self) -> float | None:
        """The token rate's moving average (tokens/s), or None before two observations."""
        return self._rate

    @property
    def render_lag(self) -> float | None:
        """The delivery lag's moving average (seconds), or None before any acknowledgement."""
        return self._lag

    @property
    def latency(self) -> float | None:
        """The lag batching cannot remove: the given round trip, else the least lag seen."""
        return self._latency if self._latency is not None else self._min_lag

    # -- measurements ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the token rate (a new stream has its own); keep what was learned about the
        browser (interval, render lag, latency), which outlives one stream."""
        self._rate = None
        self._last_tokens_at = None
        self._carry = 0

    def observe_tokens(self, count: int, now: float | None = None) -> None:
        """``count`` more tokens arrived by ``now`` (a view calls this once per flush).

        The first call of a stream only sets the clock running: the tokens before it arrived
        after an unknown wait (the time to first token), so they say nothing about the rate.

        Args:
            count: tokens since the previous call (>= 0).
            now: the current time; ``clock()`` when omitted.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UsageError(f"count={count!r} is invalid: must be an integer >= 0")
        if now is None:
            now = self._clock()
        last = self._last_tokens_at
        if last is None:
            self._last_tokens_at = now
            return
        elapsed = now - last
        if elapsed <= 0:
            # Same instant (a coarse or fake clock): keep the tokens for the next sample.
            self._carry += count
            return
        sample = (count + self._carry) / elapsed
        self._carry = 0
        self._last_tokens_at = now
        if self._rate is None:
            self._rate = sample
        else:
            # Weight by elapsed time, not by call: a long gap outweighs many quick flushes.
            weight = 1.0 - 0.5 ** (elapsed / self.rate_halflife)
            self._rate += weight * (sample - self._rate)

    def observe_latency(self, rtt: float) -> None:
        """A measured round trip to the browser (e.g. a ping), the lag floor batching cannot
        lower; replaces the one learned from acknowledgements."""
        self._latency = _positive("rtt", rtt, allow_zero=True)

    def observe_render_lag(self, lag: float, now: float | None = None) -> None:
        """A flush was on screen ``lag`` seconds after it was sent (its *delivery* lag).

        Updates the lag's moving average and, at most once per ``adjust_every``, the interval.

        Args:
            lag: seconds from sending a flush to its being on screen (>= 0).
            now: the current time; ``clock()`` when omitted.
        """
        self.observe_render_lags([lag], now)

    def observe_render_lags(self, lags: Sequence[float], now: float | None = None) -> None:
        """Several flushes' delivery lags, from one acknowledgement, oldest first.

        All go into the moving average before the interval is reconsidered (once), so a
        batched acknowledgement counts as much as the flushes it reports.

        Args:
            lags: seconds from sending each flush to its being on screen (each >= 0).
            now: the current time; ``clock()`` when omitted.
        """
        checked = [_positive("lag", lag, allow_zero=True) for lag in lags]
        if not checked:
            return
        if now is None:
            now = self._clock()
        for lag in checked:
            self._lag = lag if self._lag is None else self._lag + _LAG_WEIGHT * (lag - self._lag)
            self._min_lag = lag if self._min_lag is None else min(self._min_lag, lag)
        assert self._lag is not None
        if self._last_adjust is not None and now - self._last_adjust < self.adjust_every:
            return
        floor = self.latency or 0.0
        excess = self._lag - floor
        if excess > self.lag_target and self._interval < self.max_interval:
            self._interval = min(self._interval * _GROW, self.max_interval)
            self._last_adjust = now
        elif excess < self.lag_target / 2 and self._interval > self.min_interval:
            self._interval = max(self._interval / _SHRINK, self.min_interval)
            self._last_adjust = now

    # -- the decision ------------------------------------------------------------------------------

    def settings(self) -> BatchSettings:
        """The flush rule for what has been measured so far (1 token at first: show at once),
        capped at ``max_flush_rate`` flushes per second (``min_gap``)."""
        interval = self._interval
        per_interval = (self._rate or 0.0) * interval
        low, high = MAX_TOKENS_RANGE
        if per_interval <= 1.0:
            max_tokens = low
        else:
            max_tokens = min(high, math.ceil(per_interval * _COUNT_HEADROOM))
        return BatchSettings(max_tokens, min(interval, MAX_DELAY_RANGE[1]), self.min_interval)

    def apply(self, buffer: TokenBuffer) -> BatchSettings:
        """Give ``buffer`` the current :meth:`settings` and return them."""
        chosen = self.settings()
        chosen.apply(buffer)
        return chosen

    def __repr__(self) -> str:
        rate = "?" if self._rate is None else f"{self._rate:.0f}"
        return (
            f"AdaptivePolicy(interval={self._interval * 1000:.0f} ms, "
            f"token_rate={rate}/s, max_flush_rate={self.max_flush_rate:g}/s)"
        )
