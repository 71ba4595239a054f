"""Every notebook, Run All in a real JupyterLab: no errors, live text and plots, no freeze.

For each ``notebooks/*.ipynb`` (a sorted glob: a new notebook is picked up by itself), the test
opens it in the JupyterLab of ``test_lab_live.py`` (a temporary copy of ``notebooks/``, kernels
with ``STREAMKIT_VIEW=widget``), runs Run > Run All Cells from the menu as a reader would, and a
25 ms sampler in the page records, until every cell has run: whether any cell still shows
``[*]``, the text length of every streamkit view (``.streamkit-view``, in page order), the point
counts of every plotly ``FigureWidget`` (those announce their first draw with plotly's
``plotlywidget-after-render`` event; static ``fig.show()`` figures do not), and the time since
the previous tick (a frozen page ticks late). Then, per notebook:

1. no cell shows an error or other stderr output, and every code cell has an execution count;
2. every streamkit view's text grew live while cells ran (``test_lab_live.is_live``);
3. every FigureWidget gained points live while cells ran (``test_lab_dashboard.is_live``);
4. the page never froze: the longest gap between ticks while cells ran stays under 2.5 s.

What each notebook shows is written down in ``EXPECTATIONS`` (notebook name to the views and
figures it must show live, in page order). A notebook missing from it fails, and so does one
that shows more or fewer views or figures than listed: new content needs its expectations.

The set-once controls of ``test_lab_live.py`` and ``test_lab_dashboard.py`` keep the two liveness
predicates honest; a third control here runs a notebook through the same Run All pipeline and
checks that a view set once, a dashboard drawn once, a failing cell and the cells after it are
all reported.

``STREAMKIT_SCREENSHOT=1`` saves ``docs/dashboard-live.png``: the load dashboard of
``05_metrics.ipynb`` mid-run, cropped to the figure. Same requirements and skip/fail rules as
``test_lab_live.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest

from . import test_lab_dashboard as dashboard_check
from . import test_lab_live as text_check
from .test_lab_live import REPO, Lab, _errors, _open, _write_control, browser, lab, page

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["browser", "lab", "page"]  # the fixtures, imported for pytest to find

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOKS = sorted(path.name for path in (REPO / "notebooks").glob("*.ipynb"))
SAMPLE_MS = 25
MAX_FREEZE_S = 2.5  # the longest gap between two sampler ticks while cells run
SCREENSHOT = REPO / "docs" / "dashboard-live.png"
SCREENSHOT_NOTEBOOK = "05_metrics.ipynb"
SCREENSHOT_FIGURE = 1  # the load dashboard: fifty requests
CONTROL = "run_all_control.ipynb"


@dataclass(frozen=True)
class Text:
    """A streamkit view whose text must grow live: bounds for ``test_lab_live.is_live``."""

    min_lengths: int = text_check.MIN_PARTIAL_LENGTHS
    min_span_s: float = text_check.MIN_SPAN_S
    min_final: int = text_check.MIN_FINAL_LENGTH


@dataclass(frozen=True)
class Figure:
    """A plotly FigureWidget that must gain points live (``test_lab_dashboard.is_live``)."""


@dataclass(frozen=True)
class Expect:
    """What a notebook shows live, in page order, and how long Run All may take."""

    texts: tuple[Text, ...] = ()
    figures: tuple[Figure, ...] = ()
    deadline_s: float = 150.0


EXPECTATIONS: dict[str, Expect] = {
    # sk.chat into a view (120 tokens, ~5 s), then start_chat into a second one, stopped after
    # 1.5 s: ~27 tokens, part of them behind the page's first plotly draw (the figure above it).
    # Then a Markdown reply of sim-markdown (~300 tokens at 60/s) and the chat box's reply.
    "00_quickstart.ipynb": Expect(
        texts=(Text(), Text(min_lengths=3, min_span_s=0.2, min_final=60), Text(), Text())
    ),
    # Console views (text on stdout) and tables: nothing live to watch in a widget.
    "01_sse.ipynb": Expect(),
    "02_websocket.ipynb": Expect(),
    "03_retry.ipynb": Expect(),
    # The DeltaView under the controls panel (300 tokens at 40/s), then the sweep's DeltaView.
    "04_batching.ipynb": Expect(texts=(Text(), Text()), deadline_s=200.0),
    # The stream's view (80 tokens, ~3.6 s) starts as the page loads plotly.js for the first
    # dashboard (~1.5 s on 2 cores): it is seen live for the rest. Then the load dashboard.
    "05_metrics.ipynb": Expect(
        texts=(Text(min_lengths=6, min_span_s=0.8, min_final=300),),
        figures=(Figure(), Figure()),
    ),
    "06_cost.ipynb": Expect(),
    # The dashboard follows a 60-request closed-loop load run.
    "07_load.ipynb": Expect(figures=(Figure(),), deadline_s=200.0),
    # A reasoning reply's answer (~115 tokens at 30/s, after ~1.6 s of thinking the view does
    # not show); the phase chart, one bar per request as six requests start 0.4 s apart; the
    # answer after the tool call (100 tokens at 40/s; the call itself is in a plain HTML box);
    # the same chat over Chat Completions and the Responses API at once (~110 tokens at 40/s).
    "08_reasoning_and_tools.ipynb": Expect(
        texts=(Text(), Text(), Text(), Text()), figures=(Figure(),)
    ),
}

# Every `every` ms: [ms since start, ms since the previous tick, whether any code cell shows
# [*], text length of each .streamkit-view (-1 without its <pre>), points per trace of each
# FigureWidget (null before plotly drew it)].
SAMPLER_JS = """
({every, selector}) => {
  const t0 = performance.now();
  let last = t0;
  const samples = [];
  const figures = new WeakSet();
  // plotly's FigureWidget view announces its first draw; a static fig.show() does not.
  const onDraw = (event) => {
    if (event.detail && event.detail.element) figures.add(event.detail.element);
  };
  document.addEventListener('plotlywidget-after-render', onDraw);
  const figureElements = () =>
    [...document.querySelectorAll('.jp-Notebook .js-plotly-plot')].filter(el => figures.has(el));
  const probe = () => {
    const now = performance.now();
    const prompts = document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt');
    const busy = [...prompts].some(p => p.textContent.includes('*'));
    const texts = [...document.querySelectorAll('.jp-Notebook .streamkit-view')].map(view => {
      const pre = view.querySelector(selector);  // the Markdown body, or a plain view's <pre>
      return pre ? pre.textContent.length : -1;
    });
    const points = figureElements().map(
      el => Array.isArray(el.data) ? el.data.map(t => (t.x ? t.x.length : 0)) : null);
    samples.push([now - t0, now - last, busy, texts, points]);
    last = now;
  };
  probe();
  const timer = setInterval(probe, every);
  window.__streamkitRunAll = {
    samples,
    figureElements,
    stop: () => {
      clearInterval(timer);
      document.removeEventListener('plotlywidget-after-render', onDraw);
      return samples;
    },
  };
}
"""

# Every code cell's prompt: "[3]:" once it ran, "[ ]:" if it never did.
PROMPTS_JS = """
() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
  .map(p => p.textContent.trim())
