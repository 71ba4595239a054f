"""The delta view: ships only each flush's new text to the browser, and hears when it is on screen.

:class:`WidgetView` sets an ``ipywidgets.HTML`` value per flush, and every set sends the *whole*
text so far: the bytes sent over a stream grow with the square of its length. :class:`DeltaText`
is a small anywidget that receives only the new text of each flush as a custom message and appends
it in the browser, so the traffic grows linearly; the whole transcript is sent once more, at the
end, as the widget's ``value``, which is what a saved notebook (or a page opened later) shows.

Why custom messages and not a trait holding the latest delta: a trait is *state*. ipywidgets skips
a set that does not change the value (two equal deltas in a row, say ``" the"``, would be lost
without a second trait to make them differ), a view rendered late would show one stale delta
instead of the text, and saved widget state would hold a meaningless fragment. A custom message
is an event: one per flush, delivered in order on the widget's comm, never merged, and absent
from the saved state, where the final ``value`` belongs.

Each message carries a stream id and a sequence number. The browser appends a delta only if it
directly follows the last one shown; on a gap (a view rendered mid-stream, a reloaded page) it
asks for a ``snapshot`` of the text so far and carries on from it.

**Acknowledgements.** On the animation frame after a delta is appended (the text is laid out and
about to be painted) the browser notes ``[seq, performance.now()]``. It sends what it noted in one
message, ``{kind: "ack", stream, seq, shown: [[seq, t], ...], t: <now>, page}``: at once for a
stream's first delta, then at most every 500 ms. Batched on purpose: every message from the browser
makes an idle kernel publish two status messages back (busy, idle), so an acknowledgement per
frame would add ~50 messages a second to the ~25 it measures; batched, it adds at most 4.

**Clocks.** Arrival, flush and acknowledgement times are on the kernel's clock
(``time.perf_counter``); the browser's ``performance.now()`` counts from the page's load. An
acknowledgement sent at browser time ``t`` and processed at kernel time ``k`` gives
``k - t = offset + its trip back >= offset``; the smallest such value seen estimates the offset
(NTP's minimum-delay filter), too large by the fastest trip back (a millisecond or two on one
machine). Each page has its own origin, so the estimate is kept per ``page`` (a random id the page
sends). A flush's screen time on the kernel clock is its browser time plus its page's estimate,
and its render lag is that minus the arrival of its first token: the arrival-to-screen lag, never
understated. Lags are computed with the best estimate so far.

**When the kernel hears them.** An acknowledgement is processed only when the kernel's main thread
is free. A stream run with :func:`streamkit.start_chat` (a background task) leaves it free between
tokens. ipykernel 7.4 also dispatches widget messages while an async cell ``await``s; older
kernels, and any cell that blocks the thread (``chat_sync``, a long computation), hold them until
the cell ends. The screen times they carry stay right, but the offset can then only be estimated
from late acknowledgements and the lags come out too long; :attr:`DeltaView.ack_lags` (arrival to
processing) shows how late they were.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, TypeGuard

import anywidget
import traitlets

from ..batching import AdaptivePolicy
from ..events import Event, StreamRetry, TokenDelta
from ..result import StreamResult
from ._base import View, joined
from .widget import PRE_CLOSE, PRE_OPEN, WidgetView

__all__ = [
    "BrowserAck",
    "DeltaOptions",
    "DeltaText",
    "DeltaView",
    "FlushAck",
    "FlushRecord",
    "delta_view",
]


@dataclass(frozen=True, slots=True)
class BrowserAck:
    """One acknowledgement from a browser page, as :class:`DeltaText` received it.

    Attributes:
        stream: the stream id it is about.
        shown: ``(seq, t)`` pairs: delta ``seq`` (and every earlier one) was on screen at
            browser time ``t`` (``performance.now()``, ms).
        sent: the browser time it was sent (ms), or None.
        page: the id of the page that sent it (its clock's origin is its own).
    """

    stream: int
    shown: list[tuple[int, float]]
    sent: float | None
    page: str


AckCallback = Callable[[BrowserAck], None]
"""What :meth:`DeltaText.on_ack` calls for every acknowledgement."""

# The browser side, built from js/src/delta.js (js/build.sh); its delta protocol half
# (js/src/delta_core.js) is the one the Markdown view bundles too.
_STATIC = Path(__file__).with_name("static")

_CSS = """
.streamkit-delta pre {
  white-space: pre-wrap;
  word-break: normal;
  overflow-wrap: break-word;
  margin: 0;
}
"""


class DeltaText(anywidget.AnyWidget):
    """A text widget that appends each delta in the browser: linear traffic, one saved snapshot.

    :meth:`begin` starts a new text (a new stream id); :meth:`append` sends one delta (a custom
    message with the stream id and a sequence number); :attr:`value` is the HTML snapshot a saved
    notebook holds, set by the owner when the text is final. The widget keeps the text so far, to
    answer a browser view that joined mid-stream.

    Attributes:
        value: the saved snapshot, HTML (escape text with ``html.escape``), e.g. ``<pre>…</pre>``.
        messages: delta messages sent since the widget was created.
        chars_sent: characters of delta text sent since the widget was created.
    """

    _esm = _STATIC / "delta.js"
    _css = _CSS
    value = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream: int | None = None
        self._seq = -1
        self._parts: list[str] = []
        self._ack_callbacks: list[AckCallback] = []
        self.messages = 0
        self.chars_sent = 0
        self.on_msg(self._on_frontend_msg)

    @property
    def stream(self) -> int | None:
        """The current stream's id (None before the first :meth:`begin`)."""
        return self._stream

    @property
    def seq(self) -> int:
        """The sequence number of the last delta sent in this stream (-1: none yet)."""
        return self._seq

    @property
    def text(self) -> str:
        """The current stream's text, as sent so far."""
        return joined(self._parts)

    def begin(self) -> int:
        """Start a new text; returns its stream id. Views still showing the old one clear it at
        the new stream's first delta."""
        self._stream = 0 if self._stream is None else self._stream + 1
        self._seq = -1
        self._parts = []
        return self._stream

    def append(self, text: str, extra: dict[str, Any] | None = None, *, part: str = "") -> int:
        """Send ``text`` to be appended in the browser; returns its sequence number.

        One custom message per call, carrying only ``text`` (and ``extra``, small fields a
        subclass's browser side reads, e.g. live figures): the cost does not grow with what was
        sent before. ``part`` names another text than the answer (``"reasoning"``, ``"tool"``):
        it shares the stream's sequence numbers, the message says ``"part": part``, and the
        subclass keeps that text for its snapshots (:meth:`snapshot_extra`).
        """
        if self._stream is None:
            self.begin()
        self._seq += 1
        if not part:
            self._parts.append(text)
        self.messages += 1
        self.chars_sent += len(text)
        message = {"kind": "delta", "stream": self._stream, "seq": self._seq, "text": text}
        if part:
            message["part"] = part
        if extra:
            message.update(extra)
        self.send(message)
        return self._seq

    def snapshot_extra(self) -> dict[str, Any]:
        """Fields a snapshot carries besides the answer's text (a subclass's other parts)."""
        return {}

    def on_ack(self, callback: AckCallback) -> None:
        """Call ``callback(ack)`` with a :class:`BrowserAck` for every acknowledgement."""
        self._ack_callbacks.append(callback)

    def _on_frontend_msg(self, _widget: object, content: object, _buffers: object) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("kind")
        if kind == "ack":
            stream, sent = content.get("stream"), _number(content.get("t"))
            if not _is_int(stream):
                return
            shown: list[tuple[int, float]] = []
            raw = content.get("shown")
            if isinstance(raw, list):
                for item in raw:
                    if isinstance(item, list | tuple) and len(item) == 2 and _is_int(item[0]):
                        when = _number(item[1])
                        if when is not None:
                            shown.append((item[0], when))
            elif _is_int(content.get("seq")) and sent is not None:
                shown.append((content["seq"], sent))  # a bare ack: on screen when sent
            page = content.get("page")
            ack = BrowserAck(stream, shown, sent, page if isinstance(page, str) else "")
            if shown:
                for callback in self._ack_callbacks:
                    callback(ack)
        elif kind == "sync":
            snapshot = {"kind": "snapshot", "stream": self._stream, "seq": self._seq}
            snapshot["text"] = self.text
            snapshot.update(self.snapshot_extra())
            self.send(snapshot)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class FlushRecord:
    """One flush as the kernel sent it.

    Attributes:
        seq: its sequence number in the stream (0, 1, …).
        tokens: how many tokens it carried.
        chars: how many characters it carried.
        first_arrival: when its first (oldest) token arrived, on the view's clock.
        flushed_at: when it was sent; ``flushed_at - first_arrival`` is the batching wait.
    """

    seq: int
    tokens: int
    chars: int
    first_arrival: float
    flushed_at: float

    @property
    def wait(self) -> float:
        """How long its oldest token waited in the buffer (seconds)."""
        return self.flushed_at - self.first_arrival


@dataclass(frozen=True, slots=True)
class FlushAck:
    """A flush the browser acknowledged as shown.

    Attributes:
        flush: the flush.
        shown_ms: when the browser had it on screen: its ``performance.now()``, in ms.
        acked_at: when the kernel processed the acknowledgement, on the view's clock.
        page: the page that showed it (whose clock ``shown_ms`` is on).
    """

    flush: FlushRecord
    shown_ms: float
    acked_at: float
    page: str = ""

    def lag(self, offset: float) -> float:
        """Arrival of the flush's first token to the screen (seconds), given the kernel clock's
        ``offset`` from the browser's (kernel seconds = browser ms / 1000 + offset)."""
        return self.shown_ms / 1000 + offset - self.flush.first_arrival

    @property
    def ack_lag(self) -> float:
        """Arrival of the flush's first token to the kernel processing its acknowledgement
        (seconds): the lag plus the wait to be acknowledged and the trip back."""
        return self.acked_at - self.flush.first_arrival


class DeltaOptions(TypedDict, total=False):
    """The settings of :class:`DeltaView` (documented there), for subclasses that pass them on:
    one typed signature, with its defaults, kept in one place."""

    max_tokens: int
    max_delay: float
    adaptive: bool
    policy: AdaptivePolicy | None
    clock: Callable[[], float]


class DeltaView(WidgetView):
    """A live view like :class:`WidgetView` that sends only new text, and measures render lag.

    Same panel (header, Stop button, status line, ``text/plain`` transcript when saved); the
    text is a :class:`DeltaText`, so each flush costs one small message whatever the length so
    far. The browser reports when each flush was on screen: :attr:`acks` and
    :attr:`render_lags` hold what it reported, :attr:`flushes` what was sent.

    With ``adaptive=True`` (the default) an :class:`~streamkit.batching.AdaptivePolicy` sets the
    buffer after each flush from the measured token rate and render lag: every token at once for
    a slow stream, at most ~25 messages/s for a fast one. With ``adaptive=False`` the buffer keeps
    whatever it is given (a controls panel, code). The policy measures the token rate either way
    (a controls panel shows it), but it hears the render lag only while it steers: the backlog
    that hand-picked settings cause says nothing about what its own would.

    Args:
        max_tokens: the starting flush count (1: the first token shows at once).
        max_delay: the starting flush delay (seconds).
        adaptive: let the policy choose the settings as the stream runs.
        policy: the policy to use (default: ``AdaptivePolicy(clock=clock)``).
        clock: the clock for arrival, flush and acknowledgement times (``time.perf_counter``).

    Attributes:
        text_widget: the :class:`DeltaText`.
        policy: the :class:`~streamkit.batching.AdaptivePolicy`.
        adaptive: whether the policy sets the buffer (may be switched while a stream runs).
        flushes: a :class:`FlushRecord` per flush of the current stream.
        acks: a :class:`FlushAck` per acknowledged flush of the current stream, in order.
        clock_offsets: per page, the kernel clock minus the page's (seconds), estimated from
            its acknowledgements (the smallest ``processed - sent`` seen).
    """

    text_widget: DeltaText

    def __init__(
        self,
        *,
        max_tokens: int = 1,
        max_delay: float = 0.04,
        adaptive: bool = True,
        policy: AdaptivePolicy | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(max_tokens=max_tokens, max_delay=max_delay, clock=clock)
        # Swap WidgetView's HTML for the delta widget, keeping the rest of its panel.
        replaced = self.text_widget
        self.text_widget = self._new_text_widget()
        header_row, _old, status = self.widget.children
        self.widget.children = (header_row, self.text_widget, status)
        replaced.close()
        self.text_widget.on_ack(self._on_ack)
        self.policy = policy if policy is not None else AdaptivePolicy(clock=clock)
        self.adaptive = bool(adaptive)
        self.flushes: list[FlushRecord] = []
        self.acks: list[FlushAck] = []
        self._batch_tokens = 0
        self._batch_first = 0.0
        self._next_ack = 0  # index in self.flushes of the first flush not acknowledged yet
        # Kept across streams: they describe the pages and the link, not one stream.
        self.clock_offsets: dict[str, float] = {}

    @property
    def render_lags(self) -> list[float]:
        """Arrival-to-screen lag of every acknowledged flush of the current stream (seconds).

        From the first token's arrival in the kernel to the frame that showed it, with the
        page's time moved to the kernel clock by its offset in :attr:`clock_offsets` (an
        overestimate by the fastest trip back, so a lag is never understated). Empty without a
        browser.
        """
        offsets = self.clock_offsets
        return [ack.lag(offsets[ack.page]) for ack in self.acks if ack.page in offsets]

    @property
    def ack_lags(self) -> list[float]:
        """Arrival to the kernel processing the acknowledgement, per acknowledged flush: the
        render lag plus up to 500 ms of acknowledgement batching and the trip back, or much more
        when a blocking cell held the acknowledgements back."""
        return [ack.ack_lag for ack in self.acks]

    # -- what a subclass with another browser side changes -----------------------------------

    def _new_text_widget(self) -> DeltaText:
        """The widget that shows the text (a :class:`DeltaText` or a subclass)."""
        return DeltaText(value=PRE_OPEN + PRE_CLOSE)

    def _save_snapshot(self, text: str) -> None:
        """Keep ``text`` as the widget's saved state: what a saved notebook or a late view shows."""
        self.text_widget.value = PRE_OPEN + html.escape(text, quote=False) + PRE_CLOSE

    def _delta_extra(self) -> dict[str, Any] | None:
        """Extra fields for the next delta message (None: just the text)."""
        return None

    # -- BufferedView / WidgetView hooks -----------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Take one event; notes when each batch's first token arrived, then buffers it."""
        if isinstance(event, TokenDelta):
            if self._batch_tokens == 0:
                self._batch_first = self._clock()
            self._batch_tokens += 1
        super().on_event(event)

    def _on_start(self) -> None:
        self.text_widget.begin()
        self.flushes = []
        self.acks = []
        self._next_ack = 0
        self._batch_tokens = 0
        self.policy.reset()
        if self.adaptive:
            self.policy.apply(self.buffer)
        super()._on_start()
        self._save_snapshot("")  # a view opened mid-stream must not show the last stream's

    def _render(self, new_text: str) -> None:
        now = self.flush_log[-1][0]  # the flush time BufferedView just recorded
        tokens = self._batch_tokens
        first = self._batch_first if tokens else now
        self._batch_tokens = 0
        seq = self.text_widget.append(new_text, self._delta_extra())
        self.flushes.append(FlushRecord(seq, tokens, len(new_text), first, now))
        policy = self.policy
        policy.observe_tokens(tokens, now)
        if self.adaptive:
            policy.apply(self.buffer)
        if self._retrying:  # text flows again after a retry: say so, as WidgetView does
            self._retrying = False
            self.header.value = self._header_html(f"streaming… (retried {self.retries}×)")

    def _on_retry(self, event: StreamRetry) -> None:
        if event.discarded:
            # A restart voids the text shown: a new delta stream makes every browser view start
            # over at its first delta (and a view that joins later asks for the new text only).
            self.text_widget.begin()
            self._next_ack = len(self.flushes)
        super()._on_retry(event)
        if event.discarded:
            self._save_snapshot("")

    def _on_finish(self, result: StreamResult) -> None:
        # The one snapshot: the whole text, sent once, kept in saved widget state.
        self._save_snapshot(self.text)
        super()._on_finish(result)

    def plain_text(self) -> str:
        """The transcript so far plus the status line: what a saved notebook or a log shows."""
        if not self.model and not self.text and not self.streaming:
            return f"{type(self).__name__} (no stream yet)"
        return super().plain_text()

    # -- acknowledgements --------------------------------------------------------------------

    def _on_ack(self, browser: BrowserAck) -> None:
        if browser.stream != self.text_widget.stream:
            return  # an old stream's (or a voided attempt's): its flushes are gone
        now = self._clock()
        page, offsets = browser.page, self.clock_offsets
        if browser.sent is not None:
            sample = now - browser.sent / 1000
            if page not in offsets or sample < offsets[page]:
                offsets[page] = sample
        # Flushes by their seq, not their position: a subclass's other parts (reasoning, tool
        # calls) take seqs of their own, which no flush holds.
        flushes, new = self.flushes, list[FlushAck]()
        for seq, shown_ms in sorted(browser.shown):
            if seq > self.text_widget.seq:
                continue  # never sent in this stream: not ours to time
            while self._next_ack < len(flushes) and flushes[self._next_ack].seq <= seq:
                new.append(FlushAck(flushes[self._next_ack], shown_ms, now, page))
                self._next_ack += 1
        self.acks.extend(new)
        if not new or page not in offsets or not self.adaptive:
            # A repeat (a second view of the widget), or nothing to steer: the backlog under
            # hand-picked settings says nothing about what the policy's own would cause.
            return
        # Sent to screen, without the batching wait (which grows with the batch by design).
        offset = offsets[page]
        self.policy.observe_render_lags(
            [max(0.0, ack.shown_ms / 1000 + offset - ack.flush.flushed_at) for ack in new], now
        )
        if self.streaming:
            self.policy.apply(self.buffer)


def delta_view(*, max_tokens: int = 1, max_delay: float = 0.04, adaptive: bool = True) -> View:
    """A :class:`DeltaView` where a Jupyter frontend can show it, plain text elsewhere.

    Chooses like :func:`streamkit.render.auto_view` (``STREAMKIT_VIEW`` overrides): in a kernel,
    the delta widget; in a terminal, a pipe or CI, a :class:`~streamkit.render.ConsoleView` with
    the starting settings (text on a console needs no browser round trips to tune).

    Raises:
        UsageError: ``STREAMKIT_VIEW`` is invalid, or a setting is out of range.
    """
    from ._choice import view_kind
    from .console import ConsoleView

    if view_kind() == "widget":
        return DeltaView(max_tokens=max_tokens, max_delay=max_delay, adaptive=adaptive)
    return ConsoleView(max_tokens=max_tokens, max_delay=max_delay)
