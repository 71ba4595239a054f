"""ASGI plumbing shared by the HTTP routes and the WebSocket endpoint: the callable types, request
headers and callers, cutting a connection (the ``drop`` fault), and watching for a client that
leaves mid-reply."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
import random
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, NoReturn, TypeVar

__all__ = [
    "ConnectionDropped",
    "Message",
    "Outcome",
    "Receive",
    "Scope",
    "Send",
    "abort",
    "caller_of",
    "cut_connection",
    "forever",
    "header",
    "new_id",
    "transport_of",
    "watched",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

T = TypeVar("T")

# After a drop fault closes a connection, the kernel still flushes what was written; a client
# that never reads would keep it half-open, so the connection is reset after this long.
_DROP_GRACE = 2.0


# Ids come from a generator of this module's own (seeded from os.urandom, reseeded in a forked
# child): no system call per id, and a program's random.seed() cannot make two ids repeat.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_id(prefix: str) -> str:
    """A fresh id: ``prefix`` and 24 random hex digits (96 bits, as ``uuid4().hex[:24]``)."""
    return f"{prefix}{_ids.getrandbits(96):024x}"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower case), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def caller_of(scope: Scope) -> str:
    """Who a request comes from, for the per-key limits.

    The bearer token it carries (the API key, checked or not: a server without a key still
    tells callers apart by the key their SDK sends), or its client address when it carries none.
    The token is kept as a digest: the limiter's memory holds no secrets.
    """
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            return "key:" + hashlib.blake2b(token, digest_size=16).hexdigest()
    client = scope.get("client")
    return f"client:{client[0]}" if client else "client:?"


def transport_of(send: Send) -> asyncio.Transport | None:
    """The connection's transport behind an ASGI ``send``, when the server exposes it.

    ASGI has no way to cut a connection, which a ``drop`` fault needs: ending the response sends
    the terminating chunk (a clean end), and raising makes the server log an application error.
    uvicorn's ``send`` is a bound method of the object that owns the connection (the HTTP
    request cycle, or the WebSocket protocol), and that object holds the asyncio transport.
    Under another server this returns ``None`` and the caller falls back to raising.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


def cut_connection(transport: asyncio.Transport) -> None:
    """End the TCP connection right after the bytes already written, as a network failure would.

    ``close`` flushes what was written, then sends FIN: the client reads every byte sent before
    the fault, then an end of stream in the middle of the response (no terminating chunk, no
    close frame), so it sees a broken connection after exactly the tokens the fault allowed. An
    ``abort`` (RST) would be more brutal but could discard data the client had not read yet,
    making the cut point nondeterministic. A client that stops reading would keep a closing
    connection half-open, so it is reset after a grace period.
    """
    transport.close()
    asyncio.get_running_loop().call_later(_DROP_GRACE, transport.abort)


class ConnectionDropped(Exception):
    """Raised out of the app to cut a connection when the server does not expose its transport
    (the server then closes the connection; uvicorn is not such a server)."""


async def _wait_disconnect(receive: Receive) -> None:
    # After the body, the next receive() only returns when the client disconnects (or the
    # response completed). uvicorn drops sends to a closed connection silently, so this is the
    # only way a stream learns that nobody is listening.
    while (await receive())["type"] != "http.disconnect":
        pass


async def forever() -> NoReturn:
    """Wait until cancelled: a dropped stream waits here for the server to see the close."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")  # pragma: no cover


class Outcome(enum.Enum):
    """How a watched reply ended (:func:`watched`)."""

    DONE = "done"  # the reply went out in full
    DISCONNECTED = "disconnected"  # the client left first
    ABORTED = "aborted"  # the server is shutting down and ended it


# The cancel message with which a finished reply wakes its handler from listening.
_FINISHED = "streamkit: the reply has finished"


def abort(task: asyncio.Task[Any]) -> None:
    """End the reply that :func:`watched` runs in ``task`` (one of its ``inflight``): it
    returns ABORTED."""
    task.cancel()


async def watched(
    work: Coroutine[Any, Any, T], receive: Receive, inflight: set[asyncio.Task[Any]]
) -> tuple[Outcome, T | None]:
    """Run ``work`` as a task registered in ``inflight`` while watching for the client leaving.

    The work gets a task of its own, so each of its wake-ups (one per paced token) resumes a
    short stack of coroutines rather than the whole ASGI call's. The calling task listens for
    the disconnect itself, and the work's end wakes it: a reply costs one task, not two plus an
    ``asyncio.wait`` and a ``gather``, which counts when a thousand streams open at once.

    Returns:
        How it ended, and ``work``'s result when DONE (an exception it raised propagates).
        Unless DONE, ``work`` has been cancelled and has finished.
    """
    me = asyncio.current_task()
    assert me is not None
    task = asyncio.ensure_future(work)
    inflight.add(task)
    listening = True

    def wake(_: asyncio.Task[T]) -> None:
        if listening:
            me.cancel(_FINISHED)

    task.add_done_callback(wake)
    try:
        try:
            await _wait_disconnect(receive)
        except asyncio.CancelledError as exc:
            if not (task.done() and exc.args[:1] == (_FINISHED,)):
                raise  # cancelled by someone else (the server's own shutdown)
            me.uncancel()  # the wake-up was ours: this task goes on
        listening = False
        if task.done():
            if task.cancelled():  # by abort(), not by our own cancellation
                return Outcome.ABORTED, None
            return Outcome.DONE, task.result()  # re-raises what went wrong, if anything
        return Outcome.DISCONNECTED, None
    finally:
        listening = False
        inflight.discard(task)
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))  # so nothing is left pending
        if not task.cancelled():
            task.exception()  # retrieved (DONE re-raised it), so never reported as lost
