"""The plain-text view: a stream written to a file as it arrives (terminal, pipe, notebook cell).

The reply's text, and nothing else, goes to ``out``; status lines go to ``status`` when one is
given, so ``streamkit chat > reply.txt`` stores just the reply. Every flush calls ``out.flush()``:
a pipe or a notebook cell then sees the text when it arrives, not when a buffer fills.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from ..result import StreamResult
from ._base import BufferedView, failure_line

__all__ = ["ConsoleView"]


class ConsoleView(BufferedView):
    """Writes the text of a stream to a file as it arrives, then how it ended.

    On finish it ends the text with a newline; a completed stream writes its one-line
    :meth:`~streamkit.result.StreamResult.summary` to ``status`` (if given); a stopped stream
    writes ``[stopped]`` and a failed one ``[failed: <Kind>: <message>]`` to ``status``, or to
    ``out`` when there is no ``status``. The partial text already written is kept.

    Args:
        out: where the text goes; None means ``sys.stdout`` at the time of writing (so it follows
            redirections such as pytest's capture or ``contextlib.redirect_stdout``).
        status: where the summary and status lines go (e.g. ``sys.stderr``); None: no summary,
            and failures are written to ``out``.
        max_tokens: write after this many tokens are waiting.
        max_delay: write once the first waiting token has waited this long (seconds).
        clock: the clock for flush times (``time.perf_counter``).
    """

    def __init__(
        self,
        out: TextIO | None = None,
        status: TextIO | None = None,
        *,
        max_tokens: int = 4,
        max_delay: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(max_tokens=max_tokens, max_delay=max_delay, clock=clock)
        self._out = out
        self._status = status

    @property
    def out(self) -> TextIO:
        """The file the text is written to."""
        return self._out if self._out is not None else sys.stdout

    def _render(self, new_text: str) -> None:
        out = self.out
        out.write(new_text)
        out.flush()

    def _on_finish(self, result: StreamResult) -> None:
        out = self.out
        text = self.text
        if text and not text.endswith("\n"):
            # End the reply's last line, so whatever comes next (a prompt, a status) starts fresh.
            out.write("\n")
        # Flush the text before any status line, so a terminal showing both files in one
        # window prints them in order.
        out.flush()
        line = failure_line(result)
        if line is None and self._status is not None:
            line = result.summary()
        if line is not None:
            target = self._status if self._status is not None else out
            target.write(line + "\n")
            target.flush()
