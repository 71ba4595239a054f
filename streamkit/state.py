"""An observable chat state: what is streaming now, what was said before, what went wrong.

:class:`ChatState` is what a UI binds to: ``is_streaming``, ``current_text``, the ``history`` of
finished messages, ``last_error``, and ``subscribe`` for change callbacks. Passed to
:meth:`streamkit.Client.chat`, it also makes the chat multi-turn: the history is sent as context
and the reply is appended to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .errors import StreamkitError
from .events import Event, StreamError, StreamRetry, StreamStart, TokenDelta
from .result import StreamResult

__all__ = ["Change", "ChatMessage", "ChatState"]

log = logging.getLogger("streamkit")

Change = Literal["start", "token", "end", "error", "clear"]


@dataclass(frozen=True)
class ChatMessage:
    """One finished message. Assistant messages keep their :class:`StreamResult`."""

    role: str
    content: str
    result: StreamResult | None = None

    def to_openai(self) -> dict[str, str]:
        """The message as the Chat Completions API takes it."""
        return {"role": self.role, "content": self.content}


class ChatState:
    """Observable state of one conversation.

    Subscribers are called as ``callback(state, change)`` on every change, on the thread that runs
    the stream; ``change`` is one of ``start``, ``token``, ``end``, ``error``, ``clear``. A failing
    subscriber is logged and skipped, never allowed to break the stream.

    Args:
        system: an optional system prompt sent first in every request.
    """

    def __init__(self, system: str | None = None) -> None:
        self.system = system
        self.history: list[ChatMessage] = []
        self.is_streaming = False
        self.last_error: StreamkitError | None = None
        self.last_result: StreamResult | None = None
        self._parts: list[str] = []
        self._subscribers: list[Callable[[ChatState, Change], None]] = []

    @property
    def current_text(self) -> str:
        """The reply being streamed now (or the last one, until the next starts)."""
        return "".join(self._parts)

    def subscribe(self, callback: Callable[[ChatState, Change], None]) -> Callable[[], None]:
        """Call ``callback(state, change)`` on every change; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def messages(self, prompt: str | None = None) -> list[dict[str, str]]:
        """The conversation as OpenAI messages: system, history, then ``prompt`` if given."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        out += [m.to_openai() for m in self.history]
        if prompt is not None:
            out.append({"role": "user", "content": prompt})
        return out

    def clear(self) -> None:
        """Forget the history and the last error."""
        self.history.clear()
        self._parts.clear()
        self.last_error = None
        self.last_result = None
        self._notify("clear")

    def begin(self, prompt: str | None) -> None:
        """A request for ``prompt`` is about to be sent."""
        if prompt is not None:
            self.history.append(ChatMessage("user", prompt))
        self._parts = []
        self.is_streaming = True
        self.last_error = None
        self._notify("start")

    def on_event(self, event: Event) -> None:
        """Fold one stream event in (called by the stream runner)."""
        if isinstance(event, TokenDelta):
            self._parts.append(event.text)
            self._notify("token")
        elif isinstance(event, StreamError):
            self.last_error = event.error
        elif isinstance(event, StreamRetry) and event.discarded:
            # The retry starts over: the text so far is void (the result drops it too).
            self._parts = []
            self._notify("token")
        elif isinstance(event, StreamStart):
            pass

    def finish(self, result: StreamResult) -> None:
        """The stream is over, whatever the outcome; the reply (even partial) joins the history."""
        self.is_streaming = False
        self.last_result = result
        self._parts = [result.text]
        if result.text or result.ok:
            self.history.append(ChatMessage("assistant", result.text, result))
        self._notify("end" if result.ok else "error")

    def _notify(self, change: Change) -> None:
        for callback in list(self._subscribers):
            try:
                callback(self, change)
            except Exception:
                log.exception("a ChatState subscriber failed on %r; skipped", change)

    def __repr__(self) -> str:
        status = "streaming" if self.is_streaming else "idle"
        return f"<ChatState {status}, {len(self.history)} messages>"
