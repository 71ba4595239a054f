"""The quickstart's stream renders live in a real JupyterLab, in headless Chromium.

nbval never sees widget updates, so only a browser can tell a live view from one that shows the
whole text at the end. JupyterLab runs in a temporary copy of ``notebooks/`` (kernels use the
widget view: ``STREAMKIT_VIEW=widget``); Playwright drives Debian's Chromium (never a downloaded
browser), runs the quickstart's first two code cells from the keyboard, and a 25 ms sampler in the
page records how long the text in the widget's ``<pre>`` is while the stream cell runs.

A negative control keeps the check honest: a notebook that streams with no view and shows the
text once, at the end, must fail the same check.

Requirements: ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` module.
Without them the tests skip, unless ``STREAMKIT_REQUIRE_BROWSER=1`` (CI), where they fail.
``STREAMKIT_SCREENSHOT=1`` saves the mid-stream screenshot to ``docs/quickstart-live.png``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
QUICKSTART = "00_quickstart.ipynb"
CONTROL = "set_once_control.ipynb"
SCREENSHOT = REPO / "docs" / "quickstart-live.png"

# What "live" means. The quickstart's stream is 120 tokens of sim-large (~25 tokens/s, ~0.4 s to
# the first token): about 5 s, and the widget's text is updated ~20 times a second.
MIN_PARTIAL_LENGTHS = 8  # distinct text lengths seen between empty and final
MIN_SPAN_S = 1.5  # from the first visible text to the final text
MIN_FINAL_LENGTH = 300  # characters of the finished reply
SAMPLE_MS = 25

# The negative control: the same stream, but the page gets the text once, after it ended.
CONTROL_CELLS = [
    "import html\n\nimport ipywidgets\n\nimport streamkit as sk\n\nserver = sk.default_server()",
    "result = await sk.chat(\n"
    '    "Explain server-sent events", model="sim-large", max_tokens=120, view=None\n'
    ")\n"
    'ipywidgets.HTML(f"<pre>{html.escape(result.text)}</pre>")',
]

# Where a view's text is, whatever the view: the rendered body of the Markdown view (the default
# in JupyterLab), else the <pre> of the plain-text views (an ipywidgets.HTML, or a DeltaText).
# CSS picks the first match in page order, and the Markdown body comes before its code blocks.
VIEW_TEXT_SELECTOR = ".streamkit-md-body, .widget-html-content pre, .streamkit-delta pre"

# The in-page sampler: every `every` ms, the text length of the view in code cell `index`
# (-1 while there is none) and whether that cell's prompt says it is running ("[*]:").
SAMPLER_JS = """
({index, every, selector}) => {
  const t0 = performance.now();
  const samples = [];
  const probe = () => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[index];
    const pre = cell ? cell.querySelector(selector) : null;
    const prompt = cell ? cell.querySelector('.jp-InputPrompt') : null;
    const busy = prompt ? prompt.textContent.includes('*') : false;
    samples.push([performance.now() - t0, pre ? pre.textContent.length : -1, busy]);
  };
  probe();
  window.__streamkitSampler = { samples, timer: setInterval(probe, every) };
}
"""


# -- the liveness check -----------------------------------------------------------------------


@dataclass(frozen=True)
class Liveness:
    """What the sampler saw of one stream cell."""

    samples: int
    partial_lengths: int  # distinct lengths with 0 < length < final, seen while the cell ran
    span_s: float  # first non-empty sample to the first sample at the final length
    final_length: int


def measure(samples: Sequence[Sequence[Any]]) -> Liveness:
    """Summarise ``[ms since start, text length, cell running]`` samples."""
    final = int(samples[-1][1]) if samples else -1
    partial = {int(n) for _, n, busy in samples if busy and 0 < n < final}
    first_text = next((t for t, n, _ in samples if n > 0), None)
    first_final = next((t for t, n, _ in samples if n == final), None)
    span = 0.0
    if final > 0 and first_text is not None and first_final is not None:
        span = (first_final - first_text) / 1000
    return Liveness(len(samples), len(partial), span, final)


def is_live(
    seen: Liveness,
    *,
    min_lengths: int = MIN_PARTIAL_LENGTHS,
    min_span_s: float = MIN_SPAN_S,
    min_final: int = MIN_FINAL_LENGTH,
) -> bool:
    """Whether the text grew in front of the reader: many lengths over time, long at the end.

    The defaults fit the quickstart's stream; a shorter stream (one stopped early) passes its
    own, smaller bounds through the same predicate.
    """
    return (
        seen.partial_lengths >= min_lengths
        and seen.span_s >= min_span_s
        and seen.final_length >= min_final
    )


# -- JupyterLab and the browser ---------------------------------------------------------------


def _require_browser() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright module (pip install playwright)")
    if not missing:
        return
    message = "browser test needs " + " and ".join(missing)
    if os.environ.get("STREAMKIT_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(message + " (STREAMKIT_REQUIRE_BROWSER is set)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def delete_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def _write_control(path: Path, cells: Sequence[str] = CONTROL_CELLS) -> None:
    """Write a notebook of code ``cells`` (a negative control) for the lab to open."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a free port, serving a temporary copy of the notebooks."""
    _require_browser()
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    _write_control(root / CONTROL)
    dirs = {
        name: base / name.lower()
        for name in (
            "JUPYTER_CONFIG_DIR",
            "JUPYTER_RUNTIME_DIR",
            "JUPYTERLAB_SETTINGS_DIR",
            "JUPYTERLAB_WORKSPACES_DIR",
        )
    }
    for path in dirs.values():
        path.mkdir()
    # Without this a "Jupyter news?" toast covers the page.
    notification = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')

    env = {**os.environ, **{name: str(path) for name, path in dirs.items()}}
    env["STREAMKIT_VIEW"] = "widget"  # inherited by the kernels
    token = secrets.token_hex(16)
    port = _free_port()
    log = base / "jupyterlab.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                f"--IdentityProvider.token={token}",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={root}",
                "--allow-root",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Lab(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{running.log_tail()}")
            try:
                running.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 60 s:\n{running.log_tail()}")
                time.sleep(0.25)
        yield running
    finally:
        try:
            if server.poll() is None:
                running.delete_kernels()
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium under Playwright."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(lab: Lab, browser: Browser) -> Iterator[Page]:
    """A fresh page; afterwards its kernels are deleted, so the next test has the CPU to itself."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    try:
        yield context.new_page()
    finally:
        try:
            context.close()
        finally:
            lab.delete_kernels()


def _open(page: Page, lab: Lab, notebook: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}&reset")
    # The toolbar's indicator says idle while the kernel still connects; the status bar does not.
    page.wait_for_function(
        "() => (document.querySelector('#jp-main-statusbar')?.textContent ?? '')"
        ".includes('| Idle')",
        polling=100,
    )
    # Fold the file browser away: a wider notebook, and a screenshot that shows only the notebook.
    files = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]')
    if "lm-mod-current" in (files.get_attribute("class") or ""):
        files.click()
        page.locator("#filebrowser").wait_for(state="hidden")


def _run_cell(page: Page, index: int) -> None:
    """Click into code cell ``index`` and run it in place with Ctrl+Enter."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")


