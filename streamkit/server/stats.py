"""The server's live counters (:class:`ServerStats`), kept by the app, the capacity model and
token production alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ServerStats", "exposition"]


@dataclass(slots=True)
class ServerStats:
    """Counters, updated on the server's event loop only (plain ints: no locks needed there;
    other threads may read them, and a read is at worst one event stale).

    Attributes:
        requests: HTTP requests received, on any route.
        errors: responses with a 4xx or 5xx status.
        streams_started: streaming completions whose headers were sent.
        streams_completed: streams that sent ``[DONE]``.
        streams_disconnected: streams the client abandoned before the end.
        streams_aborted: streams the server cut short because it was shutting down.
        streams_dropped: streams whose connection a ``drop`` fault cut.
        active_streams: streams in progress now.
        tokens_sent: completion pieces sent, streamed or not, over HTTP or WebSocket.
        faults_injected: faults that fired (a status answered, a stall, a drop, …).
        rate_limited: requests refused by ``max_concurrent_streams`` or
            ``requests_per_minute``.
        ws_connections: WebSocket connections accepted.
        ws_active_connections: WebSocket connections open now.
        ws_streams_started: WebSocket streams that sent ``start``.
        ws_streams_completed: WebSocket streams that sent ``end``.
        ws_streams_cancelled: WebSocket streams stopped by ``chat.cancel``.
        ws_active_streams: WebSocket streams in progress now.
        queued: completions waiting for a place in the batch now (``max_batch``; always 0
            without a capacity model).
        running: completions in the batch now, streamed or not, over HTTP or WebSocket
            (counted only with a capacity model: ``max_batch`` or ``decode_capacity``).
    """

    requests: int = 0
    errors: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    streams_aborted: int = 0
    streams_dropped: int = 0
    active_streams: int = 0
    tokens_sent: int = 0
    faults_injected: int = 0
    rate_limited: int = 0
    ws_connections: int = 0
    ws_active_connections: int = 0
    ws_streams_started: int = 0
    ws_streams_completed: int = 0
    ws_streams_cancelled: int = 0
    ws_active_streams: int = 0
    queued: int = 0
    running: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict (a copy)."""
        return asdict(self)


def exposition(stats: ServerStats) -> str:
    """The counters in Prometheus' text format (``GET /metrics``), as vLLM's server exposes its
    own: one ``streamkit_<name>`` sample per field, so a scraper or ``curl`` reads them."""
    lines = []
    for name, value in asdict(stats).items():
        lines.append(f"# TYPE streamkit_{name} gauge")
        lines.append(f"streamkit_{name} {value}")
    return "\n".join(lines) + "\n"
