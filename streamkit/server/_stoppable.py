"""Servers stopped by leaving a ``with`` block: the context-manager half they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Stoppable"]


class Stoppable(ABC):
    """A server that is a context manager: ``with`` hands it back and :meth:`stop` ends it."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
