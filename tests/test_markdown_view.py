"""The Markdown view, the chat box and the bundle, without a browser.

What the kernel sends (deltas with live figures, the saved Markdown, usage and cost at the end),
which view each name gives, the chat box's conversation against the bundled server, and that the
committed bundle is the build of the committed sources. Rendering, sanitizing and copying are
browser matters: tests/browser/test_lab_markdown.py.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_delta_view import FakeClock, Feeder, Recorder, ack

import streamkit as sk
from streamkit.errors import StreamInterrupted, UsageError
from streamkit.events import StreamRetry
from streamkit.render import ConsoleView, DeltaView, MarkdownView, auto_view, named_view
from streamkit.render.markdown import MarkdownText, stream_figures
from streamkit.server import RunningServer

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "streamkit" / "render" / "static"
JS = REPO / "js"


class FakeKernelShell:
    kernel = object()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def view(clock: FakeClock) -> Iterator[MarkdownView]:
    made = MarkdownView(max_tokens=2, max_delay=10, adaptive=False, clock=clock)
    yield made
    made.close()


# -- what the kernel sends ------------------------------------------------------------------


def test_only_new_text_is_sent_with_live_figures(view: MarkdownView, clock: FakeClock) -> None:
    sent = Recorder(view.text_widget)
    feed = Feeder(view, clock)
    pieces = ["# Ti", "tle", "\n\nA **b", "old**"]
    for piece, gap in zip(pieces, [0.25, 0.05, 0.05, 0.05], strict=True):
        feed.token(piece, gap)  # no event loop here: each token is flushed at once
    deltas = sent.deltas
    assert [d["text"] for d in deltas] == pieces
    assert [d["seq"] for d in deltas] == [0, 1, 2, 3]
    # TTFT from the request's sending, the rate over the gaps between tokens.
    assert [d["figures"] for d in deltas] == [
        "TTFT 250 ms · 1 token",
        "TTFT 250 ms · 20.0 tok/s · 2 tokens",
        "TTFT 250 ms · 20.0 tok/s · 3 tokens",
        "TTFT 250 ms · 20.0 tok/s · 4 tokens",
    ]
    assert view.text_widget.markdown == ""  # nothing saved while it streams


def test_finish_saves_the_markdown_and_the_usage_and_cost(
    view: MarkdownView, clock: FakeClock
) -> None:
    feed = Feeder(view, clock)
    feed.token("Hello", 0.1)
    feed.token(" **world**", 0.1)
    result = feed.end()
    assert view.text_widget.markdown == "Hello **world**"
    price = sk.PriceTable.default().price_for("sim-small")
    assert isinstance(price, sk.Price)
    cost = sk.cost_of(result.usage, "sim-small").total_usd  # type: ignore[arg-type]
    assert cost > 0
    assert view.text_widget.figures == (
        f"TTFT 100 ms · 10.0 tok/s · 3 in · 2 out tokens · ${cost:.6f}"
    )
    # The saved output is the transcript and the summary, as for every view.
    assert view.plain_text().startswith("Hello **world**\ncompleted · TTFT 100 ms")


def test_an_unpriced_model_shows_usage_without_a_cost() -> None:
    line = stream_figures(ttft=0.5, tokens=9, tokens_per_second=None, usage=(4, 9))
    assert line == "TTFT 500 ms · 4 in · 9 out tokens"


def test_a_new_stream_clears_the_saved_markdown(view: MarkdownView, clock: FakeClock) -> None:
    Feeder(view, clock).token("first", 0.1)
    view.finish(StreamResult_completed("first"))
    assert view.text_widget.markdown == "first"
    view.text_widget.figures = "old figures"
    feed = Feeder(view, clock)  # start() again
    assert view.text_widget.markdown == "" and view.text_widget.figures == ""
    feed.token("second", 0.1)
    assert view.text_widget.stream == 1


def test_a_restart_voids_the_text_and_begins_a_new_delta_stream(
    view: MarkdownView, clock: FakeClock
) -> None:
    sent = Recorder(view.text_widget)
    feed = Feeder(view, clock)
    feed.token("lost", 0.1)
    feed.token(" text", 0.1)
    error = StreamInterrupted("dropped", partial_text="lost text")
    feed.send(StreamRetry(error, 1, 0.1, None, clock.now, discarded=2))
    feed.token("kept", 0.1)
    feed.token(" text", 0.1)
    assert [(d["stream"], d["seq"], d["text"]) for d in sent.deltas] == [
        (0, 0, "lost"),
        (0, 1, " text"),
        (1, 0, "kept"),
        (1, 1, " text"),
    ]
    assert feed.end().text == "kept text"
    assert view.text_widget.markdown == "kept text"


def test_acknowledgements_measure_render_lag_as_for_the_delta_view(
    view: MarkdownView, clock: FakeClock
) -> None:
    feed = Feeder(view, clock)
    feed.token("a", 0.1)
    feed.token("b", 0.1)
    ack(view, 0, t=5000.0)
    assert [a.flush.seq for a in view.acks] == [0]
    assert len(view.render_lags) == 1


def test_a_late_view_gets_a_snapshot(view: MarkdownView, clock: FakeClock) -> None:
    sent = Recorder(view.text_widget)
    feed = Feeder(view, clock)
    feed.token("# Ti", 0.1)
    feed.token("tle", 0.1)
    view.text_widget._on_frontend_msg(view.text_widget, {"kind": "sync"}, [])
    assert sent.messages[-1] == {
        "kind": "snapshot",
        "stream": 0,
        "seq": 1,
        "text": "# Title",
        "reasoning": "",
        "thought": "",
        "tools": [],
    }


# -- which view a name gives ----------------------------------------------------------------


def test_auto_view_is_markdown_in_a_kernel_and_text_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import IPython

    monkeypatch.delenv("STREAMKIT_VIEW", raising=False)
    assert isinstance(auto_view(), ConsoleView)
    assert isinstance(named_view("text"), ConsoleView)
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    made = [auto_view(), named_view("auto"), named_view("widget"), named_view("markdown")]
    assert all(type(v) is MarkdownView for v in made)
    text = named_view("text")
    assert type(text) is DeltaView
    assert isinstance(named_view("console"), ConsoleView)
    for v in [*made, text]:
        v.close()  # type: ignore[attr-defined]


def test_an_unknown_view_name_says_which_exist() -> None:
    with pytest.raises(UsageError, match="view='fancy' is unknown: use 'auto', 'widget'"):
        named_view("fancy")


def test_the_markdown_view_is_public() -> None:
    assert sk.MarkdownView is MarkdownView
    assert "MarkdownView" in sk.__all__ and "ChatBox" in sk.__all__


# -- the chat box ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_chat_box_sends_the_history_and_regenerates(server: RunningServer) -> None:
    client = sk.Client(server.base_url, model="sim-small")
    box = sk.ChatBox(client, system="Be brief.", max_tokens=5, seed=1)
    try:
        assert box.send("   ") is None  # nothing to send
        first = box.send("What is TTFT?")
        assert first is not None and box.stop_button.layout.display == ""
        assert box.send("too soon") is None  # one reply at a time
        await first
        assert box.send_button.layout.display == "" and box.stop_button.layout.display == "none"
        second = box.send("And ITL?")
        assert second is not None
        reply = (await second).text
        assert [m["role"] for m in box.messages] == [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
        ]
        assert box.messages[-1]["content"] == reply
        # The second request carried the first turn: more prompt tokens than the first.
        first_usage, second_usage = (
            box.views[0].text_widget.figures,
            box.views[1].text_widget.figures,
        )
        assert _prompt_tokens(second_usage) > _prompt_tokens(first_usage)

        again = box.regenerate()
        assert again is not None
        await again
        assert [m["role"] for m in box.messages][-2:] == ["user", "assistant"]
        assert len(box.messages) == 5 and box.messages[-2]["content"] == "And ITL?"
        assert len(box.history_box.children) == 4  # two exchanges: the redone one replaced
        assert "user: What is TTFT?" in box.plain_text()
    finally:
        box.close()
        await client.aclose()


@pytest.mark.anyio
async def test_chat_box_stop_keeps_the_partial_reply(server: RunningServer) -> None:
    client = sk.Client(server.base_url, model="sim-small")
    box = sk.ChatBox(client, extra_body={"streamkit": {"tokens_per_second": 20}}, max_tokens=200)
    try:
        task = box.send("Write an essay about caching")
        assert task is not None
        while task.result.chunks < 3:
            await _tick()
        box.stop()
        result = await task
        assert result.status == "stopped"
        assert box.messages[-1] == {"role": "assistant", "content": result.text}
        assert box.status.value == ""  # a Stop is not an error
    finally:
        box.close()
        await client.aclose()


def test_chat_box_continues_a_saved_conversation() -> None:
    saved = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "**Hello**"},
    ]
    box = sk.ChatBox(sk.Client("http://127.0.0.1:9/v1", model="m"), messages=saved)
    try:
        assert box.messages == saved
        assert not box.regenerate_button.disabled
        bodies = [
            w
            for turn in box.history_box.children
            for w in turn.children  # type: ignore[attr-defined]
            if isinstance(w, MarkdownText)
        ]
        assert [b.markdown for b in bodies] == ["Hi", "**Hello**"]
    finally:
        box.close()
    with pytest.raises(UsageError, match="string role and content"):
        sk.ChatBox(sk.Client("http://127.0.0.1:9/v1", model="m"), messages=[{"role": "user"}])


# -- the bundle -----------------------------------------------------------------------------


def _sources_digest() -> str:
    # The digest js/build.mjs writes into each bundle's first line.
    digest = hashlib.sha256()
    for path in sorted((JS / "src").iterdir(), key=lambda p: p.name):
        digest.update((path.name + "\0" + path.read_text(encoding="utf-8") + "\0").encode())
    digest.update((JS / "package-lock.json").read_text(encoding="utf-8").encode())
    return digest.hexdigest()


@pytest.mark.parametrize("bundle", ["markdown.js", "delta.js"])
def test_the_committed_bundle_is_the_build_of_the_sources(bundle: str) -> None:
    first = (STATIC / bundle).read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.endswith(f"sources sha256 {_sources_digest()}"), (
        f"static/{bundle} is stale: run js/build.sh and commit the result"
    )


def test_the_bundle_is_offline_and_licensed() -> None:
    source = (STATIC / "markdown.js").read_text(encoding="utf-8")
    # One self-contained module: no import of anything, nothing from a CDN at run time.
    # (esbuild puts a bundle's imports first; grammars mention "import" everywhere else)
    code = source.split("\n", 1)[1]
    assert not code.lstrip().startswith("import"), code[:200]
    assert "import(" not in code
    for host in ("cdn.", "unpkg.com", "jsdelivr", "esm.sh", "cdnjs"):
        assert host not in source, host
    licenses = (STATIC / "THIRD_PARTY_LICENSES.txt").read_text(encoding="utf-8")
    for package in ("markdown-it", "highlight.js", "dompurify"):
        assert re.search(rf"^{re.escape(package)} \d", licenses, re.M), package
    assert (STATIC / "markdown.css").is_file()


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.02)


def _prompt_tokens(figures: str) -> int:
    match = re.search(r"(\d+) in · ", figures)
    assert match is not None, figures
    return int(match.group(1))


def StreamResult_completed(text: str) -> sk.StreamResult:
    from streamkit.events import TokenDelta

    result = sk.StreamResult(model="sim-small")
    result.apply(TokenDelta(text, 0, 1.0))
    return result


# -- reasoning and tool calls, against the bundled server --------------------------------------


@pytest.mark.anyio
async def test_reasoning_streams_as_its_own_part_then_the_answer(server: RunningServer) -> None:
    view = MarkdownView(max_tokens=1, adaptive=False)
    sent = Recorder(view.text_widget)
    try:
        async with sk.Client(server.base_url, model="sim-reasoner") as client:
            result = await client.chat(
                "Why is the sky blue?",
                view=view,
                seed=3,
                extra_body={"streamkit": {"ttft": 0, "tokens_per_second": 400, "length": 20}},
            )
        assert result.ok and result.reasoning and result.text
        deltas = sent.deltas
        thinking = [d for d in deltas if d.get("part") == "reasoning"]
        answer = [d for d in deltas if "part" not in d]
        # Delta-only: each part's pieces add up to its text, nothing sent twice.
        assert "".join(d["text"] for d in thinking) == result.reasoning
        assert "".join(d["text"] for d in answer) == result.text
        assert len(thinking) > 3 and all(d["thinking"].startswith("Thinking… ") for d in thinking)
        # One seq space for both parts; all the thinking came before the answer.
        assert [d["seq"] for d in deltas] == list(range(len(deltas)))
        assert max(d["seq"] for d in thinking) < min(d["seq"] for d in answer)
        # The first answer delta ends the thinking, once.
        labels = [d["thought"] for d in deltas if "thought" in d]
        assert len(labels) == 1 and answer[0].get("thought") == labels[0]
        assert re.fullmatch(r"Thought for \d+\.\d s", labels[0])
        # A late view's snapshot carries both texts.
        widget = view.text_widget
        widget._on_frontend_msg(widget, {"kind": "sync"}, [])
        snapshot = sent.messages[-1]
        assert snapshot["kind"] == "snapshot" and snapshot["seq"] == deltas[-1]["seq"]
        assert (snapshot["text"], snapshot["reasoning"]) == (result.text, result.reasoning)
        assert snapshot["thought"] == labels[0] and snapshot["tools"] == []
        # Saved: the Markdown, the reasoning, and an HTML transcript with the thinking folded.
        assert widget.markdown == result.text and widget.reasoning == result.reasoning
        assert widget.thought == labels[0]
        assert widget.value.startswith(f"<details><summary>{labels[0]}</summary>")
        assert html.escape(result.reasoning, quote=False) in widget.value
        # Acks still time the answer's flushes only (reasoning seqs hold no flush).
        ack(view, answer[1]["seq"], t=5000.0)
        assert [a.flush.seq for a in view.acks] == [answer[0]["seq"], answer[1]["seq"]]
    finally:
        view.close()


@pytest.mark.anyio
async def test_tool_calls_stream_as_their_own_part(server: RunningServer) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    view = MarkdownView(max_tokens=1, adaptive=False)
    sent = Recorder(view.text_widget)
    try:
        async with sk.Client(server.base_url, model="sim-small") as client:
            result = await client.chat(
                "Weather in Paris?", view=view, seed=5, tools=tools, tool_choice="required"
            )
        assert result.ok and result.tool_calls
        pieces = [d for d in sent.deltas if d.get("part") == "tool"]
        assert len(pieces) > 2
        assert [d["name"] for d in pieces if "name" in d] == [c.name for c in result.tool_calls]
        for call in result.tool_calls:
            mine = [d for d in pieces if d["call"] == call.index]
            assert "".join(d["text"] for d in mine) == call.arguments
        saved = view.text_widget.tools
        assert saved == [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
        widget = view.text_widget
        widget._on_frontend_msg(widget, {"kind": "sync"}, [])
        assert sent.messages[-1]["tools"] == saved
        # The saved HTML holds the call, escaped, its arguments indented.
        first = result.tool_calls[0]
        assert f"<code>{first.name}</code>" in widget.value
        assert html.escape(json.dumps(json.loads(first.arguments), indent=2), quote=False) in (
            widget.value
        )
    finally:
        view.close()


def test_hostile_reasoning_is_escaped_in_the_saved_value(
    view: MarkdownView, clock: FakeClock
) -> None:
    from streamkit.events import ReasoningDelta

    feed = Feeder(view, clock)
    feed.send(ReasoningDelta('<img src=x onerror="alert(1)">', 0, clock.now))
    feed.token("ok", 0.1)
    feed.end()
    value = view.text_widget.value
    assert "<img" not in value and "&lt;img src=x onerror=" in value
    assert view.text_widget.reasoning == '<img src=x onerror="alert(1)">'


def test_a_new_stream_forgets_the_reasoning_and_tools(view: MarkdownView, clock: FakeClock) -> None:
    from streamkit.events import ReasoningDelta, ToolCallDelta

    feed = Feeder(view, clock)
    feed.send(ReasoningDelta("hmm", 0, clock.now))
    feed.send(ToolCallDelta(0, "call_1", "f", '{"a": 1}', 1, clock.now))
    feed.end()
    widget = view.text_widget
    assert widget.reasoning == "hmm" and widget.tools == [{"name": "f", "arguments": '{"a": 1}'}]
    Feeder(view, clock)  # start() again
    assert (widget.reasoning, widget.thought, widget.tools) == ("", "", [])
    assert widget.snapshot_extra() == {"reasoning": "", "thought": "", "tools": []}


def test_thinking_is_coalesced_to_at_most_25_messages_a_second(
    view: MarkdownView, clock: FakeClock
) -> None:
    from streamkit.events import ReasoningDelta
    from streamkit.render.markdown import REASONING_GAP

    sent = Recorder(view.text_widget)
    feed = Feeder(view, clock)
    pieces = [f"w{i} " for i in range(200)]  # two seconds of thinking at 100 pieces/s
    for i, piece in enumerate(pieces):
        clock.now += 0.01
        feed.send(ReasoningDelta(piece, i, clock.now))
    feed.index = len(pieces)
    feed.token("Answer", 0.01)  # the held tail goes out before the answer
    thinking = [d for d in sent.deltas if d.get("part") == "reasoning"]
    assert "".join(d["text"] for d in thinking) == "".join(pieces)  # nothing lost or doubled
    assert len(thinking) <= 2 / REASONING_GAP + 2  # ≤ 25 a second, not 100
    assert len(thinking) >= 2 / REASONING_GAP - 2  # and still live: about one per gap
    answer = [d for d in sent.deltas if d.get("part") is None]
    assert sent.deltas.index(thinking[-1]) < sent.deltas.index(answer[0])
