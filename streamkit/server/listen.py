"""The listening socket every way of running the simulator serves on, bound before uvicorn starts
(so port 0 is known at once and a client that connects early waits in the backlog)."""

from __future__ import annotations

import socket

from ..errors import UsageError

__all__ = ["BACKLOG", "bind"]

BACKLOG = 2048
"""Connections waiting to be accepted, per socket (uvicorn's default)."""


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: accepted sockets inherit the protocol number, and asyncio
    # sets TCP_NODELAY only on sockets whose proto says TCP. Without it, a keep-alive client's
    # delayed ACK holds back the first chunk after the headers by ~40 ms (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Lets a restarted server take its port back while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Workers: every socket bound to the port with this set, before it listens, shares
            # the port; the kernel spreads new connections over them (by a hash of the
            # addresses).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        # Listen now, not when uvicorn starts: a client that connects as soon as the address is
        # announced waits in the backlog instead of being refused.
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot bind the simulator to {host}:{port}: {exc.strerror or exc} "
            "(pick another port, or port 0 for any free one)"
        ) from exc
    return sock
