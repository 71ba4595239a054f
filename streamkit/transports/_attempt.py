"""What a transport reads to open one attempt of a stream: a read-only view, defined down here.

A transport knows nothing of the layer that retries it. That layer (:mod:`streamkit.resume`)
hands each attempt an object with these read-only fields (its :class:`~streamkit.resume.Attempt`
satisfies the protocol); what the transport learns on the way back (the server's ids, its
``retry:`` delay) travels as fields of the events it yields, never as writes into this object.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ResumeFrom"]


class ResumeFrom(Protocol):
    """Where an attempt starts: after which event id, at which token index, with ids or not.

    Attributes:
        use_ids: False makes the transport ignore the server's ids, as if it sent none.
        last_event_id: the SSE id to send as ``Last-Event-ID``; None to start from the beginning.
        resume_after: the index of the last token kept (WebSocket ``resume_after``); None to
            start from the beginning.
        first_index: the index the attempt's first token should have.
    """

    @property
    def use_ids(self) -> bool: ...

    @property
    def last_event_id(self) -> str | None: ...

    @property
    def resume_after(self) -> int | None: ...

    @property
    def first_index(self) -> int: ...