"""

RUNNING_JS = "() => window.__streamkitRunAll.samples.some(s => s[2])"
FINISHED_JS = """
() => {
  const samples = window.__streamkitRunAll.samples;
  const status = document.querySelector('#jp-main-statusbar')?.textContent ?? '';
  return !samples[samples.length - 1][2] && status.includes('| Idle');
}
"""

# Mid-run of the load: the figure has tokens/s points and TTFT points, and cells still run.
SCREENSHOT_READY_JS = """
(index) => {
  const samples = window.__streamkitRunAll.samples;
  const el = window.__streamkitRunAll.figureElements()[index];
  return samples[samples.length - 1][2] && el !== undefined && Array.isArray(el.data)
    && el.data[0].x && el.data[0].x.length >= 4 && el.data[2].x && el.data[2].x.length >= 20;
}
"""

# Scrolls figure `index` to the middle of the notebook; returns the box of its drawing.
SCROLL_TO_FIGURE_JS = """
(index) => {
  const figure = window.__streamkitRunAll.figureElements()[index];
  figure.scrollIntoView({ block: 'center' });
  const box = (figure.querySelector('.main-svg') ?? figure).getBoundingClientRect();
  return { x: box.x, y: box.y, width: box.width, height: box.height };
}
"""


@dataclass
class RunAll:
    """What the sampler and the page showed for one Run All."""

    notebook: str
    samples: list[Any]
    prompts: list[str]
    code_cells: int  # in the .ipynb file
    errors: list[str]
    open_s: float
    run_s: float


@dataclass
class Report:
    """The checks of one Run All against its expectations; ``failures`` empty means it passed."""

    texts: list[text_check.Liveness] = field(default_factory=list)
    figures: list[dashboard_check.PlotLiveness] = field(default_factory=list)
    dead_texts: list[int] = field(default_factory=list)
    dead_figures: list[int] = field(default_factory=list)
    unexecuted: list[int] = field(default_factory=list)
    max_gap_s: float = 0.0
    failures: list[str] = field(default_factory=list)


def _code_cells(path: Path) -> int:
    notebook = nbformat.read(path, as_version=4)
    return sum(1 for cell in notebook.cells if cell.cell_type == "code")


def _run_all(
    page: Page, lab: Lab, notebook: str, deadline_s: float, screenshot: Path | None
) -> RunAll:
    """Open ``notebook``, Run All from the menu, and sample the page until every cell ran."""
    started = time.monotonic()
    _open(page, lab, notebook)
    opened = time.monotonic()
    page.evaluate(SAMPLER_JS, {"every": SAMPLE_MS, "selector": text_check.VIEW_TEXT_SELECTOR})
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(RUNNING_JS, polling=100, timeout=30_000)
    if screenshot is not None:
        page.wait_for_function(SCREENSHOT_READY_JS, arg=SCREENSHOT_FIGURE, polling=50)
        # The notebook lays out off-screen cells lazily: scroll first, let it settle, then clip
        # the page to where the figure is now.
        page.mouse.move(0, 0)  # off the figure: no hover toolbar in the picture
        page.evaluate(SCROLL_TO_FIGURE_JS, SCREENSHOT_FIGURE)
        page.wait_for_timeout(400)
        clip = page.evaluate(SCROLL_TO_FIGURE_JS, SCREENSHOT_FIGURE)
        page.screenshot(path=str(screenshot), clip=clip)
    page.wait_for_function(FINISHED_JS, polling=250, timeout=deadline_s * 1000)
    page.wait_for_timeout(600)  # the last frames (a dashboard draws <= 0.25 s after a run)
    samples: list[Any] = page.evaluate("() => window.__streamkitRunAll.stop()")
    return RunAll(
        notebook=notebook,
        samples=samples,
        prompts=page.evaluate(PROMPTS_JS),
        code_cells=_code_cells(lab.root / notebook),
        # Tracebacks and stderr text (a progress bar's bare carriage return is not an error).
        errors=[text for text in _errors(page) if text.strip()],
        open_s=round(opened - started, 1),
        run_s=round(time.monotonic() - opened, 1),
    )


def _text_series(samples: Sequence[Sequence[Any]], index: int) -> list[list[Any]]:
    """``[ms, text length, cells running]`` of view ``index``, as ``test_lab_live`` measures."""
    return [[t, s[index] if index < len(s) else -1, busy] for t, _, busy, s, _ in samples]


def _figure_series(samples: Sequence[Sequence[Any]], index: int) -> list[list[Any]]:
    """``[ms, gap, [points per trace], cells running]`` of figure ``index``, as
    ``test_lab_dashboard`` measures (one plot in the output)."""
    return [[t, gap, [p[index]] if index < len(p) else [], busy] for t, gap, busy, _, p in samples]


def check(expect: Expect, run: RunAll) -> Report:
    """Check one Run All against what its notebook should show."""
    report = Report()
    samples = run.samples
    if run.errors:
        report.failures.append("error output: " + " | ".join(e[:300] for e in run.errors))
    if len(run.prompts) != run.code_cells:
        report.failures.append(
            f"{len(run.prompts)} code cells on the page, {run.code_cells} in the file"
        )
    report.unexecuted = [i for i, p in enumerate(run.prompts) if not any(c.isdigit() for c in p)]
    if report.unexecuted:
        report.failures.append(f"code cells without an execution count: {report.unexecuted}")

    views = len(samples[-1][3]) if samples else 0
    if views != len(expect.texts):
        report.failures.append(f"{views} streamkit views on the page, {len(expect.texts)} expected")
    for index, bounds in enumerate(expect.texts):
        seen = text_check.measure(_text_series(samples, index))
        report.texts.append(seen)
        live = text_check.is_live(
            seen,
            min_lengths=bounds.min_lengths,
            min_span_s=bounds.min_span_s,
            min_final=bounds.min_final,
        )
        if not live:
            report.dead_texts.append(index)
            report.failures.append(f"view {index} did not grow live: {seen} (needs {bounds})")

    figures = len(samples[-1][4]) if samples else 0
    if figures != len(expect.figures):
        report.failures.append(
            f"{figures} FigureWidgets on the page, {len(expect.figures)} expected"
        )
    for index in range(len(expect.figures)):
        plot = dashboard_check.measure(_figure_series(samples, index))
        report.figures.append(plot)
        if not dashboard_check.is_live(plot):
            report.dead_figures.append(index)
            report.failures.append(f"figure {index} did not gain points live: {plot}")

    busy = [s for s in samples if s[2]]
    # A tick's gap belongs to the run if the tick itself saw cells running.
    report.max_gap_s = round(max((s[1] for s in busy[1:]), default=0.0) / 1000, 3)
    if report.max_gap_s >= MAX_FREEZE_S:
        report.failures.append(f"the page froze for {report.max_gap_s} s while cells ran")
    return report


def _describe(run: RunAll, report: Report) -> str:
    texts = ", ".join(
        f"view {i}: {t.partial_lengths} lengths over {t.span_s:.2f} s to {t.final_length}"
        for i, t in enumerate(report.texts)
    )
    figures = ", ".join(
        f"figure {i}: counts {f.counts} over {f.span_s} s" for i, f in enumerate(report.figures)
    )
    busy = [s for s in run.samples if s[2]][1:]
    # Where the page stalled: the three longest gaps (s) and when they ended (s into the run).
    stalls = ", ".join(
        f"{gap / 1000:.2f}@{t / 1000:.1f}" for t, gap, *_ in sorted(busy, key=lambda s: -s[1])[:3]
    )
    frozen = sum(s[1] for s in busy if s[1] > 250) / 1000
    return (
        f"{run.notebook}: open {run.open_s} s, Run All {run.run_s} s, {len(run.samples)} ticks, "
        f"longest gaps {stalls}, {frozen:.1f} s in gaps > 0.25 s; "
        f"{texts or 'no views'}; {figures or 'no figures'}"
    )


# -- the tests --------------------------------------------------------------------------------


def test_every_notebook_has_expectations() -> None:
    """A new notebook must say what it shows live before it is checked."""
    missing = [name for name in NOTEBOOKS if name not in EXPECTATIONS]
    assert not missing, f"add {missing} to EXPECTATIONS in {Path(__file__).name}"
    assert "00_quickstart.ipynb" in NOTEBOOKS  # the glob found the notebooks


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_run_all_shows_streams_live(page: Page, lab: Lab, notebook: str) -> None:
    assert notebook in EXPECTATIONS, f"add {notebook} to EXPECTATIONS in {Path(__file__).name}"
    expect = EXPECTATIONS[notebook]
    screenshot = None
    if notebook == SCREENSHOT_NOTEBOOK and os.environ.get("STREAMKIT_SCREENSHOT") == "1":
        screenshot = SCREENSHOT
    run = _run_all(page, lab, notebook, expect.deadline_s, screenshot)
    report = check(expect, run)
    print(_describe(run, report))
    assert not report.failures, "\n".join([_describe(run, report), *report.failures])


# The control: a view that gets its text once at the end (its buffer flushes only on finish), a
# dashboard that draws the stream in one frame after it ended, then a failing cell and a cell
# that Run All never reaches.
CONTROL_CELLS = [
    "import streamkit as sk\n\n"
    "client = sk.Client()\n"
    "collector = sk.MetricsCollector()\n"
    "view = sk.WidgetView(max_tokens=10_000, max_delay=10.0)",
    "dashboard = sk.Dashboard(sk.MetricsCollector()).show()",
    "view",
    "result = await client.chat(\n"
    '    "Explain server-sent events",\n'
    '    model="sim-large",\n'
    "    max_tokens=120,\n"
    "    view=view,\n"
    "    observers=[collector],\n"
    ")\n"
    "dashboard.collector = collector\n"
    "drawn = dashboard.refresh()",
    'raise RuntimeError("the control fails here")',
    'print("never runs")',
]


def test_run_all_checks_catch_a_notebook_that_is_not_live(page: Page, lab: Lab) -> None:
    """The negative control: set-once text, a drawn-once dashboard and a failure are reported."""
    _write_control(lab.root / CONTROL, CONTROL_CELLS)
    # The same bounds as the quickstart's stream and the dashboards.
    expect = Expect(texts=(Text(),), figures=(Figure(),), deadline_s=60.0)
    run = _run_all(page, lab, CONTROL, expect.deadline_s, None)
    report = check(expect, run)
    print("control: " + _describe(run, report))
    assert report.texts[0].final_length >= text_check.MIN_FINAL_LENGTH, report  # text arrived
    assert report.figures[0].final_points >= dashboard_check.MIN_FINAL_POINTS, report
    assert report.dead_texts == [0], report  # ... but not live
    assert report.dead_figures == [0], report
    assert any("the control fails here" in e for e in run.errors), run.errors
    assert report.unexecuted == [5], run.prompts
