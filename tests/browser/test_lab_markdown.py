"""The Markdown view and the chat box in a real JupyterLab, in headless Chromium.

Uses the JupyterLab, browser and page of ``test_lab_live.py`` (kernels with
``STREAMKIT_VIEW=widget``, where ``sk.chat`` shows a :class:`~streamkit.MarkdownView`). A 25 ms
sampler in the page records, while a cell runs, what the view's rendered body holds: headings,
list items, tables, code blocks, highlight.js spans, its text length, and whether any raw
Markdown markup (a fence's backticks, ``**``, a table row's pipes) is visible outside code.

- structure appears *during* the stream, in many partial states, never as raw markup, and code
  is highlighted; the page never stalls for 250 ms or more while the cell runs;
- a hostile reply (``<script>``, ``<img onerror>``, ``javascript:`` links, an iframe) is shown
  as inert text: the flag its payload would set stays unset and no such element exists;
- the copy buttons put the reply's Markdown, and a code block's code, on the clipboard;
- the chat box holds a three-turn conversation whose requests carry the history;
- a reasoning model's thinking fills a collapsed Thinking section while it streams, before the
  answer grows, and expands on a click; tool calls show as cards whose arguments grow live;
  hostile text in the thinking stays inert.

Hostile and scripted replies come from the small OpenAI-compatible server of
``tests/_foreign.py`` (the simulator cannot be told what to say), which records every request.
Same requirements and skip/fail rules as ``test_lab_live.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import _foreign  # tests/ is on sys.path (rootdir conftest), as for tests/test_conventions.py
import pytest
from _foreign import Foreign, foreign_server

from streamkit.server.textgen import tokenize

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

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SAMPLE_MS = 25
MAX_STALL_MS = 250  # the longest gap between two sampler ticks while the cell runs
MIN_PARTIAL_STATES = 8  # distinct (text length, structure) states seen while streaming

STREAM_NOTEBOOK = "markdown_live.ipynb"
STREAM_CELLS = [
    "import streamkit as sk\n\nserver = sk.default_server()",
    'result = await sk.chat("Explain streaming", model="sim-markdown", seed=7)\n'
    'assert result.ok and "```" in result.text and "| ---" in result.text',
]

# Every `every` ms, of the Markdown view in code cell `index`: [ms since start, ms since the
# previous tick, cell running, text length, h1+h2 count, li count, table count, code blocks,
# hljs spans, raw markup visible outside code blocks (the text around it, or "")].
SAMPLER_JS = """
({index, every}) => {
  const t0 = performance.now();
  let last = t0;
  const samples = [];
  const probe = () => {
    const now = performance.now();
    const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[index];
    const body = cell ? cell.querySelector('.streamkit-md-body') : null;
    const prompt = cell ? cell.querySelector('.jp-InputPrompt') : null;
    const busy = prompt ? prompt.textContent.includes('*') : false;
    let row = [now - t0, now - last, busy, -1, 0, 0, 0, 0, 0, ''];
    if (body) {
      const count = (selector) => body.querySelectorAll(selector).length;
      const prose = body.cloneNode(true);
      for (const code of prose.querySelectorAll('.streamkit-md-code')) code.remove();
      const text = prose.textContent;
      const match = /```|\\*\\*|(^|\\n)\\s*\\|/.exec(text);
      const raw = match ? text.slice(Math.max(0, match.index - 40), match.index + 40) : '';
      row = [now - t0, now - last, busy, body.textContent.length, count('h1, h2'), count('li'),
             count('table'), count('pre code'), count('pre code span[class^="hljs-"]'), raw];
    }
    samples.push(row);
    last = now;
  };
  probe();
  window.__streamkitMarkdown = { samples, timer: setInterval(probe, every) };
}
"""
STOP_SAMPLER_JS = """
() => {
  clearInterval(window.__streamkitMarkdown.timer);
  return window.__streamkitMarkdown.samples;
}
"""

HOSTILE = (
    "# Hello\n\n"
    "Some text <script>window.__pwned = 'script'</script> and more.\n\n"
    "<img src=x onerror=\"window.__pwned = 'img'\">\n\n"
    "[click me](javascript:window.__pwned='link') and ![pic](javascript:window.__pwned='image')\n\n"
    "<iframe srcdoc=\"<script>parent.__pwned = 'iframe'</script>\"></iframe>\n\n"
    "<a href=\"javascript:window.__pwned='anchor'\" onclick=\"window.__pwned='click'\">a</a>\n\n"
    "[fine](https://example.com/docs)\n"
)
HOSTILE_CHECK_JS = """
(index) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[index];
  const view = cell.querySelector('.streamkit-md');
  const attrs = [...view.querySelectorAll('*')].flatMap(
    (el) => [...el.attributes].map((a) => [el.tagName, a.name, a.value]));
  return {
    pwned: window.__pwned ?? null,
    dangerous: view.querySelectorAll('script, iframe, img, object, embed').length,
    onAttributes: attrs.filter(([, name]) => name.startsWith('on')).length,
    jsUrls: attrs.filter(([, , value]) => /^\\s*javascript:/i.test(value)).length,
    links: [...view.querySelectorAll('.streamkit-md-body a')].map(
      (a) => [a.getAttribute('href'), a.getAttribute('target'), a.getAttribute('rel')]),
    text: view.querySelector('.streamkit-md-body').textContent,
  };
}
"""

COPY_REPLY = (
    "## Copy me\n\n"
    "A paragraph with **bold** text.\n\n"
    "```python\n"
    "def double(x):\n"
    "    return 2 * x\n"
    "```\n"
)


@dataclass(frozen=True)
class Seen:
    """What the sampler saw of one streaming Markdown view."""

    partial_states: int  # distinct (length, structure) states while the cell ran, before final
    during: dict[str, bool]  # each structure seen while the cell still ran
    highlighted: bool  # hljs spans seen at the end
    raw_samples: list[str]  # raw markup seen outside code, with the text around it
    max_gap_ms: float  # the longest gap between ticks while the cell ran
    final_length: int


def summarise(samples: Sequence[Sequence[Any]]) -> Seen:
    """Summarise the sampler's rows (see SAMPLER_JS)."""
    busy = [s for s in samples if s[2]]
    final = samples[-1]
    states = {tuple(s[3:8]) for s in busy if s[3] > 0 and tuple(s[3:8]) != tuple(final[3:8])}
    names = {"heading": 4, "list item": 5, "table": 6, "code block": 7}
    during = {name: any(s[col] > 0 for s in busy) for name, col in names.items()}
    return Seen(
        partial_states=len(states),
        during=during,
        highlighted=final[8] > 0,
        raw_samples=[s[9] for s in samples if s[9]],
        max_gap_ms=max((s[1] for s in busy[1:]), default=0.0),
        final_length=int(final[3]),
    )


@pytest.fixture
def scripted() -> Iterator[Foreign]:
    """A foreign OpenAI-compatible server (records requests) whose reply the test sets."""
    with foreign_server(models=["scripted"]) as server:
        yield server


def _say(monkeypatch: pytest.MonkeyPatch, reply: str) -> None:
    # The foreign server streams its module's REPLY, one piece per chunk.
    monkeypatch.setattr(_foreign, "REPLY", tokenize(reply))


def _run_notebook(page: Page, lab: Lab, name: str, cells: list[str]) -> None:
    """Write ``cells`` as notebook ``name``, open it, and run every cell but the last."""
    _write_control(lab.root / name, cells)
    _open(page, lab, name)
    for index in range(len(cells) - 1):
        _run_cell(page, index)
        _wait_done(page, index)


def _check_no_errors(page: Page, name: str) -> None:
    errors = [text for text in _errors(page) if text.strip()]
    assert not errors, f"{name} failed in the browser:\n" + "\n".join(errors)


# -- the tests --------------------------------------------------------------------------------


def test_markdown_renders_live_structured_and_highlighted(page: Page, lab: Lab) -> None:
    _run_notebook(page, lab, STREAM_NOTEBOOK, STREAM_CELLS)
    page.evaluate(SAMPLER_JS, {"index": 1, "every": SAMPLE_MS})
    _run_cell(page, 1)
    _wait_done(page, 1)
    page.wait_for_timeout(400)  # the final render
    samples = page.evaluate(STOP_SAMPLER_JS)
    _check_no_errors(page, STREAM_NOTEBOOK)
    seen = summarise(samples)
    print(f"markdown stream: {seen}")
    assert seen.final_length > 600, seen
    assert seen.partial_states >= MIN_PARTIAL_STATES, seen
    assert all(seen.during.values()), seen  # every structure showed up before the cell ended
    assert seen.highlighted, seen
    assert not seen.raw_samples, seen
    assert seen.max_gap_ms < MAX_STALL_MS, seen


def test_hostile_reply_is_inert(
    page: Page, lab: Lab, scripted: Foreign, monkeypatch: pytest.MonkeyPatch
) -> None:
    _say(monkeypatch, HOSTILE)
    name = "markdown_hostile.ipynb"
    cells = [
        f"import streamkit as sk\n\nclient = sk.Client({scripted.base_url!r}, model='scripted')",
        'result = await client.chat("hello")\nassert result.ok',
        # The control: the same kind of payload through a trusted HTML output does run.
        "from IPython.display import HTML\n\n"
        "HTML('<img src=x onerror=\"window.__pwned = \\'control\\'\">')",
    ]
    _run_notebook(page, lab, name, cells)  # every cell but the control
    page.wait_for_timeout(500)
    # Click everything that looks like a link: a javascript: URL that survived would run now.
    for link in page.locator(".jp-CodeCell .streamkit-md-body a").all():
        link.click(modifiers=["Control"])  # a new tab for the good link; nothing for the rest
    page.wait_for_timeout(300)
    _check_no_errors(page, name)
    found = page.evaluate(HOSTILE_CHECK_JS, 1)
    print(f"hostile: {found}")
    assert found["pwned"] is None, found
    assert found["dangerous"] == 0, found
    assert found["onAttributes"] == 0, found
    assert found["jsUrls"] == 0, found
    # The raw HTML is shown as text, inert; the one good link opens a new tab, safely.
    assert "<script>window.__pwned" in found["text"], found
    assert "<iframe" in found["text"], found
    assert found["links"] == [["https://example.com/docs", "_blank", "noopener noreferrer"]], found
    # The flag is a working detector: an unsanitized output in the same page sets it.
    _run_cell(page, 2)
    _wait_done(page, 2)
    page.wait_for_function("() => window.__pwned === 'control'", timeout=10_000)


def test_copy_buttons_put_markdown_and_code_on_the_clipboard(
    page: Page, lab: Lab, scripted: Foreign, monkeypatch: pytest.MonkeyPatch
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
    _say(monkeypatch, COPY_REPLY)
    name = "markdown_copy.ipynb"
    cells = [
        f"import streamkit as sk\n\nclient = sk.Client({scripted.base_url!r}, model='scripted')",
        'result = await client.chat("hello")\nassert result.ok',
    ]
    _run_notebook(page, lab, name, cells)
    _run_cell(page, 1)
    _wait_done(page, 1)
    view = page.locator(".jp-CodeCell .streamkit-md").first
    view.locator(".streamkit-md-code pre code.hljs").wait_for()
    view.locator("button.streamkit-md-copy").click()
    page.wait_for_function(
        "() => document.querySelector('.streamkit-md-copy').textContent === 'Copied'"
    )
    assert page.evaluate("() => navigator.clipboard.readText()") == COPY_REPLY
    view.locator("button.streamkit-md-copy-code").click()
    page.wait_for_timeout(200)
    code = page.evaluate("() => navigator.clipboard.readText()")
    assert code == "def double(x):\n    return 2 * x\n"
    _check_no_errors(page, name)


def test_chat_box_holds_a_three_turn_conversation(
    page: Page, lab: Lab, scripted: Foreign, monkeypatch: pytest.MonkeyPatch
) -> None:
    _say(monkeypatch, "A reply with a list:\n\n- one\n- two\n")
    name = "chat_box.ipynb"
    cells = [
        "import streamkit as sk\n\n"
        f"client = sk.Client({scripted.base_url!r}, model='scripted')\n"
        "box = sk.ChatBox(client, system='Be brief.')\n"
        "box",
        "import json\n\nprint('MESSAGES', json.dumps(box.messages))",
    ]
    _write_control(lab.root / name, cells)
    _open(page, lab, name)
    _run_cell(page, 0)
    _wait_done(page, 0)
    chat = page.locator(".jp-CodeCell .streamkit-chat").first
    prompts = ["first question", "second question", "third question"]
    for turn, prompt in enumerate(prompts, start=1):
        chat.locator("textarea").fill(prompt)
        chat.get_by_role("button", name="Send").click()
        # The reply is in (its view says completed) and Send is back.
        page.wait_for_function(
            """(n) => {
              const chat = document.querySelector('.jp-CodeCell .streamkit-chat');
              const done = [...chat.querySelectorAll('.streamkit-view')]
                .filter((v) => v.textContent.includes('· completed'));
              return done.length === n && [...chat.querySelectorAll('button')]
                .some((b) => b.textContent.includes('Send') && b.offsetParent !== null);
            }""",
            arg=turn,
            polling=100,
            timeout=30_000,
        )
    # What the server received: every request carries the history before it.
    sent = [[m["role"] for m in request["messages"]] for request in scripted.requests]
    assert sent == [
        ["system", "user"],
        ["system", "user", "assistant", "user"],
        ["system", "user", "assistant", "user", "assistant", "user"],
    ], sent
    assert [r["messages"][-1]["content"] for r in scripted.requests] == prompts
    users = chat.locator(".streamkit-chat-user .streamkit-md-body").all_inner_texts()
    assert [u.strip() for u in users] == prompts
    assert chat.locator(".streamkit-view .streamkit-md-body li").count() == 6
    # The conversation is plain data in the kernel.
    _run_cell(page, 1)
    _wait_done(page, 1)
    printed = page.locator(".jp-CodeCell").nth(1).locator(".jp-OutputArea").inner_text()
    assert '"role": "assistant"' in printed and printed.count('"role": "user"') == 3, printed
    _check_no_errors(page, name)


# Every `every` ms, of code cell `index`: [cell running, thinking text length, answer text
# length, tool-call card count, tool-call arguments length, Thinking section open, its label].
PIECES_SAMPLER_JS = """
({index, every}) => {
  const samples = [];
  const probe = () => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-CodeCell')[index];
    const q = (s) => (cell ? cell.querySelector(s) : null);
    const prompt = q('.jp-InputPrompt');
    const thinking = q('.streamkit-md-thinking');
    const body = q('.streamkit-md-thinking-body');
    const answer = q('.streamkit-md-body');
    const args = cell ? [...cell.querySelectorAll('.streamkit-md-tool-args')] : [];
    samples.push([
      prompt ? prompt.textContent.includes('*') : false,
      body ? body.textContent.length : -1,
      answer ? answer.textContent.length : -1,
      cell ? cell.querySelectorAll('.streamkit-md-tool').length : 0,
      args.reduce((n, a) => n + a.textContent.length, 0),
      thinking ? thinking.open : null,
      thinking ? thinking.querySelector('summary').textContent : '',
    ]);
  };
  probe();
  window.__streamkitPieces = { samples, timer: setInterval(probe, every) };
}
"""
STOP_PIECES_JS = """
() => {
  clearInterval(window.__streamkitPieces.timer);
  return window.__streamkitPieces.samples;
}
"""
HOSTILE_THINKING = "Let me think <img src=x onerror=\"window.__pwned = 'thinking'\"> **carefully**."


def _sampled(page: Page, index: int) -> list[list[Any]]:
    page.evaluate(PIECES_SAMPLER_JS, {"index": index, "every": SAMPLE_MS})
    _run_cell(page, index)
    _wait_done(page, index)
    page.wait_for_timeout(400)  # the final render
    samples: list[list[Any]] = page.evaluate(STOP_PIECES_JS)
    return samples


def test_thinking_streams_live_collapsed_before_the_answer(page: Page, lab: Lab) -> None:
    name = "markdown_thinking.ipynb"
    cells = [
        "import streamkit as sk\n\nserver = sk.default_server()",
        'result = await sk.chat("Think, then explain caching", model="sim-reasoner", seed=7,\n'
        '    extra_body={"streamkit": {"tokens_per_second": 40}})\n'
        "assert result.ok and result.reasoning and result.text",
    ]
    _run_notebook(page, lab, name, cells)
    samples = _sampled(page, 1)
    _check_no_errors(page, name)
    busy = [s for s in samples if s[0]]
    growing = sorted({s[1] for s in busy if s[1] > 0 and s[2] <= 0})
    print(f"thinking lengths before the answer: {len(growing)}; last sample {samples[-1]}")
    # The thinking grew in many steps while the cell ran, before any answer text showed.
    assert len(growing) >= MIN_PARTIAL_STATES, growing
    assert any(s[6].startswith("Thinking…") for s in busy), samples[-5:]
    # Then the answer grew while the thinking stood still, labelled with how long it took.
    answers = sorted({s[2] for s in busy if s[2] > 0})
    assert len(answers) >= MIN_PARTIAL_STATES, answers
    final = samples[-1]
    assert final[1] == max(s[1] for s in samples) and final[2] > 0
    assert final[6].startswith("Thought for "), final
    # Collapsed throughout; a click on its summary expands it.
    assert all(s[5] is False for s in samples if s[1] > 0), samples
    thinking = page.locator(".jp-CodeCell").nth(1).locator(".streamkit-md-thinking")
    assert not thinking.locator(".streamkit-md-thinking-body").is_visible()
    thinking.locator("summary").click()
    assert thinking.evaluate("(d) => d.open") is True
    assert thinking.locator(".streamkit-md-thinking-body").is_visible()


def test_tool_call_cards_grow_live(page: Page, lab: Lab) -> None:
    name = "markdown_tools.ipynb"
    cells = [
        "import streamkit as sk\n\nserver = sk.default_server()\n"
        "WEATHER = {'type': 'function', 'function': {'name': 'get_weather', 'parameters': "
        "{'type': 'object', 'properties': {'city': {'type': 'string'}}}}}",
        'result = await sk.chat("Weather in Paris?", model="sim-small", seed=5, tools=[WEATHER],\n'
        '    tool_choice="required", extra_body={"streamkit": {"tokens_per_second": 15}})\n'
        "assert result.ok and result.tool_calls",
    ]
    _run_notebook(page, lab, name, cells)
    samples = _sampled(page, 1)
    _check_no_errors(page, name)
    busy = [s for s in samples if s[0]]
    lengths = sorted({s[4] for s in busy if s[3] > 0})
    print(f"tool-call argument lengths while streaming: {lengths}")
    assert len(lengths) >= 4, lengths  # the arguments grew in steps, live
    card = page.locator(".jp-CodeCell").nth(1).locator(".streamkit-md-tool").first
    assert card.locator(".streamkit-md-tool-name").inner_text() == "get_weather"
    args = card.locator(".streamkit-md-tool-args").inner_text()
    assert args.startswith("{\n  "), args  # complete JSON: pretty-printed


def test_hostile_thinking_is_inert(page: Page, lab: Lab) -> None:
    name = "markdown_hostile_thinking.ipynb"
    # The view driven with the stream's own events, so the thinking can say anything.
    cells = [
        "import asyncio, time\n"
        "import streamkit as sk\n"
        "from streamkit.events import ReasoningDelta, StreamEnd, TokenDelta\n"
        "view = sk.MarkdownView()",
        "view.start(model='m')\n"
        f"for i, piece in enumerate({HOSTILE_THINKING!r}.split(' ')):\n"
        "    view.on_event(ReasoningDelta(piece + ' ', i, time.perf_counter()))\n"
        "    await asyncio.sleep(0.03)\n"
        "view.on_event(TokenDelta('Done.', 99, time.perf_counter()))\n"
        "result = sk.StreamResult(model='m')\n"
        "result.apply(TokenDelta('Done.', 99, time.perf_counter()))\n"
        "view.finish(result)",
    ]
    _run_notebook(page, lab, name, cells)
    _run_cell(page, 1)
    _wait_done(page, 1)
    page.wait_for_timeout(400)
    thinking = page.locator(".jp-CodeCell .streamkit-md-thinking").first
    thinking.locator("summary").click()
    page.wait_for_timeout(200)
    _check_no_errors(page, name)
    found = page.evaluate(HOSTILE_CHECK_JS, 1)  # the view shows itself in the cell that streams
    text = thinking.locator(".streamkit-md-thinking-body").inner_text()
    print(f"hostile thinking: {found}; {text!r}")
    assert found["pwned"] is None and found["dangerous"] == 0, found
    assert found["onAttributes"] == 0, found
    assert "<img src=x onerror=" in text, text  # shown as text


def test_summarise_catches_a_view_set_once() -> None:
    """The negative control, without a browser: a view whose text appears only at the end."""
    empty = [-1, 0, 0, 0, 0, 0, ""]
    final = [900, 3, 4, 1, 1, 12, ""]
    samples = [[25.0 * i, 25.0, True, *empty] for i in range(40)]
    samples += [[1000.0, 25.0, True, *final], [1025.0, 25.0, False, *final]]
    seen = summarise(samples)
    assert seen.partial_states < MIN_PARTIAL_STATES, seen
