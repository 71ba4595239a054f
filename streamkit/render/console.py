"""The plain-text view: a stream written to a file as it arrives (terminal, pipe, notebook cell).

The reply's text, and nothing else, goes to ``out``; status lines go to ``status`` when one is
given, so ``streamkit chat > reply.txt`` stores just the reply. Every flush calls ``out.flush()``:
a pipe or a notebook cell then sees the text when it arrives, not when a buffer fills.

A retry is announced on ``status``, or on ``out`` without one (``[retry] connection lost after 37
tokens — resuming in 1.2 s (2/5)``); a resume then continues the text where it broke. A restart
cannot take back text already written, so it writes ``[restarted: 37 tokens discarded]`` on a line
of its own in ``out``, and the reply again below it.

A reasoning model's thinking goes to ``reasoning`` (default: ``status``, else ``sys.stderr``) as it
arrives, dimmed on a terminal, so ``out`` stays the answer; each tool call is written there as a
line of its own when the stream ends: ``[tool call] get_weather({"city": "Paris"})``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from ..events import ReasoningDelta, StreamRetry, ToolCallDelta
from ..result import StreamResult
from ._base import BufferedView, failure_line, retry_line

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
        summary: the line written to ``status`` when a stream completes (default
            :meth:`StreamResult.summary <streamkit.result.StreamResult.summary>`); the CLI adds
            the cost.
        reasoning: where reasoning and tool-call lines go; None: ``status``, else
            ``sys.stderr`` at the time of writing.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        status: TextIO | None = None,
        *,
        max_tokens: int = 4,
        max_delay: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
        summary: Callable[[StreamResult], str] | None = None,
        reasoning: TextIO | None = None,
    ) -> None:
        super().__init__(max_tokens=max_tokens, max_delay=max_delay, clock=clock)
        self._summary = summary
        self._out = out
        self._status = status
        self._reasoning = reasoning
        self._last_char = ""  # the last character written to out in this stream
        self._thinking = False  # reasoning is being written (its line is open)

    @property
    def out(self) -> TextIO:
        """The file the text is written to."""
        return self._out if self._out is not None else sys.stdout

    @property
    def side(self) -> TextIO:
        """The file reasoning and tool calls are written to."""
        if self._reasoning is not None:
            return self._reasoning
        return self._status if self._status is not None else sys.stderr

    def _on_piece(self, event: ReasoningDelta | ToolCallDelta) -> None:
        if not isinstance(event, ReasoningDelta):
            return  # tool calls are written whole, when the stream ends
        side = self.side
        dim = _is_tty(side)
        side.write(f"\x1b[2m{event.text}\x1b[0m" if dim else event.text)
        side.flush()
        self._thinking = True

    def _end_thinking(self) -> None:
        if self._thinking:
            self._thinking = False
            self.side.write("\n")
            self.side.flush()

    def _render(self, new_text: str) -> None:
        self._end_thinking()
        out = self.out
        out.write(new_text)
        out.flush()
        self._last_char = new_text[-1:]

    def _on_start(self) -> None:
        self._last_char = ""
        self._thinking = False

    def _on_retry(self, event: StreamRetry) -> None:
        out = self.out
        # As failure lines do: to status when given (out keeps a clean transcript), else to out,
        # on a line of its own (a leading newline when the text is mid-line).
        lead = "" if self._last_char in ("", "\n") else "\n"
        target = self._status if self._status is not None else out
        target.write(f"{lead}[retry] {retry_line(event)}\n")
        target.flush()
        if target is out:
            lead = ""
            self._last_char = "\n"
        if event.discarded:
            # Text already written cannot be taken back: mark it void, then start afresh.
            out.write(f"{lead}[restarted: {event.discarded} tokens discarded]\n")
            out.flush()
            self._last_char = "\n"

    def _on_finish(self, result: StreamResult) -> None:
        out = self.out
        text = self.text
        if text and not text.endswith("\n"):
            # End the reply's last line, so whatever comes next (a prompt, a status) starts fresh.
            out.write("\n")
        # Flush the text before any status line, so a terminal showing both files in one
        # window prints them in order.
        out.flush()
        self._end_thinking()
        if result.tool_calls:
            side = self.side
            for call in result.tool_calls:
                side.write(f"[tool call] {call.name or '?'}({call.arguments})\n")
            side.flush()
        line = failure_line(result)
        if line is None and self._status is not None:
            line = self._summary(result) if self._summary is not None else result.summary()
        if line is not None:
            target = self._status if self._status is not None else out
            target.write(line + "\n")
            target.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or minimal file object
        return False
