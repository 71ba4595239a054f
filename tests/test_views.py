"""Views driven by real events on a real asyncio loop: text must show up while the stream runs."""

from __future__ import annotations

import asyncio
import html
import io
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest

import streamkit.render.widget as widget_module
from streamkit.errors import ServerError, StreamCancelled, StreamkitError, UsageError
from streamkit.events import Event, StreamEnd, StreamError, StreamStart, TokenDelta, Usage
from streamkit.render import (
    BufferedView,
    ConsoleView,
    View,
    WidgetView,
    auto_view,
    view_kind,
)
from streamkit.result import StreamResult

MODEL = "sim-small"


def words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


class Feeder:
    """Plays the runner: folds every event into a result and hands it to the view."""

    def __init__(self, view: View, on_stop: Any = None) -> None:
        self.view = view
        self.result = StreamResult(model=MODEL)
        self.index = 0
        view.start(model=MODEL, prompt="Explain SSE", on_stop=on_stop)
        now = time.perf_counter()
        self.send(StreamStart(sent_at=now, time=now, model=MODEL))

    def send(self, event: Event) -> None:
        self.result.apply(event)
        self.view.on_event(event)

    def token(self, text: str) -> None:
        self.send(TokenDelta(text, self.index, time.perf_counter()))
        self.index += 1

    def end(self) -> StreamResult:
        usage = Usage(prompt_tokens=3, completion_tokens=self.index, total_tokens=3 + self.index)
        self.send(StreamEnd("stop", usage, time.perf_counter()))
        self.view.finish(self.result)
        return self.result

    def fail(self, error: StreamkitError) -> StreamResult:
        self.send(StreamError(error, time.perf_counter()))
        self.view.finish(self.result)
        return self.result


async def play(view: View, texts: Sequence[str], gap: float) -> Feeder:
    feeder = Feeder(view)
    for text in texts:
        await asyncio.sleep(gap)
        feeder.token(text)
    return feeder


