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
- **Thinking and tool calls.** A reasoning model's thinking fills a collapsed, dimmed
  "Thinking" section above the answer as it streams (plain text, escaped by construction; a click
  expands it), labelled "Thinking… 1.2 s" while it grows and "Thought for 2.3 s" once the answer
  (or a tool call) starts. Each tool call gets a card under the answer: the function's name and
  its arguments growing as they stream, pretty-printed once they are complete JSON. Both travel
  as delta messages of their own part (``"part": "reasoning"`` or ``"tool"``) on the same
  sequence numbers, so a snapshot carries every part; the saved state holds them once more
  (traits ``reasoning``, ``thought``, ``tools``) and ``value`` is an HTML transcript with the
  thinking in a ``<details>`` block.
- **Live figures** in the view's bar: time to first token, tokens/s and tokens so far while it
  streams (carried in the delta messages, no extra message), then usage and cost (when the model
  is priced) once it ends.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Unpack

import traitlets

from ..cost import Price, PriceTable, cost_of
from ..events import Event, ReasoningDelta, StreamRetry, StreamStart, TokenDelta, ToolCallDelta
from ..result import StreamResult
from ._base import joined
from .delta import DeltaOptions, DeltaText, DeltaView
from .widget import PRE_CLOSE, PRE_OPEN

__all__ = ["MarkdownText", "MarkdownView", "stream_figures"]

_STATIC = Path(__file__).with_name("static")
_prices: PriceTable | None = None


