"""The live Markdown view: a reply rendered as GitHub-flavoured Markdown while it streams.

:class:`MarkdownView` is a :class:`~streamkit.render.delta.DeltaView` whose browser side renders
Markdown: the kernel still sends only each flush's new text (the delta protocol: stream id and
sequence number per message, a snapshot on a gap, acknowledgements for render lag), and the page
renders. The one saved snapshot is the raw Markdown (:attr:`MarkdownText.markdown`), rendered
by the page that opens it; ``text/plain`` keeps the transcript for nbval and plain readers.

The browser side (``static/markdown.js``, built from ``js/src/`` by ``js/build.sh``; markdown-it,
highlight.js and DOMPurify bundled in, nothing fetched at run time):

- **Live and cheap per frame.** At most one render per animation frame. Complete top-level
  blocks (a block followed by a blank line and another block) are rendered once into elements
  that are never touched again; only the last open block is rendered again, so a frame costs
  what the last block holds, not the whole reply (re-rendering a 60,000-character reply on every
  update froze a page for ~0.6 s).
- **No raw markup flashes.** An unclosed code fence shows as code while it streams; an unclosed
  ``**``, ``*``, ``_``, ``~~`` or code span is closed at the end of the text; an unfinished last
  line whose meaning its next characters decide (a fence, ``#``, ``-``, a table row) and a table
  header still waiting for its delimiter row are held back until they resolve; an unfinished
  link shows as its text. At the end of the stream everything is shown as it is.
- **Safe by construction.** markdown-it runs with ``html: false`` (raw HTML in a reply is shown
  as text) and every fragment passes DOMPurify before it reaches the DOM: no ``<script>``, no
  ``on*`` attributes, no ``javascript:`` links, no iframes. Links open in a new tab with
  ``rel="noopener noreferrer"``. (JupyterLab trusts outputs produced in the session, so
  ``display(Markdown(reply))`` would run a reply's ``<img onerror>``.)
- **Highlighted code** (highlight.js, common languages, named fences only: guessing a language
  runs every grammar), in the editor's theme colours; prose in the content font.
- **Copy buttons:** one for the reply's raw Markdown, one per code block for its code
  (``navigator.clipboard``, else a hidden textarea and ``execCommand("copy")``).
- **Live figures** in the view's bar: time to first token, tokens/s and tokens so far while it
  streams (carried in the delta messages, no extra message), then usage and cost (when the model
  is priced) once it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import traitlets

from ..batching import AdaptivePolicy
from ..cost import Price, PriceTable, cost_of
from ..events import Event, StreamStart, TokenDelta
from ..result import StreamResult
from .delta import DeltaText, DeltaView

__all__ = ["MarkdownText", "MarkdownView", "stream_figures"]

_STATIC = Path(__file__).with_name("static")
_prices: PriceTable | None = None


class MarkdownText(DeltaText):
    """A :class:`DeltaText` whose browser side renders the text as sanitized Markdown.

    Attributes:
        markdown: the saved snapshot: the raw Markdown of a finished reply (empty while one
            streams). A page that opens the widget later renders it.
        figures: the figures line once the stream ended (usage, cost); while it streams the
            figures travel in the delta messages.
    """

    _esm = _STATIC / "markdown.js"
    _css = str(_STATIC / "markdown.css")  # a path: anywidget reads the file
    markdown = traitlets.Unicode("").tag(sync=True)
    figures = traitlets.Unicode("").tag(sync=True)


def stream_figures(
    *,
    ttft: float | None,
    tokens: int,
    tokens_per_second: float | None,
    usage: tuple[int, int] | None = None,
    cost_usd: float | None = None,
) -> str:
    """The figures line: ``TTFT 412 ms · 24.8 tok/s · 57 tokens`` (plus usage and cost).

    Args:
        ttft: time to first token (seconds), None before it.
        tokens: content chunks so far (or the completion tokens reported).
        tokens_per_second: the decode rate so far, None with fewer than two tokens.
        usage: ``(prompt_tokens, completion_tokens)`` as the server reported them.
        cost_usd: what the request cost, when the model is priced.
    """
    parts = []
    if ttft is not None:
        parts.append(f"TTFT {ttft * 1000:.0f} ms")
    if tokens_per_second is not None:
        parts.append(f"{tokens_per_second:.1f} tok/s")
    if usage is not None:
        parts.append(f"{usage[0]} in · {usage[1]} out tokens")
    else:
        parts.append(f"{tokens} token" + ("" if tokens == 1 else "s"))
    if cost_usd is not None:
        parts.append(f"${cost_usd:.6f}" if cost_usd < 0.01 else f"${cost_usd:.4f}")
    return " · ".join(parts)


class MarkdownView(DeltaView):
    """A live view that renders the reply as Markdown in the browser, sending only new text.

    The default view in a live JupyterLab (:func:`streamkit.render.auto_view`). Same panel as
    :class:`~streamkit.render.delta.DeltaView` (header, Stop button, status line, render-lag
    acknowledgements, the adaptive flush policy), with the Markdown widget as its text and the
    live figures in the widget's bar. The module docstring says how the page renders.

    Args:
        max_tokens: the starting flush count (1: the first token shows at once).
        max_delay: the starting flush delay (seconds).
        adaptive: let the policy choose the flush settings as the stream runs.
        policy: the policy to use (default: ``AdaptivePolicy(clock=clock)``).
        clock: the clock for arrival, flush and acknowledgement times (``time.perf_counter``).
        embedded: the panel is shown inside another widget (a chat box): the view never
            displays itself (by default it does on its first stream, unless displayed already).

    Attributes:
        text_widget: the :class:`MarkdownText`.
    """

    text_widget: MarkdownText

    def __init__(
        self,
        *,
        max_tokens: int = 1,
        max_delay: float = 0.04,
        adaptive: bool = True,
        policy: AdaptivePolicy | None = None,
        clock: Callable[[], float] = time.perf_counter,
        embedded: bool = False,
    ) -> None:
        super().__init__(
            max_tokens=max_tokens,
            max_delay=max_delay,
            adaptive=adaptive,
            policy=policy,
            clock=clock,
        )
        self.embedded = embedded
        self._sent_at: float | None = None
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._tokens = 0

    def _ipython_display_(self) -> None:
        """Display the panel (see WidgetView), unless it lives inside another widget."""
        if not self.embedded:
            super()._ipython_display_()

    def _new_text_widget(self) -> MarkdownText:
        return MarkdownText()

    def _save_snapshot(self, text: str) -> None:
        self.text_widget.markdown = text
        if not text:
            self.text_widget.figures = ""

    def on_event(self, event: Event) -> None:
        """Take one event: counts tokens and times for the figures, then buffers it."""
        if isinstance(event, TokenDelta):
            if self._first_at is None:
                self._first_at = event.time
            self._last_at = event.time
            self._tokens += 1
        elif isinstance(event, StreamStart) and self._sent_at is None:
            self._sent_at = event.sent_at
        super().on_event(event)

    def _on_start(self) -> None:
        self._sent_at = None
        self._first_at = self._last_at = None
        self._tokens = 0
        super()._on_start()

    def _delta_extra(self) -> dict[str, Any] | None:
        first, last, sent = self._first_at, self._last_at, self._sent_at
        ttft = first - sent if first is not None and sent is not None else None
        rate = None
        if first is not None and last is not None and self._tokens > 1 and last > first:
            rate = (self._tokens - 1) / (last - first)
        return {"figures": stream_figures(ttft=ttft, tokens=self._tokens, tokens_per_second=rate)}

    def _on_finish(self, result: StreamResult) -> None:
        usage = result.usage
        cost = None
        if usage is not None and result.model:
            global _prices
            if _prices is None:
                _prices = PriceTable.default()
            if isinstance(_prices.price_for(result.model, strict=False), Price):
                cost = cost_of(usage, result.model, _prices).total_usd
        self.text_widget.figures = stream_figures(
            ttft=result.ttft,
            tokens=result.output_tokens,
            tokens_per_second=result.tokens_per_second,
            usage=(usage.prompt_tokens, usage.completion_tokens) if usage is not None else None,
            cost_usd=cost,
        )
        super()._on_finish(result)