def _wait_done(page: Page, index: int) -> None:
    """Wait until code cell ``index`` shows its execution count (``[n]:``)."""
    page.wait_for_function(
        """(index) => {
          const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[index];
          const prompt = cell ? cell.querySelector('.jp-InputPrompt') : null;
          return prompt !== null && /\\[\\d+\\]/.test(prompt.textContent);
        }""",
        arg=index,
        polling=100,
    )


def _errors(page: Page) -> list[str]:
    """Tracebacks and other stderr output shown in the notebook."""
    return page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()


def _stream_and_sample(page: Page, lab: Lab, notebook: str, screenshot: Path | None) -> Liveness:
    """Open ``notebook``, run its setup cell, then sample the text as cell 2 runs."""
    _open(page, lab, notebook)
    _run_cell(page, 0)
    _wait_done(page, 0)
    page.evaluate(SAMPLER_JS, {"index": 1, "every": SAMPLE_MS, "selector": VIEW_TEXT_SELECTOR})
    _run_cell(page, 1)
    if screenshot is not None:
        # Mid-stream: some text is there and the cell still runs.
        page.wait_for_function(
            """() => {
              const last = window.__streamkitSampler.samples.at(-1);
              return last[1] >= 300 && last[2];
            }""",
            polling=50,
        )
        page.screenshot(path=str(screenshot))
    _wait_done(page, 1)
    page.wait_for_timeout(300)  # a few more samples of the final text
    samples = page.evaluate(
        """() => {
          clearInterval(window.__streamkitSampler.timer);
          return window.__streamkitSampler.samples;
        }"""
    )
    errors = _errors(page)
    assert not errors, f"{notebook} failed in the browser:\n" + "\n".join(errors)
    return measure(samples)


# -- the tests --------------------------------------------------------------------------------


def test_quickstart_stream_renders_live(page: Page, lab: Lab, tmp_path: Path) -> None:
    if os.environ.get("STREAMKIT_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        screenshot = SCREENSHOT
    else:
        screenshot = tmp_path / "quickstart-live.png"
    started = time.monotonic()
    seen = _stream_and_sample(page, lab, QUICKSTART, screenshot)
    print(f"quickstart: {seen} in {time.monotonic() - started:.1f} s; screenshot {screenshot}")
    assert seen.final_length >= MIN_FINAL_LENGTH, seen
    assert seen.partial_lengths >= MIN_PARTIAL_LENGTHS, seen
    assert seen.span_s >= MIN_SPAN_S, seen
    assert is_live(seen)
    assert screenshot.stat().st_size > 0


def test_text_set_once_at_the_end_is_not_live(page: Page, lab: Lab) -> None:
    """The negative control: the same stream, shown once at the end, fails the same check."""
    seen = _stream_and_sample(page, lab, CONTROL, None)
    print(f"set-once control: {seen}")
    assert seen.final_length >= MIN_FINAL_LENGTH, seen  # the text did arrive ...
    assert not is_live(seen), seen  # ... but not live
