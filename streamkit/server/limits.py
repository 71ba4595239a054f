"""Per-key limits the simulator enforces, as hosted APIs do: concurrent streams and requests/minute.

Pure logic with the clock passed in, so the windows are tested with plain numbers. A *key*
identifies one caller: the bearer token a request carries (the API key, whether or not the
server checks it), or the client's address when it carries none. Memory is bounded: windows are
at most ``per_minute`` long, and at most ``max_keys`` keys are remembered.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

__all__ = ["ConcurrencyLimiter", "RateLimiter"]


class RateLimiter:
    """Requests per minute per key, over a sliding window of the last 60 seconds.

    Only admitted requests are recorded, so a refused caller that waits the ``Retry-After`` it
    was given is admitted.

    Args:
        per_minute: requests admitted per key in any window.
        window: the window's length in seconds (60: "per minute").
        max_keys: keys remembered; the least recently used is forgotten first.
    """

    __slots__ = ("_windows", "max_keys", "per_minute", "window")

    def __init__(self, per_minute: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.window = window
        self.max_keys = max_keys
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()

    def acquire(self, key: str, now: float) -> float | None:
        """Admit one request of ``key`` at time ``now`` (seconds, any monotonic clock).

        Returns:
            ``None`` when admitted (and recorded); otherwise the seconds until the oldest
            request in the window leaves it, when one more would be admitted.
        """
        windows = self._windows
        times = windows.pop(key, None)
        if times is None:
            times = deque()
        windows[key] = times  # most recently used last
        if len(windows) > self.max_keys:
            windows.popitem(last=False)
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.per_minute:
            return times[0] + self.window - now
        times.append(now)
        return None

    @staticmethod
    def retry_after_header(wait: float) -> int:
        """``Retry-After`` in whole seconds (RFC 9110 allows no fraction), never early."""
        return max(1, math.ceil(wait))


class ConcurrencyLimiter:
    """Requests in progress per key, at most ``limit`` at a time.

    Args:
        limit: requests a key may have in progress.
    """

    __slots__ = ("_active", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._active: dict[str, int] = {}

    def active(self, key: str) -> int:
        """Requests of ``key`` in progress now."""
        return self._active.get(key, 0)

    def full(self, key: str) -> bool:
        """Whether ``key`` is at its limit (one more would be refused)."""
        return self._active.get(key, 0) >= self.limit

    def acquire(self, key: str) -> bool:
        """Take a slot for ``key``; ``False`` (and nothing taken) when it is at its limit."""
        n = self._active.get(key, 0)
        if n >= self.limit:
            return False
        self._active[key] = n + 1
        return True

    def release(self, key: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        n = self._active.get(key, 0) - 1
        if n > 0:
            self._active[key] = n
        else:
            # Keys with nothing in progress are forgotten: memory follows the streams open now.
            self._active.pop(key, None)