class RecordingFile(io.StringIO):
    """A StringIO that notes its length and the time whenever the writer flushes it."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[tuple[float, int]] = []

    def flush(self) -> None:
        super().flush()
        self.flushes.append((time.perf_counter(), len(self.getvalue())))


# -- the View protocol ---------------------------------------------------------------------


def test_views_satisfy_the_view_protocol() -> None:
    console = ConsoleView(io.StringIO())
    assert isinstance(console, View)
    assert isinstance(console, BufferedView)
    widget = WidgetView()
    try:
        assert isinstance(widget, View)
    finally:
        widget.close()


def test_settings_are_validated_when_a_view_is_made() -> None:
    with pytest.raises(UsageError, match=r"max_delay=-1 is out of range"):
        ConsoleView(io.StringIO(), max_delay=-1)


# -- ConsoleView ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_console_text_arrives_progressively() -> None:
    out = RecordingFile()
    view = ConsoleView(out, max_tokens=4, max_delay=0.03)
    texts = words(24)
    feeder = await play(view, texts, gap=0.01)
    shown_before_end = len(out.getvalue())
    feeder.end()

    assert out.getvalue() == "".join(texts) + "\n"
    assert shown_before_end >= len("".join(texts[:20]))
    lengths = [n for _, n in out.flushes]
    assert lengths == sorted(lengths)
    assert len(set(lengths)) >= 5, lengths
    # Each flush wrote one batch: fewer writes than tokens, and every write was a whole batch.
    assert 5 <= view.flush_count < len(texts)
    assert view.flush_log[-1][1] == len("".join(texts))
    times = [t for t, _ in view.flush_log]
    assert times == sorted(times)
    assert times[-1] - times[0] > 0.1  # spread over the stream, not bunched at the end


@pytest.mark.anyio
async def test_console_time_flush_fires_with_no_further_tokens() -> None:
    out = RecordingFile()
    view = ConsoleView(out, max_tokens=100, max_delay=0.05)
    feeder = Feeder(view)
    first = time.perf_counter()
    for text in ("Hel", "lo", " there"):
        feeder.token(text)
    assert out.getvalue() == ""
    await asyncio.sleep(0.15)
    # No token came after the third, and the text is still shown: the loop timer flushed it.
    assert out.getvalue() == "Hello there"
    assert view.flush_count == 1
    flushed_at, chars = view.flush_log[0]
    assert chars == len("Hello there")
    assert flushed_at >= first + 0.05
    feeder.end()
    assert out.getvalue() == "Hello there\n"


@pytest.mark.anyio
async def test_raising_max_delay_mid_stream_rearms_the_timer() -> None:
    out = io.StringIO()
    view = ConsoleView(out, max_tokens=100, max_delay=0.02)
    feeder = Feeder(view)
    feeder.token("a")
    view.buffer.max_delay = 0.3
    feeder.token("b")
    await asyncio.sleep(0.1)
    assert out.getvalue() == ""  # the old 20 ms deadline no longer holds
    await asyncio.sleep(0.4)
    assert out.getvalue() == "ab"
    feeder.end()


@pytest.mark.anyio
async def test_lowering_max_tokens_mid_stream_flushes_at_the_next_token() -> None:
    out = io.StringIO()
    view = ConsoleView(out, max_tokens=10, max_delay=5)
    feeder = Feeder(view)
    for text in "abc":
        feeder.token(text)
    view.buffer.max_tokens = 2
    assert out.getvalue() == ""
    feeder.token("d")
    assert out.getvalue() == "abcd"
    feeder.end()


@pytest.mark.anyio
async def test_console_end_flushes_everything_waiting_and_summarises() -> None:
    out, status = io.StringIO(), io.StringIO()
    view = ConsoleView(out, status, max_tokens=100, max_delay=5)
    feeder = Feeder(view)
    for text in ("one ", "two\n"):
        feeder.token(text)
    result = feeder.end()
    # The text already ends its line, so no extra newline.
    assert out.getvalue() == "one two\n"
    assert status.getvalue() == result.summary() + "\n"
    assert status.getvalue().startswith("completed · ")


@pytest.mark.anyio
async def test_console_failure_keeps_partial_text_and_names_the_error() -> None:
    out = io.StringIO()
    view = ConsoleView(out, max_tokens=2, max_delay=5)
    feeder = Feeder(view)
    for text in ("partial ", "text ", "kept"):
        feeder.token(text)
    error = ServerError("upstream\nfell over", status_code=502, partial_text="partial text kept")
    feeder.fail(error)
    assert out.getvalue() == "partial text kept\n[failed: ServerError: upstream fell over]\n"


@pytest.mark.anyio
async def test_console_failure_goes_to_status_when_given() -> None:
    out, status = io.StringIO(), io.StringIO()
    view = ConsoleView(out, status)
    feeder = Feeder(view)
    feeder.token("half")
    feeder.fail(ServerError("boom", status_code=500, partial_text="half"))
    assert out.getvalue() == "half\n"
    assert status.getvalue() == "[failed: ServerError: boom]\n"


@pytest.mark.anyio
async def test_console_stopped_stream_writes_stopped() -> None:
    out = io.StringIO()
    view = ConsoleView(out)
    feeder = Feeder(view)
    feeder.token("so far")
    feeder.fail(StreamCancelled("stopped by the user", partial_text="so far"))
    assert out.getvalue() == "so far\n[stopped]\n"


@pytest.mark.anyio
async def test_finish_without_an_end_event_still_shows_every_token() -> None:
    # A cancelled task may end without a StreamEnd or StreamError reaching the view.
    out = io.StringIO()
    view = ConsoleView(out, max_tokens=100, max_delay=5)
    feeder = Feeder(view)
    for text in "abc":
        feeder.token(text)
    feeder.result.status = "stopped"
    view.finish(feeder.result)
    assert out.getvalue() == "abc\n[stopped]\n"
    await asyncio.sleep(0)


def test_finish_shows_text_the_view_never_received_as_events() -> None:
    out = io.StringIO()
    view = ConsoleView(out)
    feeder = Feeder(view)
    feeder.token("seen ")
    feeder.result.apply(TokenDelta("and missed", 1, time.perf_counter()))
    feeder.end()
    assert out.getvalue() == "seen and missed\n"
    assert view.text == "seen and missed"


def test_console_without_a_loop_shows_every_token_at_once() -> None:
    # Plain synchronous code: no loop can fire a deadline, so nothing may wait for one.
    out = io.StringIO()
    view = ConsoleView(out, max_tokens=100, max_delay=5)
    feeder = Feeder(view)
    for i, text in enumerate(("a", "b", "c")):
        feeder.token(text)
        assert out.getvalue() == "abc"[: i + 1]
    feeder.end()
    assert out.getvalue() == "abc\n"


def test_console_defaults_to_the_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    view = ConsoleView()
    feeder = Feeder(view)
    feeder.token("to stdout")
    feeder.end()
    assert capsys.readouterr().out == "to stdout\n"


def test_console_view_is_reusable() -> None:
    out = io.StringIO()
    view = ConsoleView(out, max_tokens=1)
    Feeder(view).token("first")
    feeder = Feeder(view)
    assert view.text == "" and view.flush_log == []
    feeder.token("second")
    feeder.end()
    assert view.text == "second"


# -- WidgetView ----------------------------------------------------------------------------


@pytest.fixture
def widget_view() -> Any:
    view = WidgetView(max_tokens=4, max_delay=0.03)
    yield view
    view.close()


def unwrap(value: str) -> str:
    """The text inside the HTML widget's <pre>, unescaped."""
    match = re.fullmatch(r"<pre[^>]*>(.*)</pre>", value, flags=re.DOTALL)
    assert match is not None
    return html.unescape(match.group(1))