REASONING_GAP = 0.04
"""The shortest time between two thinking messages, in seconds: at most 25 a second, the
answer's own cap."""


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
    reasoning = traitlets.Unicode("").tag(sync=True)
    thought = traitlets.Unicode("").tag(sync=True)
    tools = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reasoning: list[str] = []
        self._tools: list[dict[str, str]] = []
        self._thought = ""

    def begin(self) -> int:
        """Start a new text: the reasoning and tool calls of the last one are forgotten too."""
        self._reasoning = []
        self._tools = []
        self._thought = ""
        return super().begin()

    def append_reasoning(self, text: str, extra: dict[str, Any] | None = None) -> int:
        """Send a piece of the thinking (``"part": "reasoning"``); returns its seq."""
        self._reasoning.append(text)
        return self.append(text, extra, part="reasoning")

    def append_tool(
        self, call: int, name: str | None, arguments: str, extra: dict[str, Any] | None = None
    ) -> int:
        """Send a piece of tool call ``call`` (its name in the first piece); returns its seq."""
        while len(self._tools) <= call:
            self._tools.append({"name": "", "arguments": ""})
        tool = self._tools[call]
        if name:
            tool["name"] = name
        tool["arguments"] += arguments
        fields: dict[str, Any] = {"call": call, **(extra or {})}
        if name:
            fields["name"] = name
        return self.append(arguments, fields, part="tool")

    def set_thought(self, label: str) -> None:
        """Keep the Thinking section's final label (``Thought for 2.3 s``) for snapshots."""
        self._thought = label

    @property
    def thought_label(self) -> str:
        """The label :meth:`set_thought` kept ("" while the model still thinks)."""
        return self._thought

    @property
    def reasoning_text(self) -> str:
        """The current stream's reasoning, as sent so far."""
        return joined(self._reasoning)

    @property
    def tool_calls(self) -> list[dict[str, str]]:
        """The current stream's tool calls so far: ``{"name", "arguments"}`` each."""
        return [dict(tool) for tool in self._tools]

    def snapshot_extra(self) -> dict[str, Any]:
        return {
            "reasoning": self.reasoning_text,
            "thought": self._thought,
            "tools": self.tool_calls,
        }


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
        embedded: the panel is shown inside another widget (a chat box): the view never
            displays itself (by default it does on its first stream, unless displayed already).
        **options: the :class:`~streamkit.render.delta.DeltaView` settings (``max_tokens``,
            ``max_delay``, ``adaptive``, ``policy``, ``clock``), with its defaults.

    Attributes:
        text_widget: the :class:`MarkdownText`.
    """

    text_widget: MarkdownText

    def __init__(self, *, embedded: bool = False, **options: Unpack[DeltaOptions]) -> None:
        super().__init__(**options)
        self.embedded = embedded
        self._sent_at: float | None = None
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._tokens = 0
        self._think_from: float | None = None  # the first reasoning piece's arrival
        self._think_to: float | None = None  # the latest one's
        self._held: list[str] = []  # reasoning not yet sent (see REASONING_GAP)
        self._held_at: float | None = None  # when reasoning was last sent

    def _ipython_display_(self) -> None:
        """Display the panel (see WidgetView), unless it lives inside another widget."""
        if not self.embedded:
            super()._ipython_display_()

    def _new_text_widget(self) -> MarkdownText:
        return MarkdownText()

    def _save_snapshot(self, text: str) -> None:
        widget = self.text_widget
        with widget.hold_sync():  # one state message: the page sees every part at once
            reasoning, tools = widget.reasoning_text, widget.tool_calls
            if self.streaming and not text:  # a new stream, or a restart: nothing is saved yet
                reasoning, tools = "", []
            thought = self._thought_label() if reasoning else ""
            widget.reasoning = reasoning
            widget.thought = thought
            widget.tools = tools
            widget.value = _html_transcript(text, reasoning, thought, tools)
            widget.markdown = text
            if not text:
                widget.figures = ""

    def _thought_label(self) -> str:
        start, end = self._think_from, self._think_to
        if start is None or end is None:
            return ""
        return f"Thought for {end - start:.1f} s"

    def _end_thinking(self, now: float) -> dict[str, Any]:
        """The first answer or tool piece after reasoning: the thinking's final label, once."""
        if self._think_from is None or self.text_widget.thought_label:
            return {}
        self._think_to = max(self._think_to or now, now)
        label = self._thought_label()
        self.text_widget.set_thought(label)
        return {"thought": label}

    def _on_piece(self, event: ReasoningDelta | ToolCallDelta) -> None:
        widget = self.text_widget
        if isinstance(event, ReasoningDelta):
            if self._think_from is None:
                self._think_from = event.time
            self._think_to = event.time
            self._held.append(event.text)
            # Coalesced like the answer: at most one thinking message per REASONING_GAP (a
            # reasoner streams ~100 pieces/s; the page needs ~25 updates/s). What is held goes
            # out with the next piece after the gap, or before any other event.
            if self._held_at is None or event.time - self._held_at >= REASONING_GAP:
                self._send_reasoning()
            return
        self._send_reasoning()
        thought = self._end_thinking(event.time)
        widget.append_tool(event.call_index, event.name, event.arguments_piece, thought)

    def _send_reasoning(self) -> None:
        if not self._held or self._think_from is None or self._think_to is None:
            return
        elapsed = self._think_to - self._think_from
        text, self._held = "".join(self._held), []
        self._held_at = self._think_to
        self.text_widget.append_reasoning(text, {"thinking": f"Thinking… {elapsed:.1f} s"})

    def on_event(self, event: Event) -> None:
        """Take one event: counts tokens and times for the figures, then buffers it."""
        if self._held and not isinstance(event, ReasoningDelta):
            self._send_reasoning()  # the thinking is complete before anything else is shown
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
        self._think_from = self._think_to = self._held_at = None
        self._held = []
        super()._on_start()

    def _on_retry(self, event: StreamRetry) -> None:
        if event.discarded:  # a restart: the thinking starts over with the new delta stream
            self._think_from = self._think_to = self._held_at = None
        super()._on_retry(event)

    def _delta_extra(self) -> dict[str, Any] | None:
        first, last, sent = self._first_at, self._last_at, self._sent_at
        ttft = first - sent if first is not None and sent is not None else None
        rate = None
        if first is not None and last is not None and self._tokens > 1 and last > first:
            rate = (self._tokens - 1) / (last - first)
        extra = {"figures": stream_figures(ttft=ttft, tokens=self._tokens, tokens_per_second=rate)}
        if first is not None:
            extra.update(self._end_thinking(first))
        return extra

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


def _html_transcript(text: str, reasoning: str, thought: str, tools: list[dict[str, str]]) -> str:
    """The saved ``value``: the thinking in a ``<details>`` block, the answer, the tool calls.

    Escaped text only (a model's words never become markup), for readers of the saved widget
    state that do not run the view's script.
    """
    parts = []
    if reasoning:
        summary = html.escape(thought or "Thinking", quote=False)
        body = html.escape(reasoning, quote=False)
        parts.append(f"<details><summary>{summary}</summary>{PRE_OPEN}{body}{PRE_CLOSE}</details>")
    parts.append(PRE_OPEN + html.escape(text, quote=False) + PRE_CLOSE)
    for tool in tools:
        name = html.escape(tool["name"], quote=False)
        arguments = html.escape(_pretty(tool["arguments"]), quote=False)
        parts.append(f"<p><code>{name}</code></p>{PRE_OPEN}{arguments}{PRE_CLOSE}")
    return "".join(parts)


def _pretty(arguments: str) -> str:
    """Tool-call arguments indented when they are complete JSON, as they came otherwise."""
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments
