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
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import UsageError
from ..metrics import MetricsCollector, percentile
from ._choice import view_kind
from ._dashboard_panels import LiveState, apply_values, new_figure, panel_values

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from IPython.display import DisplayHandle

__all__ = ["Dashboard"]

DashboardKind = Literal["widget", "console"]


class Timer(Protocol):
    """A scheduled frame, as ``call_later`` returns it (an :class:`asyncio.TimerHandle`)."""

    def cancel(self) -> None: ...


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
        call_later: schedules the frame timer, ``call_later(delay, callback)`` returning a
            handle with ``cancel()``; by default the dashboard's asyncio loop's. A test passes
            a scheduler on the same hand-driven clock as ``clock``, so frames fire on its time.

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
        call_later: Callable[[float, Callable[[], None]], Timer] | None = None,
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
        self._live = LiveState(bin_seconds, max_bins)
        self.widget: Any = None
        self.frames = 0
        self.frame_log: deque[tuple[float, float, float]] = deque(maxlen=10_000)
        self._call_later = call_later
        self._timer: Timer | None = None
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
            call_later = self._call_later or self._loop.call_later
            self._timer = call_later(1.0 / self.rate, self._tick)

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
                apply_values(self.widget, values, self._last_values)
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
        apply_values(fig, self._panel_values(), None)
        return fig

    def text(self) -> str:
        """The run summary as text (what the console fallback prints)."""
        return str(self.collector.summary())

    # -- the figure ---------------------------------------------------------------------------

    def _build(self, *, widget: bool) -> Any:
        fig = new_figure()
        return _shared_module_figure_widget(fig) if widget else fig

    def _panel_values(self) -> dict[str, Any]:
        collector = self.collector
        return panel_values(self._live, collector.requests, collector.active, self._clock())


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
