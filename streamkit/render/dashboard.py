"""The live metrics dashboard: a plotly figure that follows a :class:`MetricsCollector` as it runs.

Four panels in one ``FigureWidget`` (one widget, five light traces): output tokens/s over time,
the inter-token latency distribution, time to first token per request, and retries and errors by
class. A title line carries the counts.

Throttled on purpose, never per event: one timer on the running asyncio loop redraws at ``rate``
Hz (default 4) while requests are active, inside ``fig.batch_update()`` so a frame is one
message. The collector only *pokes* the dashboard when a request is tracked, starts or finishes;
each frame reads the new chunks since the last frame from the collector's raw log (a cursor per
request), so a frame costs what arrived since the previous one, not the whole run. Panels are
bounded in size: time bins double in width past ``max_bins``, and the ITL histogram uses fixed
log-spaced bins (0.1 ms to 100 s, 12 per decade).

Paced by the page, too: the browser reports each frame drawn, and while a page shows the figure
a frame waits until the previous one (or the first draw) was reported, so frames never queue up
behind a busy page and then redraw back to back. And every dashboard on a page shares one copy of
plotly.js in the browser (plotly's FigureWidget alone loads and evaluates all of it, ~1.5 s of a
frozen page on 2 cores, for every figure).

Show it *before* the streams start (``Dashboard(collector).show()``, then stream): the page's
first plotly.js still freezes it for ~1.5 s on 2 cores, long enough to hide a short run that
starts at once (Run All).

Where no widget frontend exists (outside a kernel, or ``STREAMKIT_VIEW=console``), the dashboard
degrades like the views do: nothing live, a text summary printed when the run goes idle, and
:meth:`Dashboard.figure` for a static ``plotly.graph_objects.Figure`` at any time.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UsageError
from ..metrics import MetricsCollector, RequestRecorder, percentile
from . import view_kind

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from IPython.display import DisplayHandle

__all__ = ["Dashboard"]

DashboardKind = Literal["widget", "console"]

# Log-spaced ITL bins: 12 per decade from 0.1 ms to 100 s.
_ITL_EDGES: list[float] = [10 ** (-4 + i / 12) for i in range(6 * 12 + 1)]
_STATUS_COLORS = {
    "completed": "#1f77b4",
    "streaming": "#9e9e9e",
    "pending": "#9e9e9e",
    "failed": "#d62728",
    "stopped": "#ff7f0e",
}
_PLAIN_TEXT = "streamkit metrics dashboard (live plot; print(dashboard) for a text summary)"
_PLAIN_TEXT_CONSOLE = "streamkit metrics dashboard (text: a summary once requests run)"
# The longest a frame waits for the browser to report the previous one drawn (seconds). Past
# it, frames go out at `rate` until the browser reports again: a closed page, or a kernel that
# holds widget messages until the cell ends, must not slow the dashboard down for good.
_MAX_FRAME_WAIT = 2.0

# The browser side of the figure. plotly's FigureWidget is an anywidget whose module is all of
# plotly.js (~5 MB), and anywidget imports every widget's module from a fresh blob URL: each
# FigureWidget evaluated plotly.js again, ~1.5 s of frozen page per figure on 2 cores. This
# module imports plotly's once per page (keyed by its hash) and makes each figure's widget from
# it. It also reports each frame drawn ({kind: "drawn", edit}), which paces the frames.
_SHARED_MODULE_ESM = """
const CACHE = Symbol.for("streamkit.plotly-widget-module");
const UPDATES = ["_py2js_update", "_py2js_restyle"];  // the messages that carry trace edits

function plotlyModule(model) {
  const cache = (globalThis[CACHE] ??= new Map());
  const id = model.get("_streamkit_bundle_id");
  let module = cache.get(id);
  if (module === undefined) {
    const blob = new Blob([model.get("_streamkit_bundle")], { type: "text/javascript" });
    const url = URL.createObjectURL(blob);
    module = import(url)
      .catch((error) => { cache.delete(id); throw error; })
      .finally(() => URL.revokeObjectURL(url));
    cache.set(id, module);
  }
  return module;
}

