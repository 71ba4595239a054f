"""The error hierarchy: one root, typed leaves, each saying whether a retry could help.

::

    StreamkitError(.url, .partial_text, .retryable)
    ├─ TransportError ─ ConnectError · ProtocolError · StreamInterrupted
    │   └─ ReadTimeout ─ FirstTokenTimeout · IdleTimeout · TotalTimeout
    ├─ APIStatusError(.status_code, .retry_after, .code)
    │   ├─ AuthError (401/403) · BadRequestError (400/422) · NotFoundError (404)
    │   └─ RateLimitError (429) · ServerError (5xx)
    ├─ StreamCancelled    the user stopped the stream (Stop button, task cancel, Ctrl-C)
    └─ UsageError         a bad argument or setting (also a ``ValueError``)
        ├─ UnpricedModelError   no price is known for a model (:mod:`streamkit.cost`)
        └─ PriceTableError      a price entry or price file is invalid

Third-party exceptions (openai, httpx) are translated once, at the transport edge, with
``raise X(...) from exc``. Every error raised after a stream started carries the text received so
far in ``partial_text``: nothing a user paid for is silently dropped.
"""

from __future__ import annotations

__all__ = [
    "APIStatusError",
    "AuthError",
    "BadRequestError",
    "ConnectError",
    "FirstTokenTimeout",
    "IdleTimeout",
    "NotFoundError",
    "PriceTableError",
    "ProtocolError",
    "RateLimitError",
    "ReadTimeout",
    "ServerError",
    "StreamCancelled",
    "StreamInterrupted",
    "StreamkitError",
    "TotalTimeout",
    "TransportError",
    "UnpricedModelError",
    "UsageError",
]


class StreamkitError(Exception):
    """Root of every error streamkit raises.

    Attributes:
        url: the endpoint involved, when there is one.
        partial_text: the text received before the failure ("" if none).
    """

    retryable: bool = False

    def __init__(self, message: str, *, url: str | None = None, partial_text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.partial_text = partial_text

    @property
    def kind(self) -> str:
        """The class name, as shown to users ("RateLimitError: ...")."""
        return type(self).__name__

    def __str__(self) -> str:
        if self.partial_text:
            return f"{self.message} ({len(self.partial_text)} characters received before it)"
        return self.message


class TransportError(StreamkitError):
    """The connection failed: nothing or only part of a response arrived."""

    retryable = True


class ConnectError(TransportError):
    """No connection could be made (refused, unresolvable host, bad URL)."""


class ReadTimeout(TransportError):
    """The server stopped sending for longer than the read timeout."""


class FirstTokenTimeout(ReadTimeout):
    """No content token arrived within ``first_token_timeout`` seconds of sending the request."""


class IdleTimeout(ReadTimeout):
    """The stream stalled: nothing arrived for ``idle_timeout`` seconds between chunks."""


class TotalTimeout(ReadTimeout):
    """The whole stream took longer than its deadline (``StreamManager(timeout=)``)."""


class ProtocolError(TransportError):
    """The server sent data that is not a valid stream (malformed SSE or JSON)."""

    retryable = False


class StreamInterrupted(TransportError):
    """The connection dropped mid-stream, before the server said it was done."""


class APIStatusError(StreamkitError):
    """The server answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        retry_after: seconds the server asked us to wait (``Retry-After``), if it said.
        code: the machine-readable ``error.code`` of an OpenAI-style body, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        url: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        partial_text: str = "",
    ) -> None:
        super().__init__(message, url=url, partial_text=partial_text)
        self.status_code = status_code
        self.retry_after = retry_after
        self.code = code


class AuthError(APIStatusError):
    """401/403: the API key is missing, wrong, or lacks access. Never retried."""


class BadRequestError(APIStatusError):
    """400/422: the request itself is wrong (a bad parameter). Never retried."""


class NotFoundError(APIStatusError):
    """404: unknown model or wrong base URL path. Never retried."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` says how long to wait when the server tells."""

    retryable = True


class ServerError(APIStatusError):
    """5xx: the server failed; usually worth a retry."""

    retryable = True


class StreamCancelled(StreamkitError):
    """The user stopped the stream; ``partial_text`` holds what had arrived."""


class UsageError(StreamkitError, ValueError):
    """A bad argument or setting, caught before anything is sent."""


class UnpricedModelError(UsageError):
    """No price is known for a model: pricing it as free would hide a real cost.

    Attributes:
        model: the model asked about.
        known: the models the table prices explicitly (the price library's are not listed).
    """

    def __init__(self, model: str, known: list[str]) -> None:
        shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        super().__init__(
            f"no price for model {model!r} (priced here: {shown or 'none'}); add one with "
            "PriceTable.with_prices({...}) or a price file, or pass strict=False for an "
            "explicit Unpriced marker"
        )
        self.model = model
        self.known = known


class PriceTableError(UsageError):
    """A price entry or a price file is invalid (negative, not a number, unknown currency,
    unparseable); the message names the entry and the file."""
