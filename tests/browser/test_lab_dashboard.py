"""The metrics notebook's dashboard draws live in a real JupyterLab, in headless Chromium.

``05_metrics.ipynb`` shows ``sk.Dashboard(collector)`` (a plotly ``FigureWidget``) and then streams
one ~3.6 s reply of sim-large into the collector. The dashboard redraws at most 4 times a second;
its first panel, output tokens/s over time, gains one point per 0.5 s time bin as tokens arrive.

The test runs the setup cell, then the dashboard cell, waits until plotly has drawn the figure,
and starts a 25 ms sampler in the page that records, while the stream cell runs, the number of
points of every trace of every ``.js-plotly-plot`` in the dashboard cell's output, and the time
since the sampler's previous tick (a frozen page ticks late). It checks that the tokens/s trace
grew in several steps spread over time while the stream cell's prompt said ``[*]``, and that the
page never froze for long during the stream: the pitfall of a first FigureWidget draw on a busy
2-core machine, which can hide a short stream completely.

A negative control keeps the check honest: the same stream, with a dashboard that draws it in one
frame at the end, shows at most one non-zero point count while the cell runs and no spread in
time, and must fail the same check. A page frozen through the stream shows one long gap between
ticks and fails the freeze check.

Reuses the JupyterLab and Chromium fixtures of ``test_lab_live.py`` (same requirements, same
skip/fail rules). The control notebook is written into the server's folder by the test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from .test_lab_live import (
    Lab,
    _errors,
    _open,
    _run_cell,
    _wait_done,
    _write_control,
    browser,
    lab,
    page,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "lab", "page"]  # the fixtures, imported for pytest to find

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NOTEBOOK = "05_metrics.ipynb"
CONTROL = "dashboard_once_control.ipynb"
# Code cells, counted among code cells only (the notebook's cells 1, 3 and 4).
SETUP, DASHBOARD, STREAM = 0, 1, 2
SAMPLE_MS = 25

# What "live" means here. The stream is 80 tokens of sim-large (~0.4 s to the first token, then
# ~25 tokens/s): ~3.6 s, so the tokens/s panel ends with ~7 points of 0.5 s, drawn at <= 4 Hz.
MIN_DISTINCT_COUNTS = 3  # distinct non-zero point counts of the tokens/s trace while [*]
MIN_SPAN_S = 1.0  # from the first point to the final count, while the cell ran
MIN_FINAL_POINTS = 4  # points of the tokens/s trace at the end
MAX_FREEZE_S = 1.5  # the longest gap between two sampler ticks while the cell ran

# The negative control: the same cells, but the shown dashboard follows an empty collector until
# the stream has ended, then draws the stream's collector in one frame.
CONTROL_CELLS = [
    "import streamkit as sk\n\nclient = sk.Client()\ncollector = sk.MetricsCollector()",
    "dashboard = sk.Dashboard(sk.MetricsCollector()).show()",
    "result = await client.chat(\n"
    '    "Explain how time to first token differs from time to first byte",\n'
    '    model="sim-large",\n'
    "    max_tokens=80,\n"
    "    observers=[collector],\n"
    ")\n"
    "dashboard.collector = collector\n"
    "drawn = dashboard.refresh()",
]

# Every `every` ms: [ms since start, ms since the previous tick, points per trace of each plot in
# the output of code cell `plotCell` (null before plotly drew it), whether code cell `runCell`'s
# prompt says it is running ("[*]:")].
SAMPLER_JS = """
({plotCell, runCell, every}) => {
  const t0 = performance.now();
  let last = t0;
  const samples = [];
  const cells = () => document.querySelectorAll('.jp-Notebook .jp-CodeCell');
  const probe = () => {
    const now = performance.now();
    const plotHost = cells()[plotCell];
    const plots = plotHost ? [...plotHost.querySelectorAll('.jp-OutputArea .js-plotly-plot')] : [];
    const points = plots.map(el => el.data ? el.data.map(t => (t.x ? t.x.length : 0)) : null);
    const prompt = cells()[runCell]?.querySelector('.jp-InputPrompt');
    const busy = prompt ? prompt.textContent.includes('*') : false;
    samples.push([now - t0, now - last, points, busy]);
    last = now;
  };
  probe();
  window.__streamkitPlot = { samples, timer: setInterval(probe, every) };
}
"""

# The figure is drawn: plotly put its data and its SVG on the element, four traces.
DRAWN_JS = """
(plotCell) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[plotCell];
  const el = cell ? cell.querySelector('.jp-OutputArea .js-plotly-plot') : null;
  return el !== null && Array.isArray(el.data) && el.data.length === 4
    && el.querySelector('.main-svg') !== null;
}
"""


@dataclass(frozen=True)
class PlotLiveness:
    """What the sampler saw of the dashboard while the stream cell ran."""

    samples: int  # all ticks
    busy_samples: int  # ticks while the stream cell showed [*]
    plots: int  # .js-plotly-plot elements in the dashboard's output at the end
    counts: tuple[int, ...]  # distinct non-zero tokens/s point counts seen while [*], in order
    final_points: int  # tokens/s points at the end
    final_total: int  # points over all traces at the end
    span_s: float  # first non-zero count to the first sample at the final count, while [*]
    busy_s: float  # how long the sampler saw [*]
    max_gap_s: float  # the longest gap between ticks while [*]


def _rate_points(points: Sequence[Sequence[int] | None] | None) -> int:
    """Points of the tokens/s trace (trace 0), summed over the plots in the output."""
    return sum(p[0] for p in points or [] if p)


def _total_points(points: Sequence[Sequence[int] | None] | None) -> int:
    return sum(sum(p) for p in points or [] if p)


def measure(samples: Sequence[Sequence[Any]]) -> PlotLiveness:
    """Summarise ``[ms, ms since previous tick, points per trace per plot, busy]`` samples."""
    busy = [s for s in samples if s[3]]
    final_points = _rate_points(samples[-1][2]) if samples else 0
    counts: list[int] = []
    for _, _, points, _ in busy:
        n = _rate_points(points)
        if n > 0 and n not in counts:
            counts.append(n)
    first = next((t for t, _, p, _ in busy if _rate_points(p) > 0), None)
    first_final = next((t for t, _, p, _ in busy if _rate_points(p) == final_points), None)
    span = 0.0
    if final_points > 0 and first is not None and first_final is not None:
        span = (first_final - first) / 1000
    # A tick's gap belongs to the busy window if the tick itself was seen while [*].
    max_gap = max((gap for _, gap, _, _ in busy[1:]), default=0.0) / 1000
    return PlotLiveness(
        samples=len(samples),
        busy_samples=len(busy),
        plots=len(samples[-1][2] or []) if samples else 0,
        counts=tuple(counts),
        final_points=final_points,
        final_total=_total_points(samples[-1][2]) if samples else 0,
        span_s=round(span, 3),
        busy_s=round((busy[-1][0] - busy[0][0]) / 1000, 3) if busy else 0.0,
        max_gap_s=round(max_gap, 3),
    )


def is_live(seen: PlotLiveness) -> bool:
    """Whether the plot grew in front of the reader: several counts, over time, full at the end."""
    return (
        len(seen.counts) >= MIN_DISTINCT_COUNTS
        and seen.span_s >= MIN_SPAN_S
        and seen.final_points >= MIN_FINAL_POINTS
    )


def _sample_dashboard(page: Page, lab: Lab, notebook: str) -> tuple[PlotLiveness, str]:
    """Open ``notebook``, run its setup and dashboard cells, then sample the plot as the stream
    cell runs; returns what was seen and the timings."""
    started = time.monotonic()
    _open(page, lab, notebook)
    opened = time.monotonic()
    _run_cell(page, SETUP)
    _wait_done(page, SETUP)
    _run_cell(page, DASHBOARD)
    _wait_done(page, DASHBOARD)
    page.wait_for_function(DRAWN_JS, arg=DASHBOARD, polling=100)
    drawn = time.monotonic()

    page.evaluate(SAMPLER_JS, {"plotCell": DASHBOARD, "runCell": STREAM, "every": SAMPLE_MS})
    _run_cell(page, STREAM)
    _wait_done(page, STREAM)
    page.wait_for_timeout(500)  # the last frame (<= 0.25 s after the stream) and a few samples
    samples = page.evaluate(
        "() => { clearInterval(window.__streamkitPlot.timer);"
        " return window.__streamkitPlot.samples; }"
    )
    errors = _errors(page)
    assert not errors, f"{notebook} failed in the browser:\n" + "\n".join(errors)
    timings = (
        f"open {opened - started:.1f} s, setup + draw {drawn - opened:.1f} s, "
        f"total {time.monotonic() - started:.1f} s"
    )
    return measure(samples), timings


# -- the tests --------------------------------------------------------------------------------


def test_metrics_dashboard_draws_live_while_the_stream_runs(page: Page, lab: Lab) -> None:
    seen, timings = _sample_dashboard(page, lab, NOTEBOOK)
    print(f"dashboard: {seen}; {timings}")
    assert seen.plots == 1, seen
    assert seen.final_points >= MIN_FINAL_POINTS, seen
    # Live: the tokens/s trace grew in several steps, spread over time, while the cell ran.
    assert len(seen.counts) >= MIN_DISTINCT_COUNTS, seen
    assert seen.span_s >= MIN_SPAN_S, seen
    assert is_live(seen)
    # The page kept ticking through the stream (no frozen first draw).
    assert seen.busy_samples > 0, seen
    assert seen.max_gap_s <= MAX_FREEZE_S, seen


def test_dashboard_drawn_once_at_the_end_is_not_live(page: Page, lab: Lab) -> None:
    """The negative control: the same stream, drawn in one frame at its end, fails the check."""
    _write_control(lab.root / CONTROL, CONTROL_CELLS)
    seen, timings = _sample_dashboard(page, lab, CONTROL)
    print(f"drawn-once control: {seen}; {timings}")
    assert seen.final_points >= MIN_FINAL_POINTS, seen  # the points did arrive ...
    assert not is_live(seen), seen  # ... but not live