export default () => {
  let ready = null;
  return {
    initialize(context) {
      ready = plotlyModule(context.model).then((module) => {
        // plotly's default export makes a widget per model (its state lives in the closure).
        const widget = typeof module.default === "function" ? module.default() : module.default;
        return Promise.resolve(widget.initialize?.(context)).then(() => widget);
      });
      return ready.then(() => undefined);
    },
    async render(context) {
      const widget = await ready;
      const { model, el } = context;
      let drawn = false;
      // After the task that applied it: when the page is free again, not merely when it heard.
      const ack = (edit) => setTimeout(() => model.send({ kind: "drawn", edit }), 0);
      const onFirstDraw = (event) => {
        if (event.detail?.element !== el) return;
        drawn = true;
        ack(model.get("_last_trace_edit_id"));
      };
      const onUpdate = [];
      for (const name of UPDATES) {
        const handler = () => {
          const message = model.get(name);
          if (drawn && message) ack(message.trace_edit_id);
        };
        model.on(`change:${name}`, handler);
        onUpdate.push([name, handler]);
      }
      document.addEventListener("plotlywidget-after-render", onFirstDraw);
      const cleanup = widget.render(context);
      return () => {
        document.removeEventListener("plotlywidget-after-render", onFirstDraw);
        for (const [name, handler] of onUpdate) model.off(`change:${name}`, handler);
        if (typeof cleanup === "function") cleanup();
      };
    },
  };
};
"""
_figure_widget_class: Any = None


class _Bins:
    """Counts per fixed-width time bin from ``origin``; the width doubles past ``max_bins``."""

    def __init__(self, width: float, max_bins: int) -> None:
        self.width = width
        self.max_bins = max_bins
        self.counts: list[int] = []

    def add(self, offset: float) -> None:
        i = int(offset / self.width) if offset > 0 else 0
        while i >= self.max_bins:
            # Merge pairs: the panel keeps its size however long the run.
            merged = [sum(self.counts[j : j + 2]) for j in range(0, len(self.counts), 2)]
            self.counts = merged
            self.width *= 2
            i = int(offset / self.width)
        if i >= len(self.counts):
            self.counts.extend([0] * (i + 1 - len(self.counts)))
        self.counts[i] += 1


class _Live:
    """What the panels show, updated incrementally from the collector's raw log."""

    def __init__(self, bin_seconds: float, max_bins: int) -> None:
        self.origin: float | None = None
        self.cursors: dict[int, int] = {}
        self.done: set[int] = set()
        self.bins = _Bins(bin_seconds, max_bins)
        self.itl_counts = [0] * (len(_ITL_EDGES) + 1)
        self.itl_total = 0
        self.ttft: dict[int, float] = {}
        self.tokens = 0
        self.last_chunk: float | None = None
        self.counts = (0, 0)

    def absorb(self, requests: list[RequestRecorder]) -> bool:
        """Take in every chunk that arrived since the last call; True if anything changed."""
        started = sum(1 for r in requests if r.status != "pending" or r.finished)
        changed = (len(requests), started) != self.counts
        self.counts = (len(requests), started)
        if self.origin is None:
            if not started:
                return changed
            self.origin = min(r.send_time for r in requests if r.status != "pending" or r.finished)
        origin = self.origin
        bins, itl_counts, edges = self.bins, self.itl_counts, _ITL_EDGES
        for rec in requests:
            rid = rec.id
            if rid in self.done:
                continue
            times = rec.times
            n = len(times)
            seen = self.cursors.get(rid, 0)
            if n > seen:
                changed = True
                if seen == 0:
                    self.ttft[rid] = times[0] - rec.send_time
                prev = times[seen - 1] if seen else None
                for i in range(seen, n):
                    t = times[i]
                    bins.add(t - origin)
                    if prev is not None:
                        itl_counts[bisect.bisect_right(edges, t - prev)] += 1
                        self.itl_total += 1
                    prev = t
                self.tokens += n - seen
                self.cursors[rid] = n
                if self.last_chunk is None or times[-1] > self.last_chunk:
                    self.last_chunk = times[-1]
            if rec.finished:
                self.done.add(rid)
                changed = True
        return changed


