"""Reading an HTTP request: its body within a size limit (413 beyond it, after a bounded drain),
and the ``Last-Event-ID`` header a resumed stream sends."""

from __future__ import annotations

import asyncio
import contextlib

from .asgi import Receive, Scope, header
from .request import RequestError

__all__ = ["last_event_id", "read_body"]

# A body over the limit is drained (and thrown away) up to this much before the 413 goes out.
_DRAIN_BYTES = 16 << 20
_DRAIN_SECONDS = 2.0


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413,
        f"The request body is larger than this server accepts ({limit} bytes; set with "
        "`streamkit serve --max-body-bytes`). Send a smaller body.",
        code="request_too_large",
        # The rest of the body is left unread, so the connection cannot be reused.
        headers=[(b"connection", b"close")],
    )


async def _discard_rest(receive: Receive) -> None:
    """Read and throw away the rest of a refused body, within a budget of bytes and time.

    A server that answers 413 and closes while the client is still sending makes the kernel
    reset the connection, and the client then sees a connection error instead of the 413 (it
    happened here with a chunked upload). Draining first, as nginx's lingering close does,
    lets the answer arrive; nothing drained is kept, and a body past the budget is cut off.
    """
    budget = _DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` if the client went away first.

    Raises:
        RequestError: 413 as soon as the declared or received size passes ``limit``; nothing
            past the limit is kept (see :func:`_discard_rest`).
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _discard_rest(receive)
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            if more:
                await _discard_rest(receive)
            raise _too_large(limit)
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def last_event_id(scope: Scope) -> int | None:
    """The ``Last-Event-ID`` header as a token index, or ``None`` when absent."""
    raw = header(scope, b"last-event-id")
    if raw is None:
        return None
    value = raw.strip()
    if not value.isdigit() or len(value) > 9:
        raise RequestError(
            400,
            f"Invalid Last-Event-ID header: {raw.decode('latin-1')[:40]!r}. Send the 'id' of "
            "the last content frame received (an integer >= 0) to resume after it.",
            param="Last-Event-ID",
        )
    return int(value)