def shown_text(view: WidgetView) -> str:
    return unwrap(view.text_widget.value)


@pytest.mark.anyio
async def test_widget_text_grows_live_in_many_steps(widget_view: WidgetView) -> None:
    updates: list[tuple[float, int]] = []

    def record(change: dict[str, Any]) -> None:
        updates.append((time.perf_counter(), len(unwrap(change["new"]))))

    widget_view.text_widget.observe(record, names="value")
    texts = words(40)
    feeder = await play(widget_view, texts, gap=0.01)
    feeder.end()
    widget_view.text_widget.unobserve(record, names="value")

    assert shown_text(widget_view) == "".join(texts)
    lengths = [n for _, n in updates]
    assert lengths == sorted(lengths)
    assert len(set(lengths)) >= 5, updates
    # Live means live: the first text appeared long before the last (the stream takes ~0.4 s).
    assert updates[0][1] < len("".join(texts)) / 4, updates
    assert updates[-1][0] - updates[0][0] > 0.2, updates
    # ...and batched: one message per flush, fewer than one per token.
    assert len(updates) == widget_view.flush_count
    assert len(updates) < len(texts)


@pytest.mark.anyio
async def test_widget_plain_text_holds_the_transcript(widget_view: WidgetView) -> None:
    assert widget_view._repr_mimebundle_()["text/plain"] == "WidgetView (no stream yet)"
    feeder = await play(widget_view, ["Hello", ", ", "world", "!", " <&>"], gap=0.001)
    widget_view.flush()
    bundle = widget_view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "Hello, world! <&>\n[sim-small · streaming…]"
    result = feeder.end()
    plain = widget_view._repr_mimebundle_()["text/plain"]
    assert plain == "Hello, world! <&>\n" + result.summary()
    assert "&lt;&amp;&gt;" in widget_view.text_widget.value
    assert "completed" in widget_view.header.value
    assert result.summary() in widget_view.status_widget.value


@pytest.mark.anyio
async def test_widget_stop_button_calls_on_stop_once(widget_view: WidgetView) -> None:
    calls: list[str] = []
    feeder = Feeder(widget_view, on_stop=lambda: calls.append("stop"))
    feeder.token("before stop")
    assert not widget_view.stop_button.disabled
    widget_view.stop_button.click()
    assert calls == ["stop"]
    assert widget_view.stop_button.disabled
    widget_view.stop_button.click()
    assert calls == ["stop"]
    feeder.fail(StreamCancelled("stopped by the user", partial_text="before stop"))
    assert "stopped" in widget_view.header.value
    assert shown_text(widget_view) == "before stop"
    assert widget_view.plain_text().startswith("before stop\n[stopped]\nstopped · ")
    await asyncio.sleep(0)


