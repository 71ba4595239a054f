"""Admission: an admitted completion (:class:`Admission`: its faults and concurrency slot), and
the refusals a server that is not taking work answers with."""

from __future__ import annotations

from collections.abc import Callable

from .faults import Fault
from .request import RequestError

__all__ = ["Admission", "failing_error", "shutting_down"]


def shutting_down() -> RequestError:
    """The error every new reply gets while the server shuts down."""
    return RequestError(
        503,
        "The streamkit simulator is shutting down; retry against a running server.",
        type="server_error",
        code="server_shutting_down",
    )


def failing_error(status: int, retry_after: float | None) -> RequestError:
    """The error a server switched to failing (:meth:`.ServerCore.set_failing`) answers with."""
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
        message = "Rate limit reached for requests. Please try again later."
    elif status == 503:
        kind, code = "server_error", "overloaded"
        message = "The server is overloaded or not ready yet."
    else:
        kind, code = "server_error", "server_error"
        message = "The server had an error while processing your request."
    # Say it was asked for, so nobody debugs a real outage that was switched on.
    note = " (switched on with set_failing"
    if retry_after is not None:
        note += f"; retry after {retry_after:g} s"
    return RequestError(status, message + note + ")", type=kind, code=code, retry_after=retry_after)


class Admission:
    """An admitted completion: the faults that apply to it, and its concurrency slot.

    Attributes:
        faults: the faults that apply to this attempt.
    """

    __slots__ = ("_release", "faults")

    def __init__(self, faults: tuple[Fault, ...], release: Callable[[], None] | None) -> None:
        self.faults = faults
        self._release = release

    def release(self) -> None:
        """Give the caller's concurrency slot back (idempotent).

        Called just before the last bytes of a reply go out (the end of the body, the ``end``
        message, a dropped connection), not when the handler has unwound: a client that has
        read the whole reply may send its next request at once, and must find the slot free.
        """
        release, self._release = self._release, None
        if release is not None:
            release()
