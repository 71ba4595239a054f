"""What a chat stream comes from: the :class:`ChatSource` protocol and the request shapes it takes.

A :class:`~streamkit.client.Client`, a :class:`~streamkit.balance.LoadBalancer` and a test double
are all chat sources: anything with ``events(prompt, **request)``, a ``base_url`` label and a
default ``model``. Load runs, stream managers and chat runs are written against this protocol,
never against a concrete class.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from .errors import UsageError
from .events import Event

__all__ = ["ChatSource", "Prompt", "add_attempt_key", "messages_of"]

Prompt = str | Iterable[Mapping[str, Any]]
"""A user prompt, or a list of OpenAI chat messages."""


@runtime_checkable
class ChatSource(Protocol):
    """Anything that opens a chat stream: a :class:`~streamkit.Client`, a load balancer, a double.

    Attributes:
        base_url: where the streams go, for labels and error messages (a balancer's is its
            endpoints' roots, comma-separated: a label, not one URL).
        model: the model asked for when a call names none (None: the source decides).
    """

    @property
    def base_url(self) -> str:
        """Where the streams go (a label)."""
        ...

    @property
    def model(self) -> str | None:
        """The default model, if known."""
        ...

    def events(self, prompt: Prompt, **request: Any) -> AsyncIterator[Event]:
        """Stream one chat completion as events (StreamStart, TokenDelta…, StreamEnd)."""
        ...


def messages_of(prompt: Prompt) -> list[Mapping[str, Any]]:
    """The prompt as a list of chat messages (a string is one user message).

    Raises:
        UsageError: an empty list of messages.
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages:
        raise UsageError("messages is empty: pass a prompt string or at least one message")
    return messages


def add_attempt_key(request: dict[str, Any]) -> str | None:
    """Name the logical request in ``extra_body.streamkit.attempt_key`` (bundled server only).

    Only when the caller already sends a ``streamkit`` field, i.e. talks to the bundled server:
    a real provider would reject the unknown field. A key already there is kept, so every
    attempt of one request (on any endpoint) carries the same key.
    """
    extra = request.get("extra_body")
    settings = extra.get("streamkit") if isinstance(extra, Mapping) else None
    if not isinstance(settings, Mapping):
        return None
    key = settings.get("attempt_key")
    if isinstance(key, str):
        return key
    key = uuid.uuid4().hex
    request["extra_body"] = {**extra, "streamkit": {**settings, "attempt_key": key}}  # type: ignore[dict-item]
    return key
