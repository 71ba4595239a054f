"""What the stream tests share: the transports, a quick retry policy, and an event log."""

from __future__ import annotations

import streamkit as sk
from streamkit.events import Event

TRANSPORTS = ["sse", "generic-sse", "fast-sse", "ws"]
FAST = sk.RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
"""Retries that do not slow a test down."""


class EventLog:
    """An observer that keeps every event of the chats it sees (``observers=[log]``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def finish(self, result: sk.StreamResult) -> None:
        pass
