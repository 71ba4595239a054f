"""fast-sse's keep-alive pool: HTTP/1.1 connections per (scheme, host, port), and opening a stream.

A connection goes back to the pool only when its response was read to the end and the server did
not ask to close; a request on a pooled connection that dies before any response byte is retried
once on a fresh one (the server closed an idle keep-alive connection).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from .. import __version__
from ..errors import ConnectError, UsageError
from ._common import (
    describe,
    error_fields,
    not_event_stream,
    retry_after_from_headers,
    status_error,
)
from ._http1 import Clock, Connection, Failure, Key, TimeoutFailure

__all__ = ["FastSSEPool", "discard", "open_stream", "release", "request_headers"]

_USER_AGENT = f"streamkit/{__version__}"


class FastSSEPool:
    """Keep-alive HTTP/1.1 connections of one event loop, per (scheme, host, port).

    Not thread-safe and bound to the loop that first uses it (a :class:`~streamkit.Client`
    keeps one per loop). There is no limit on connections: a load test sets its own concurrency.

    Args:
        timeout: seconds to connect (TLS handshake included) and between reads of a response.
        ssl_context: for ``https``; default ``ssl.create_default_context()``, made on first use.
    """

    def __init__(self, timeout: float = 60.0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = float(timeout)
        self._ssl = ssl_context
        self._idle: dict[Key, dict[Connection, None]] = {}
        self._open: set[Connection] = set()
        self._targets: dict[str, tuple[Key, bytes]] = {}
        self.connections_opened = 0
        """How many connections this pool has opened (reuse keeps it low)."""

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool for a request."""
        return sum(len(conns) for conns in self._idle.values())

    def _target(self, url: str) -> tuple[Key, bytes]:
        """The pool key and the request line and Host header of ``url`` (parsed once per URL)."""
        known = self._targets.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in ("http", "https") or not host:
            raise UsageError(f"{url!r} is not an http(s) URL")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise UsageError(f"{url!r} has an invalid port") from exc
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown = f"[{host}]" if ":" in host else host
        if parts.port is not None and port != (443 if scheme == "https" else 80):
            shown = f"{shown}:{port}"
        start = f" {path} HTTP/1.1\r\nhost: {shown}\r\n".encode()
        target = ((scheme, host, port), start)
        if len(self._targets) < 256:
            self._targets[url] = target
        return target

    def prepare(self, url: str) -> None:
        """Do ``url``'s one-time setup now: parse it, and make the TLS context for ``https``.

        A request calls this before its clock starts, so the first request's TTFB does not
        count building the TLS context (its handshake, on the new connection, it does count).

        Raises:
            UsageError: ``url`` is not an http(s) URL.
        """
        key, _ = self._target(url)
        if key[0] == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()

    def _take(self, key: Key) -> Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn, _ = conns.popitem()  # the most recently used: the least likely to be stale
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.idle = False
                return conn
            self._open.discard(conn)
        return None

    async def _connect(self, key: Key, url: str) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self.timeout, key, loop, self._forget),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectError(
                f"cannot connect to {url}: timed out after {self.timeout:g} s "
                "(is the server up? check base_url)",
                url=url,
            ) from exc
        except OSError as exc:  # refused, unreachable, unresolvable, TLS failures
            raise ConnectError(
                f"cannot connect to {url}: {describe(exc)} (is the server running? check base_url)",
                url=url,
            ) from exc
        self.connections_opened += 1
        self._open.add(conn)
        return conn

    def _release(self, conn: Connection) -> bool:
        """Pool ``conn`` if its response ended cleanly; otherwise close it. True if pooled."""
        if not conn.reusable():
            self._discard(conn)
            return False
        conn.idle = True
        conn._parser = None
        conn.reads = []
        conn._raw = []
        self._idle.setdefault(conn.key, {})[conn] = None
        return True

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _forget(self, conn: Connection) -> None:
        """An idle connection was closed by the server."""
        conns = self._idle.get(conn.key)
        if conns is not None:
            conns.pop(conn, None)
        self._open.discard(conn)

    async def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        last_id: str | None,
        clock: Clock,
    ) -> Connection:
        """Send one request and wait for its headers, on a pooled connection if one is idle.

        Raises:
            ConnectError: no connection could be made.
            Failure: the connection failed before the headers arrived.
        """
        key, start = self._target(url)
        lines = [method.encode("ascii"), start]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise UsageError(f"the header {name!r} contains a line break")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            lines.append(b"content-length: %d\r\n\r\n" % len(body))
            lines.append(body)
        else:
            lines.append(b"\r\n")
        request = b"".join(lines)
        conn = self._take(key)
        if conn is not None:
            try:
                conn.send(request, last_id, clock)
                await conn.head()
                return conn
            except Failure as failure:
                if conn.received or isinstance(failure, TimeoutFailure):
                    raise
                # A stale keep-alive connection (closed by the server while idle): once more on
                # a fresh one. Nothing of the response arrived, so the request was not answered.
            finally:
                if not conn.headers_done:
                    self._discard(conn)
        conn = await self._connect(key, url)
        try:
            conn.send(request, last_id, clock)
            await conn.head()
        finally:
            if not conn.headers_done:
                self._discard(conn)
        return conn

    async def aclose(self) -> None:
        """Close every connection, idle or in use (a stream in use then ends interrupted)."""
        for conn in list(self._open):
            conn.fail(Failure("the client was closed"))
            conn.close()
        self._open.clear()
        self._idle.clear()


def request_headers(
    headers: Mapping[str, str] | None, last_event_id: str | None, json_body: bool
) -> dict[str, str]:
    out = {
        "user-agent": _USER_AGENT,
        "accept": "text/event-stream",
        "accept-encoding": "identity",
        "cache-control": "no-cache",
    }
    if json_body:
        out["content-type"] = "application/json"
    for name, value in (headers or {}).items():
        out[name.lower()] = value
    if last_event_id is not None:
        out["last-event-id"] = last_event_id
    return out


async def open_stream(
    pool: FastSSEPool,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    json_body: object,
    last_event_id: str | None,
    partial: list[str] | None,
    clock: Clock = time.perf_counter,
) -> Connection:
    """Send the request; return the connection once an event stream's headers are in.

    ``clock`` is the caller's: the response's stamps (``opened_at``, each read's arrival) are
    read from it.

    Raises:
        APIStatusError: an error status (typed by status, with ``retry_after``).
        ProtocolError: the answer is not an event stream.
        TransportError: the connection failed or timed out before the headers.
    """
    body = None
    if json_body is not None:
        body = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
    send = request_headers(headers, last_event_id, body is not None)
    try:
        conn = await pool._request(method, url, send, body, last_event_id, clock)
    except Failure as failure:
        raise failure.typed(url, "".join(partial or ())) from None
    if conn.status >= 400:
        try:
            raw = await conn.body()
        finally:
            pool._release(conn)  # an error body read to its end leaves a reusable connection
        message, code = error_fields(raw, conn.reason.decode("latin-1").strip() or "error")
        raise status_error(
            conn.status,
            message,
            url=url,
            code=code,
            retry_after=retry_after_from_headers(conn.headers),
            partial_text="".join(partial or ()),
        )
    if conn.decoder is None:
        pool._discard(conn)
        raise not_event_stream(url, conn.status, conn.headers.get("content-type"))
    return conn


def release(pool: FastSSEPool, conn: Connection) -> bool:
    """Give ``conn`` back to ``pool`` after its response was read to the end (True if kept)."""
    return pool._release(conn)


def discard(pool: FastSSEPool, conn: Connection) -> None:
    """Close ``conn`` and forget it: its response was left unread or failed."""
    pool._discard(conn)