class Dashboard:
    """A live view of a :class:`~streamkit.metrics.MetricsCollector`: tokens/s, ITL, TTFT, errors.

    Show it, then stream::

        collector = sk.MetricsCollector()
        dash = sk.Dashboard(collector).show()     # draws an empty figure now
        await asyncio.gather(*(client.chat(p, observers=[collector], view=None) for p in prompts))

    A dashboard left as a cell's value displays itself too (``sk.Dashboard(collector)`` on the
    last line), and ``sk.Dashboard(collector).show()`` on the last line shows one figure, not two.

    Args:
        collector: the collector to follow.
        rate: redraws per second while requests are active (a few Hz is plenty).
        kind: ``"widget"`` (a live ``FigureWidget``), ``"console"`` (a text summary when the run
            goes idle), or ``"auto"``: a widget in a Jupyter kernel, text elsewhere;
            ``STREAMKIT_VIEW`` overrides ``auto`` as for the views.
        bin_seconds: the width of a tokens/s time bin (doubles after ``max_bins`` bins).
        max_bins: the most time bins the tokens/s panel keeps.
        idle_timeout: stop the timer after this many seconds without any change, even if a
            tracked request never started (a start re-arms it).
        clock: the clock for "now"; the events' clock (``perf_counter``) by default.

    Attributes:
        kind: ``"widget"`` or ``"console"``.
        widget: the ``plotly.graph_objects.FigureWidget`` in widget mode, else None.
        frames: frames drawn so far.
        frame_log: ``(clock time, wall seconds, thread CPU seconds)`` per frame drawn (the last
            10,000), the cost of each update as the kernel paid it.
        frames_deferred: ticks that skipped a frame because the page had not drawn the last one.
    """

    def __init__(
        self,
        collector: MetricsCollector,
        *,
        rate: float = 4.0,
        kind: Literal["auto", "widget", "console"] = "auto",
        bin_seconds: float = 0.5,
        max_bins: int = 240,
        idle_timeout: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 60:
            raise UsageError(
                f"rate={rate!r} is invalid: must be redraws per second, 0 < rate <= 60"
            )
        if not bin_seconds > 0 or max_bins < 2:
            raise UsageError("bin_seconds must be > 0 and max_bins >= 2")
        if kind not in ("auto", "widget", "console"):
            raise UsageError(f"kind={kind!r} is unknown: use 'auto', 'widget' or 'console'")
        self.collector = collector
        self.rate = float(rate)
        self.kind: DashboardKind = view_kind() if kind == "auto" else kind
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._live = _Live(bin_seconds, max_bins)
        self.widget: Any = None
        self.frames = 0
        self.frame_log: deque[tuple[float, float, float]] = deque(maxlen=10_000)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = _running_loop()
        self._last_change = clock()
        self._last_values: dict[str, Any] = {}
        self._handle: DisplayHandle | None = None
        # The cell (IPython execution count) in which show() displayed the figure, until the
        # next display: see _ipython_display_.
        self._shown_in_cell: int | None = None
        self._printed_idle = True
        # Frame pacing: the trace edit a browser last reported drawn, when the last frame (or
        # the figure itself) went out, and whether reports arrive at all.
        self._drawn_edit: int | None = None
        self._sent_at = clock()
        self._paced = True
        self.frames_deferred = 0
        self._unsubscribe: Callable[[], None] | None = collector.subscribe(self._poke)
        if self.kind == "widget":
            self.widget = self._build(widget=True)
            self.widget.on_msg(self._on_frontend_msg)

    def __repr__(self) -> str:
        return f"<Dashboard {self.kind}, {self.frames} frames, {self.collector!r}>"

    def __str__(self) -> str:
        return self.text()

    # -- showing ------------------------------------------------------------------------------

    def show(self) -> Dashboard:
        """Display the dashboard (an empty figure, before the streams start); returns self."""
        if self.kind == "widget":
            from IPython.core.interactiveshell import InteractiveShell

            if InteractiveShell.initialized() and self._handle is None:
                self._ipython_display_()
                self._shown_in_cell = _execution_count()
        return self

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The figure widget's bundle (widget mode), with a ``text/plain`` that reads anywhere.

        Widget mode keeps a fixed line: a saved notebook stores this bundle as displayed, before
        any request ran (and the widget's own text holds a random trace uid). Console mode has
        no figure: its text is the run summary so far.
        """
        if self.widget is None:
            plain = self.text() if self.collector.requests else _PLAIN_TEXT_CONSOLE
            return {"text/plain": plain}
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = _PLAIN_TEXT
        return bundle

    def _ipython_display_(self) -> None:
        """Display the dashboard (IPython calls this for ``display(dash)`` and a cell's value)."""
        from IPython.display import display

        shown_in, self._shown_in_cell = self._shown_in_cell, None
        if shown_in is not None and shown_in == _execution_count():
            # show() displayed it in this cell and returned it, and IPython now displays the
            # value of the cell's last line: `sk.Dashboard(c).show()` would show two figures.
            # (So would an explicit display(dash) after show() in the same cell: it is on
            # screen already.) Once only: a later cell's display shows it again.
            return
        self._sent_at = self._clock()  # the first draw is the first frame in flight
        self._handle = display(  # type: ignore[no-untyped-call]  # IPython is untyped
            self._repr_mimebundle_(), raw=True, display_id=True
        )

    def close(self) -> None:
        """Stop following the collector and close the widget."""
        self._cancel_timer()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.widget is not None:
            self.widget.close()

    # -- the throttle ---------------------------------------------------------------------------

    def _poke(self) -> None:
        """The collector saw a request tracked, start or finish: make sure a frame is coming."""
        self._last_change = self._clock()
        self._printed_idle = False
        if self._timer is not None:
            return
        here = _running_loop()
        loop = self._loop
        if loop is None or loop.is_closed():
            if here is None:
                return  # no loop (synchronous code): refresh() draws on demand
            loop = self._loop = here
        if loop is here:
            self._arm()
        else:
            # A chat on another thread's loop (chat_sync): frames stay on the dashboard's loop,
            # the one its widget lives on.
            loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(1.0 / self.rate, self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_frontend_msg(self, _widget: object, content: object, _buffers: object) -> None:
        """A page reports the trace edit it has drawn (its first draw, then every frame)."""
        if not isinstance(content, dict) or content.get("kind") != "drawn":
            return
        edit = content.get("edit")
        if isinstance(edit, int) and not isinstance(edit, bool):
            self._paced = True
            if self._drawn_edit is None or edit > self._drawn_edit:
                self._drawn_edit = edit

    def _browser_behind(self) -> bool:
        """Whether a page shows the figure and has not drawn the last frame yet.

        Frames sent faster than a page draws them queue up, and the page then draws them one
        after another without a pause: on a 2-core machine the first draw of the figure plus
        the frames queued meanwhile froze the page for 3-4 s. So a frame waits until the page
        reported the previous one (or its first draw) drawn, at most ``_MAX_FRAME_WAIT``; with
        no view of the figure, or no reports, frames go out at ``rate``.
        """
        widget = self.widget
        if not self._paced or not hasattr(widget, "_streamkit_bundle_id"):
            return False  # no reports lately, or plotly's own module (which sends none)
        if not getattr(widget, "_view_count", None):
            return False  # no page shows it
        last_sent: int = getattr(widget, "_last_trace_edit_id", 0)
        if self._drawn_edit is not None and self._drawn_edit >= last_sent:
            return False
        if self._clock() - self._sent_at < _MAX_FRAME_WAIT:
            return True
        self._paced = False  # no report in time: stop waiting until one arrives
        return False

    def _tick(self) -> None:
        self._timer = None
        if self._browser_behind():
            # The chunks wait in the collector; the next frame draws them all.
            self.frames_deferred += 1
            self._arm()
            return
        changed = self.refresh(only_if_changed=True)
        now = self._clock()
        if changed:
            self._last_change = now
        active = self.collector.active > 0
        if changed or (active and now - self._last_change < self.idle_timeout):
            self._arm()
        elif not active:
            self._on_idle()

    def _on_idle(self) -> None:
        if self.kind == "console" and not self._printed_idle and self.collector.requests:
            self._printed_idle = True
            print(self.text(), flush=True)

    # -- frames -------------------------------------------------------------------------------

    def refresh(self, *, only_if_changed: bool = False) -> bool:
        """Draw one frame now from what the collector holds; True if a frame was drawn.

        Args:
            only_if_changed: skip the frame when no chunk or request changed since the last.
        """
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        changed = self._live.absorb(self.collector.requests)
        if only_if_changed and not changed:
            return False
        if self.widget is not None:
            values = self._panel_values()
            with self.widget.batch_update():
                self._apply(self.widget, values, only_changed=True)
            self._sent_at = self._clock()
        self.frames += 1
        self.frame_log.append(
            (self._clock(), time.perf_counter() - wall0, time.thread_time() - cpu0)
        )
        if self.kind == "console" and self.collector.active == 0:
            self._on_idle()
        return True

    def frame_cost(self) -> dict[str, float]:
        """Median and max cost per frame drawn so far (wall and thread CPU, in ms)."""
        if not self.frame_log:
            return {"frames": 0}
        walls = [w for _, w, _ in self.frame_log]
        cpus = [c for _, _, c in self.frame_log]
        return {
            "frames": len(self.frame_log),
            "wall_ms_p50": (percentile(walls, 50) or 0.0) * 1000,
            "wall_ms_max": max(walls) * 1000,
            "cpu_ms_p50": (percentile(cpus, 50) or 0.0) * 1000,
            "cpu_ms_max": max(cpus) * 1000,
        }

    def figure(self) -> go.Figure:
        """A static ``plotly.graph_objects.Figure`` of the current state (any frontend)."""
        self._live.absorb(self.collector.requests)
        fig = self._build(widget=False)
        self._apply(fig, self._panel_values(), only_changed=False)
        return fig

    def text(self) -> str:
        """The run summary as text (what the console fallback prints)."""
        return str(self.collector.summary())

    # -- building and filling the figure ---------------------------------------------------------

    def _build(self, *, widget: bool) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=2,
            cols=2,
            subplot_titles=(
                "output tokens/s",
                "inter-token latency (all gaps)",
                "time to first token per request",
                "retries and errors",
            ),
            horizontal_spacing=0.1,
            vertical_spacing=0.18,
        )
        fig.add_trace(
            go.Scatter(x=[], y=[], mode="lines", line={"shape": "hv"}, name="tokens/s"), 1, 1
        )
        fig.add_trace(
            go.Scatter(x=[], y=[], mode="lines", line={"shape": "hv"}, fill="tozeroy", name="ITL"),
            1,
            2,
        )
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", marker={"size": 6}, name="TTFT"), 2, 1)
        fig.add_trace(go.Bar(x=[], y=[], name="retries / errors"), 2, 2)
        fig.update_xaxes(title_text="seconds since the first send", row=1, col=1)
        fig.update_xaxes(title_text="ms (log scale)", type="log", row=1, col=2)
        fig.update_xaxes(title_text="request", row=2, col=1)
        fig.update_yaxes(title_text="tokens/s", rangemode="tozero", row=1, col=1)
        fig.update_yaxes(title_text="gaps", rangemode="tozero", row=1, col=2)
        fig.update_yaxes(title_text="ms", rangemode="tozero", row=2, col=1)
        fig.update_yaxes(title_text="count", rangemode="tozero", row=2, col=2)
        fig.update_layout(
            height=520,
            showlegend=False,
            margin={"t": 70, "b": 40, "l": 50, "r": 20},
            title={"text": "waiting for streams…", "font": {"size": 14}},
        )
        return _shared_module_figure_widget(fig) if widget else fig

    def _panel_values(self) -> dict[str, Any]:
        live = self._live
        now = self._clock()
        bins = live.bins
        width = bins.width
        rate_x = [i * width for i in range(len(bins.counts))]
        rate_y = [c / width for c in bins.counts]
        active = self.collector.active > 0
        if rate_y and live.origin is not None:
            # The last bin is partial (still filling, or the run ended inside it): divide by the
            # time it covers, and leave it out while that is too short to say anything.
            end = now if active else (live.last_chunk if live.last_chunk is not None else now)
            span = min(width, end - live.origin - rate_x[-1])
            if span >= width / 2:
                rate_y[-1] = bins.counts[-1] / span
            else:
                del rate_x[-1], rate_y[-1]
        # Display bins 1..len(edges)-1; gaps under 0.1 ms (chunks read together) join the
        # first, gaps over 100 s the last, so a log axis can show every gap.
        counts = live.itl_counts[1:-1]
        counts[0] += live.itl_counts[0]
        counts[-1] += live.itl_counts[-1]
        used = [i for i, c in enumerate(counts) if c]
        itl_x: list[float] = []
        itl_y: list[int] = []
        if used:
            lo, hi = used[0], used[-1]
            itl_x = [_ITL_EDGES[i] * 1000 for i in range(lo, hi + 2)]
            itl_y = [*counts[lo : hi + 1], counts[hi]]
        recs = self.collector.requests
        ttft_ids = sorted(live.ttft)
        colors = [_STATUS_COLORS.get(recs[i].status, "#9e9e9e") for i in ttft_ids]
        causes: dict[str, int] = {}
        errors: dict[str, int] = {}
        for rec in recs:
            for r in rec.retries:
                causes[r.cause] = causes.get(r.cause, 0) + 1
            if rec.error is not None and rec.status in ("failed", "stopped"):
                errors[rec.error.kind] = errors.get(rec.error.kind, 0) + 1
        bar_x = [f"retry: {k}" for k in sorted(causes)] + [f"error: {k}" for k in sorted(errors)]
        bar_y = [causes[k] for k in sorted(causes)] + [errors[k] for k in sorted(errors)]
        bar_c = ["#ff7f0e"] * len(causes) + ["#d62728"] * len(errors)
        if not bar_x:
            bar_x, bar_y, bar_c = ["retries", "errors"], [0, 0], ["#ff7f0e", "#d62728"]
        done = len(live.done)
        failed = sum(1 for r in recs if r.status == "failed")
        ttfts = list(live.ttft.values())
        p50 = percentile(ttfts, 50)
        now_rate = rate_y[-1] if rate_y and active else None
        title = (
            f"{len(recs)} requests · {done} done · {self.collector.active} active · "
            f"{failed} failed · {live.tokens} chunks"
            + (f" · now {now_rate:.0f} tok/s" if now_rate is not None else "")
            + (f" · TTFT p50 {p50 * 1000:.0f} ms" if p50 is not None else "")
        )
        return {
            "rate": (rate_x, rate_y),
            "itl": (itl_x, itl_y),
            "ttft": (ttft_ids, [live.ttft[i] * 1000 for i in ttft_ids], colors),
            "bars": (bar_x, bar_y, bar_c),
            "title": title,
        }

    def _apply(self, fig: Any, values: dict[str, Any], *, only_changed: bool) -> None:
        last = self._last_values if only_changed else {}

        def fresh(key: str) -> bool:
            if only_changed and last.get(key) == values[key]:
                return False
            last[key] = values[key]
            return True

        if fresh("rate"):
            fig.data[0].x, fig.data[0].y = values["rate"]
        if fresh("itl"):
            fig.data[1].x, fig.data[1].y = values["itl"]
        if fresh("ttft"):
            x, y, colors = values["ttft"]
            fig.data[2].x, fig.data[2].y = x, y
            fig.data[2].marker.color = colors
        if fresh("bars"):
            x, y, colors = values["bars"]
            fig.data[3].x, fig.data[3].y = x, y
            fig.data[3].marker.color = colors
        if fresh("title"):
            fig.layout.title.text = values["title"]


def _execution_count() -> int | None:
    """The running IPython shell's execution count (the cell being run), or None."""
    from IPython.core.interactiveshell import InteractiveShell

    if not InteractiveShell.initialized():
        return None
    count = InteractiveShell.instance().execution_count
    return count if isinstance(count, int) else None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _shared_module_figure_widget(fig: go.Figure) -> Any:
    """A ``FigureWidget`` of ``fig`` whose browser module is evaluated once per page."""
    global _figure_widget_class
    import plotly.graph_objects as go

    if _figure_widget_class is None:
        bundle = getattr(go.FigureWidget, "_esm", None)
        if bundle is None:
            # plotly < 6: a classic ipywidget with its own JupyterLab extension; nothing to share.
            _figure_widget_class = go.FigureWidget
        else:
            import hashlib

            import traitlets

            source = str(bundle)  # anywidget keeps plotly's module file as its contents

            class SharedModuleFigureWidget(go.FigureWidget):  # type: ignore[misc]
                _esm = _SHARED_MODULE_ESM
                _streamkit_bundle = traitlets.Unicode(source).tag(sync=True)
                _streamkit_bundle_id = traitlets.Unicode(
                    hashlib.sha256(source.encode()).hexdigest()[:16]
                ).tag(sync=True)

            _figure_widget_class = SharedModuleFigureWidget
    return _figure_widget_class(fig)
