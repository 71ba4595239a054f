"""Fault injection: which faults a request asks for, and which of them apply to this attempt.

Pure logic, no I/O, so every rule is tested exactly. A request names its faults in the
``streamkit.faults`` body field (see docs/protocol.md) and may name its *logical* request with
``streamkit.attempt_key``; the server counts attempts per key (:class:`AttemptCounter`) so that a
fault limited to the first ``attempts`` attempts lets a retry or a resume succeed.

Kinds, as the wire layers (SSE in ``app.py``, WebSocket in ``ws.py``, both through ``produce.py``)
carry them out:

- :class:`Drop`: after ``at`` content tokens, cut the connection (``mid_frame``: half of the next
  frame first).
- :class:`Stall`: after ``at`` tokens, ``seconds`` of silence, then the stream goes on.
- :class:`Status`: answer ``code`` (429, 500, 503) with an OpenAI-style error before streaming.
- :class:`Malformed`: after ``at`` tokens, one frame whose data is not valid JSON.
- :class:`NoDone`: end cleanly without a finish reason or ``[DONE]`` (after ``at`` tokens, or at
  the natural end).

Token positions count content tokens sent in the whole logical stream, so a resumed attempt that
starts at token ``s`` fires a fault at ``at`` once ``at - s`` more tokens are out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FAULT_KINDS",
    "MAX_FAULTS",
    "AttemptCounter",
    "Drop",
    "Fault",
    "InvalidSetting",
    "Malformed",
    "NoDone",
    "Stall",
    "Status",
    "StreamFault",
    "active_faults",
    "error_for_status",
    "first_status",
    "parse_attempt_key",
    "parse_faults",
    "stream_faults",
]

MAX_FAULTS = 64
"""Most faults one request may ask for (a bound on per-request work, not a real need)."""
MAX_ATTEMPT_KEY = 128
"""Longest ``attempt_key`` accepted, in characters."""
STATUS_CODES = (429, 500, 503)
"""The HTTP statuses a :class:`Status` fault may answer."""


class InvalidSetting(ValueError):
    """A setting that cannot be accepted; the server answers 400 with this message.

    Args:
        param: the offending field's full path (``"streamkit.faults[1].at"``).
        message: what is wrong and what would be right.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


# --------------------------------------------------------------------------------------------
# The faults


@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    """Fields every fault has.

    Attributes:
        index: the fault's position in the request's ``faults`` list (for messages).
        attempts: the fault applies to the first ``attempts`` attempts of the same
            ``attempt_key`` only; ``None``: to every attempt.
    """

    index: int = 0
    attempts: int | None = None

    def applies_to(self, attempt: int) -> bool:
        """Whether the fault applies to the ``attempt``-th attempt (1-based)."""
        return self.attempts is None or attempt <= self.attempts


@dataclass(frozen=True, slots=True, kw_only=True)
class Drop(_Base):
    """After ``at`` content tokens, cut the connection (``mid_frame``: half a frame first)."""

    at: int
    mid_frame: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Stall(_Base):
    """After ``at`` content tokens, send nothing for ``seconds``, then go on at the same pace."""

    at: int
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed(_Base):
    """After ``at`` content tokens, send one frame whose data is not valid JSON, then go on."""

    at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NoDone(_Base):
    """End cleanly without a finish reason or ``[DONE]``: after ``at`` tokens, or at the end."""

    at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(_Base):
    """Answer ``code`` with an OpenAI-style error body (and ``Retry-After``) before streaming."""

    code: int
    retry_after: float | None = None


Fault = Drop | Stall | Malformed | NoDone | Status
"""Any fault a request may ask for."""
StreamFault = Drop | Stall | Malformed | NoDone
"""A fault that acts during a stream, at a token position."""


# --------------------------------------------------------------------------------------------
# Parsing: the body field, validated field by field


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_count(v: object) -> bool:
    return _is_int(v) and 0 <= v <= 10_000_000  # type: ignore[operator]


def _is_positive_int(v: object) -> bool:
    return _is_int(v) and 1 <= v <= 1_000_000  # type: ignore[operator]


def _is_seconds(v: object) -> bool:
    return (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0 < v <= 600
    )


def _is_retry_after(v: object) -> bool:
    return (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0 <= v <= 3600
    )


_Field = tuple[Callable[[object], bool], str, bool]  # check, allowed values in words, required

_AT: _Field = (_is_count, "an integer >= 0 (content tokens already sent)", True)
_COMMON: dict[str, _Field] = {
    "kind": (lambda v: True, "", True),  # checked before the others
    "attempts": (_is_positive_int, "an integer >= 1 (how many attempts it applies to)", False),
}
_FIELDS: dict[str, dict[str, _Field]] = {
    "drop": {"at": _AT, "mid_frame": (lambda v: isinstance(v, bool), "a boolean", False)},
    "stall": {
        "at": _AT,
        "seconds": (_is_seconds, "a number of seconds greater than 0 and at most 600", True),
    },
    "status": {
        "code": (lambda v: _is_int(v) and v in STATUS_CODES, "one of 429, 500, 503", True),
        "retry_after": (_is_retry_after, "a number of seconds from 0 to 3600", False),
    },
    "malformed": {"at": _AT},
    "no_done": {"at": (_is_count, "an integer >= 0 (content tokens already sent)", False)},
}
FAULT_KINDS = tuple(_FIELDS)
"""Every fault kind, in the order the documentation lists them."""
_MAKERS: dict[str, Callable[..., Fault]] = {
    "drop": Drop,
    "stall": Stall,
    "status": Status,
    "malformed": Malformed,
    "no_done": NoDone,
}