def test_widget_stop_button_is_disabled_without_on_stop_or_stream(
    widget_view: WidgetView,
) -> None:
    assert widget_view.stop_button.disabled
    feeder = Feeder(widget_view, on_stop=None)
    assert widget_view.stop_button.disabled
    widget_view.stop_button.click()  # nothing to call, nothing happens
    feeder.end()
    assert widget_view.stop_button.disabled


@pytest.mark.anyio
async def test_widget_failure_shows_error_and_keeps_partial_text(widget_view: WidgetView) -> None:
    feeder = await play(widget_view, ["partial ", "<text>"], gap=0.001)
    feeder.fail(ServerError("model crashed", status_code=500, partial_text="partial <text>"))
    assert shown_text(widget_view) == "partial <text>"
    assert "failed" in widget_view.header.value
    assert "ServerError: model crashed" in widget_view.status_widget.value
    plain = widget_view.plain_text()
    assert plain.startswith("partial <text>\n[failed: ServerError: model crashed]\n")


def test_widget_displays_itself_once_and_updates_its_output_on_finish(
    monkeypatch: pytest.MonkeyPatch, widget_view: WidgetView
) -> None:
    shown: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []

    class Handle:
        def update(self, obj: dict[str, Any], **kwargs: Any) -> None:
            assert kwargs == {"raw": True}
            updated.append(obj)

    def fake_display(obj: dict[str, Any], **kwargs: Any) -> Handle:
        assert kwargs == {"raw": True, "display_id": True}
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(widget_module, "shell_active", lambda: True)
    monkeypatch.setattr(widget_module, "display", fake_display)

    feeder = Feeder(widget_view)
    assert len(shown) == 1
    assert "application/vnd.jupyter.widget-view+json" in shown[0]
    for text in ("a", "b", "c"):
        feeder.token(text)
    assert updated == []  # no display updates per token: the widget carries the live text
    result = feeder.end()
    assert len(updated) == 1
    assert updated[0]["text/plain"] == "abc\n" + result.summary()

    # Reuse: start() clears the panel and does not display a second copy.
    feeder = Feeder(widget_view)
    assert len(shown) == 1
    assert widget_view.text == "" and shown_text(widget_view) == ""
    assert "streaming…" in widget_view.header.value
    feeder.token("again")
    feeder.end()
    assert len(updated) == 2
    assert updated[1]["text/plain"].startswith("again\n")


def test_widget_outside_ipython_does_not_print(
    capsys: pytest.CaptureFixture[str], widget_view: WidgetView
) -> None:
    feeder = Feeder(widget_view)
    feeder.token("quiet")
    feeder.end()
    assert capsys.readouterr().out == ""
    assert shown_text(widget_view) == "quiet"


# -- choosing a view -----------------------------------------------------------------------


class FakeKernelShell:
    kernel = object()


@pytest.mark.parametrize(
    ("setting", "kind"),
    [("widget", "widget"), ("console", "console"), ("CONSOLE", "console"), (" widget ", "widget")],
)
def test_view_kind_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, setting: str, kind: str
) -> None:
    monkeypatch.setenv("STREAMKIT_VIEW", setting)
    assert view_kind() == kind


@pytest.mark.parametrize("setting", ["auto", ""])
def test_view_kind_auto_is_console_outside_a_kernel(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("STREAMKIT_VIEW", setting)
    assert view_kind() == "console"
    monkeypatch.delenv("STREAMKIT_VIEW")
    assert view_kind() == "console"
    assert isinstance(auto_view(), ConsoleView)


def test_view_kind_auto_is_widget_inside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython

    monkeypatch.delenv("STREAMKIT_VIEW", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    assert view_kind() == "widget"
    view = auto_view(max_tokens=2, max_delay=0.01)
    assert isinstance(view, WidgetView)
    try:
        assert (view.buffer.max_tokens, view.buffer.max_delay) == (2, 0.01)
    finally:
        view.close()
    # IPython in a terminal has no kernel and cannot show widgets.
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    assert view_kind() == "console"


def test_view_kind_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKIT_VIEW", "fancy")
    message = "STREAMKIT_VIEW='fancy' is not a valid view: set it to widget, console or auto"
    with pytest.raises(UsageError, match=re.escape(message)):
        view_kind()
    with pytest.raises(UsageError, match="STREAMKIT_VIEW"):
        auto_view()