def _parse_one(raw: object, index: int, where: str) -> Fault:
    if not isinstance(raw, dict):
        raise InvalidSetting(
            where, f"{where} must be a fault object with a 'kind' (got {type(raw).__name__})."
        )
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise InvalidSetting(
            f"{where}.kind",
            f"{where}.kind must be one of {', '.join(repr(k) for k in FAULT_KINDS)} "
            f"(got {kind!r}).",
        )
    fields = {**_COMMON, **_FIELDS[kind]}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise InvalidSetting(
            f"{where}.{unknown[0]}",
            f"{where}.{unknown[0]} is not a field of a {kind!r} fault; its fields are "
            f"{', '.join(f for f in fields if f != 'kind')}.",
        )
    values: dict[str, object] = {}
    for name, (check, allowed, required) in fields.items():
        if name == "kind":
            continue
        value = raw.get(name)
        if value is None:
            if required:
                raise InvalidSetting(f"{where}.{name}", f"{where}.{name} is required: {allowed}.")
            continue
        if not check(value):
            raise InvalidSetting(
                f"{where}.{name}", f"{where}.{name} must be {allowed} (got {value!r})."
            )
        values[name] = float(value) if name in ("seconds", "retry_after") else value
    return _MAKERS[kind](index=index, **values)


def parse_faults(raw: object, where: str = "streamkit.faults") -> tuple[Fault, ...]:
    """Validate the ``faults`` list of the ``streamkit`` body field.

    Args:
        raw: the decoded JSON value.
        where: the field's path, for messages.

    Returns:
        The faults, in the order given.

    Raises:
        InvalidSetting: naming the first bad fault's index and field.
    """
    if not isinstance(raw, list):
        raise InvalidSetting(where, f"{where} must be a list of fault objects.")
    if len(raw) > MAX_FAULTS:
        raise InvalidSetting(
            where, f"{where} must hold at most {MAX_FAULTS} faults (got {len(raw)})."
        )
    return tuple(_parse_one(item, i, f"{where}[{i}]") for i, item in enumerate(raw))


def parse_attempt_key(raw: object, where: str = "streamkit.attempt_key") -> str:
    """Validate ``attempt_key``: a string of 1 to 128 characters.

    Raises:
        InvalidSetting: otherwise.
    """
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_ATTEMPT_KEY:
        raise InvalidSetting(
            where,
            f"{where} must be a string of 1 to {MAX_ATTEMPT_KEY} characters naming one logical "
            f"request across its attempts (got {raw!r:.60}).",
        )
    return raw


# --------------------------------------------------------------------------------------------
# Selection: what applies to this attempt, and when


def active_faults(faults: Iterable[Fault], attempt: int) -> tuple[Fault, ...]:
    """The faults that apply to the ``attempt``-th attempt (1-based) of a logical request."""
    return tuple(f for f in faults if f.applies_to(attempt))


def stream_faults(faults: Iterable[Fault], start: int, length: int) -> list[StreamFault]:
    """The stream faults that will fire in a stream sending tokens ``start`` to ``length - 1``.

    A fault fires when the count of content tokens sent in the logical stream equals its
    ``at``: before token ``at`` goes out, or after the last token when ``at == length``. Faults
    whose position this attempt never reaches (already passed on a resume, or beyond the end)
    are left out; a :class:`NoDone` without ``at``, or past the end, fires at the end.

    Returns:
        The faults with their position resolved in ``at`` (``NoDone.at`` filled in), ordered
        by position and, at one position, in the order the request listed them.
    """
    chosen: list[StreamFault] = []
    for fault in faults:
        if isinstance(fault, Status):
            continue
        if isinstance(fault, NoDone):
            at = length if fault.at is None else min(fault.at, length)
            if at >= start:
                chosen.append(NoDone(index=fault.index, attempts=fault.attempts, at=at))
        elif start <= fault.at <= length:
            chosen.append(fault)
    chosen.sort(key=lambda f: (f.at, f.index))  # sort is stable; index keeps the listed order
    return chosen


def first_status(faults: Sequence[Fault]) -> Status | None:
    """The first :class:`Status` fault, if any: it decides the answer before streaming."""
    for fault in faults:
        if isinstance(fault, Status):
            return fault
    return None


_STATUS_ERRORS: dict[int, tuple[str, str, str]] = {
    # (message, type, code), after OpenAI's own bodies for these statuses
    429: (
        "Rate limit reached for requests on this simulated model. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        "server_error",
    ),
    503: ("The server is overloaded or not ready yet.", "server_error", "overloaded"),
}


def error_for_status(fault: Status) -> tuple[str, str, str]:
    """The OpenAI-style error ``(message, type, code)`` a :class:`Status` fault answers with.

    The message says the error was injected, and by which fault, so nobody debugs a real
    outage that was asked for.
    """
    message, kind, code = _STATUS_ERRORS[fault.code]
    note = f" (injected by streamkit.faults[{fault.index}]"
    if fault.retry_after is not None:
        note += f"; retry after {fault.retry_after:g} s"
    return message + note + ")", kind, code


# --------------------------------------------------------------------------------------------
# Attempt counting


class AttemptCounter:
    """Counts attempts per ``attempt_key``, remembering at most ``max_keys`` keys.

    The least recently used key is forgotten first, so memory stays bounded however many
    logical requests a long-running server sees; a forgotten key starts again at attempt 1.

    Args:
        max_keys: how many keys to remember.
    """

    __slots__ = ("_counts", "max_keys")

    def __init__(self, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def next(self, key: str | None) -> int:
        """Record one more attempt of ``key`` and return its number (1 for the first).

        A request without a key is its own logical request: always attempt 1.
        """
        if key is None:
            return 1
        counts = self._counts
        n = counts.pop(key, 0) + 1
        counts[key] = n  # re-inserted last: the most recently used
        if len(counts) > self.max_keys:
            counts.popitem(last=False)
        return n
