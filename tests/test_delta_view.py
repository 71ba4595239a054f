"""The delta view and the controls panel without a browser: what the kernel sends and measures.

``DeltaText.send`` is replaced by a recorder, so each test sees exactly the custom messages a
browser would get; acknowledgements are fed in as the browser would send them. Only a browser test
can show that the text appears on screen (tests/browser/test_lab_batching.py).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import traitlets

import streamkit.render.widget as widget_module
from streamkit.batching import PRESETS, AdaptivePolicy
from streamkit.errors import StreamInterrupted, UsageError
from streamkit.events import Event, StreamEnd, StreamRetry, StreamStart, TokenDelta, Usage
from streamkit.render import ConsoleView, WidgetView, delta_view
from streamkit.render.controls import ControlsPanel
from streamkit.render.delta import DeltaText, DeltaView
from streamkit.result import StreamResult

MODEL = "sim-small"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for ``DeltaText.send``: keeps every message the browser would receive."""

    def __init__(self, widget: DeltaText) -> None:
        self.messages: list[dict[str, Any]] = []
        widget.send = self  # type: ignore[method-assign]

    def __call__(self, content: dict[str, Any], buffers: Any = None) -> None:
        self.messages.append(content)

    @property
    def deltas(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["kind"] == "delta"]


class Feeder:
    """Plays the runner on a fake clock: each token arrives ``gap`` seconds after the last."""

    def __init__(self, view: DeltaView | WidgetView, clock: FakeClock | None = None) -> None:
        self.view = view
        self.clock = clock
        self.result = StreamResult(model=MODEL)
        self.index = 0
        view.start(model=MODEL, prompt="Explain SSE", on_stop=None)
        now = self.time()
        self.send(StreamStart(sent_at=now, time=now, model=MODEL))

    def time(self) -> float:
        return self.clock.now if self.clock is not None else 0.0

    def send(self, event: Event) -> None:
        self.result.apply(event)
        self.view.on_event(event)

    def token(self, text: str, gap: float = 0.0) -> None:
        if self.clock is not None:
            self.clock.now += gap
        self.send(TokenDelta(text, self.index, self.time()))
        self.index += 1

    def end(self) -> StreamResult:
        usage = Usage(prompt_tokens=3, completion_tokens=self.index, total_tokens=3 + self.index)
        self.send(StreamEnd("stop", usage, self.time()))
        self.view.finish(self.result)
        return self.result


def ack(view: DeltaView, seq: int, stream: int | None = None, t: float = 1234.5) -> None:
    """What the browser sends once delta ``seq`` is on screen."""
    stream = view.text_widget.stream if stream is None else stream
    view.text_widget._on_frontend_msg(
        view.text_widget, {"kind": "ack", "stream": stream, "seq": seq, "t": t}, []
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def view(clock: FakeClock) -> Iterator[DeltaView]:
    made = DeltaView(max_tokens=3, max_delay=10, adaptive=False, clock=clock)
    yield made
    made.close()


# -- what is sent ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_deltas_sent_are_exactly_the_new_text(view: DeltaView, clock: FakeClock) -> None:
    sent = Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    texts = [f"w{i} " for i in range(10)]
    for text in texts:
        feeder.token(text, gap=0.01)
    feeder.end()

    # Three tokens per flush, the last one flushed by the end: only new text in each message.
    assert sent.messages == [
        {"kind": "delta", "stream": 0, "seq": 0, "text": "w0 w1 w2 "},
        {"kind": "delta", "stream": 0, "seq": 1, "text": "w3 w4 w5 "},
        {"kind": "delta", "stream": 0, "seq": 2, "text": "w6 w7 w8 "},
        {"kind": "delta", "stream": 0, "seq": 3, "text": "w9 "},
    ]
    assert "".join(m["text"] for m in sent.deltas) == view.text == "".join(texts)
    assert [(f.seq, f.tokens, f.chars) for f in view.flushes] == [
        (0, 3, 9),
        (1, 3, 9),
        (2, 3, 9),
        (3, 1, 3),
    ]
    assert view.text_widget.messages == 4
    assert view.text_widget.chars_sent == len(view.text)


@pytest.mark.anyio
async def test_flush_records_hold_the_batching_wait(view: DeltaView, clock: FakeClock) -> None:
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    start = clock.now
    for text in "abc":
        feeder.token(text, gap=0.01)
    (flush,) = view.flushes
    assert flush.first_arrival == pytest.approx(start + 0.01)
    assert flush.flushed_at == pytest.approx(start + 0.03)
    assert flush.wait == pytest.approx(0.02)
    feeder.end()


def sent_bytes(view: DeltaView | WidgetView, n_tokens: int) -> int:
    """Bytes of message payload a stream of ``n_tokens`` costs (one flush per 10 tokens)."""
    total = 0
    if isinstance(view, DeltaView):

        def record(content: dict[str, Any], buffers: Any = None) -> None:
            nonlocal total
            total += len(json.dumps(content))

        view.text_widget.send = record  # type: ignore[method-assign]
    else:

        def on_value(change: dict[str, Any]) -> None:
            nonlocal total
            total += len(json.dumps({"value": change["new"]}))

        view.text_widget.observe(on_value, names="value")
    view.buffer.max_tokens, view.buffer.max_delay = 10, 10.0
    feeder = Feeder(view, FakeClock())
    for i in range(n_tokens):
        feeder.token(f"tok{i % 10} ", gap=0.001)
    feeder.send(StreamEnd("stop", None, 0.0))  # flush, but not finish: no snapshot counted
    return total


@pytest.mark.anyio
async def test_traffic_grows_linearly_not_quadratically() -> None:
    delta = [sent_bytes(DeltaView(adaptive=False), n) for n in (500, 5000)]
    html_view = [sent_bytes(WidgetView(), n) for n in (500, 5000)]
    # Ten times the tokens: ten times the bytes for deltas, about a hundred times for HTML.
    assert delta[1] / delta[0] == pytest.approx(10, rel=0.05)
    assert html_view[1] / html_view[0] > 80
    assert html_view[1] > 20 * delta[1]


# -- the saved snapshot ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_transcript_is_sent_once_at_the_end_as_the_snapshot(
    view: DeltaView, clock: FakeClock
) -> None:
    Recorder(view.text_widget)
    values: list[str] = []
    view.text_widget.observe(lambda change: values.append(change["new"]), names="value")
    assert view.plain_text() == "DeltaView (no stream yet)"
    feeder = Feeder(view, clock)
    for text in ("a < b ", "& c", "\n"):
        feeder.token(text, gap=0.01)
    assert values == []  # nothing but deltas while the stream runs
    assert view.plain_text().startswith("a < b & c\n")
    result = feeder.end()
    assert values == [widget_module.PRE_OPEN + "a &lt; b &amp; c\n" + widget_module.PRE_CLOSE]
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "a < b & c\n" + result.summary()
    assert "completed" in view.header.value

    # A second stream clears the snapshot once, then sends deltas of a new stream id.
    feeder = Feeder(view, clock)
    assert values[-1] == widget_module.PRE_OPEN + widget_module.PRE_CLOSE
    feeder.token("x", gap=0.01)
    feeder.end()
    assert view.text_widget.stream == 1
    assert html.unescape(values[-1]).endswith(">x</pre>")
    assert len(values) == 3


def test_displays_itself_once_and_stores_the_transcript(
    monkeypatch: pytest.MonkeyPatch, view: DeltaView, clock: FakeClock
) -> None:
    shown: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []

    class Handle:
        def update(self, obj: dict[str, Any], **kwargs: Any) -> None:
            updated.append(obj)

    def fake_display(obj: dict[str, Any], **kwargs: Any) -> Handle:
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(widget_module, "shell_active", lambda: True)
    monkeypatch.setattr(widget_module, "display", fake_display)
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    assert len(shown) == 1
    for text in "abc":
        feeder.token(text)
    assert updated == []
    result = feeder.end()
    assert [u["text/plain"] for u in updated] == ["abc\n" + result.summary()]


# -- acknowledgements and render lag --------------------------------------------------------


BROWSER_ORIGIN = 40.0  # kernel time at which the page's performance.now() was 0


def browser_ms(kernel_time: float) -> float:
    return (kernel_time - BROWSER_ORIGIN) * 1000


def batch_ack(view: DeltaView, shown: list[tuple[int, float]], sent: float) -> None:
    """The browser's batched acknowledgement: ``shown`` pairs seq with kernel-clock screen
    times, ``sent`` is when it left; all converted to the browser's clock."""
    view.text_widget._on_frontend_msg(
        view.text_widget,
        {
            "kind": "ack",
            "stream": view.text_widget.stream,
            "seq": shown[-1][0],
            "shown": [[seq, browser_ms(t)] for seq, t in shown],
            "t": browser_ms(sent),
        },
        [],
    )


@pytest.mark.anyio
async def test_acks_give_render_lags_on_the_kernel_clock(view: DeltaView, clock: FakeClock) -> None:
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    t0 = clock.now
    for i in range(9):  # flushes at t0+0.03, +0.06, +0.09; first tokens at +0.01, +0.04, +0.07
        feeder.token(f"{i}", gap=0.01)
    assert view.render_lags == [] and view.clock_offsets == {}

    # Shown 5 ms after each flush; acknowledged at +0.08, which took 2 ms to be processed.
    clock.now = t0 + 0.082
    batch_ack(view, [(0, t0 + 0.035), (1, t0 + 0.065)], sent=t0 + 0.08)
    assert [a.flush.seq for a in view.acks] == [0, 1]
    # The offset is over-estimated by the trip back (2 ms), so each lag is 2 ms long.
    assert view.clock_offsets == {"": pytest.approx(BROWSER_ORIGIN + 0.002)}
    assert view.render_lags == pytest.approx([0.027, 0.027])
    assert view.ack_lags == pytest.approx([0.072, 0.042])
    # A fixed view does not steer: its backlog says nothing about the policy's own settings.
    assert view.policy.render_lag is None

    # A faster trip back (1 ms) improves the estimate, and every lag with it.
    clock.now = t0 + 0.2
    batch_ack(view, [(2, t0 + 0.095)], sent=t0 + 0.199)
    assert view.clock_offsets == {"": pytest.approx(BROWSER_ORIGIN + 0.001)}
    assert view.render_lags == pytest.approx([0.026, 0.026, 0.026])

    clock.now = t0 + 0.3
    batch_ack(view, [(2, t0 + 0.095)], sent=t0 + 0.25)  # a repeat (a second view): ignored
    batch_ack(view, [(7, t0 + 0.1)], sent=t0 + 0.25)  # a delta never sent: ignored
    view.text_widget._on_frontend_msg(None, {"kind": "ack", "stream": 99, "seq": 0, "t": 1.0}, [])
    view.text_widget._on_frontend_msg(None, {"kind": "ack", "stream": "0", "seq": 2}, [])
    view.text_widget._on_frontend_msg(None, {"kind": "ack", "stream": 0, "shown": [[True, 1]]}, [])
    view.text_widget._on_frontend_msg(None, ["not", "a", "dict"], [])
    assert len(view.acks) == 3
    assert view.clock_offsets == {"": pytest.approx(BROWSER_ORIGIN + 0.001)}
    feeder.end()


@pytest.mark.anyio
async def test_each_page_has_its_own_clock_offset(view: DeltaView, clock: FakeClock) -> None:
    # The same widget shown in two pages (two tabs): each page's performance.now() starts at its
    # own load, so one page's offset must never time another page's screen times.
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    t0 = clock.now
    for i in range(6):  # flushes at t0+0.03 and +0.06
        feeder.token(f"{i}", gap=0.01)

    def page_ack(page: str, origin: float, shown: list[tuple[int, float]], sent: float) -> None:
        view.text_widget._on_frontend_msg(
            None,
            {
                "kind": "ack",
                "stream": 0,
                "shown": [[seq, (t - origin) * 1000] for seq, t in shown],
                "t": (sent - origin) * 1000,
                "page": page,
            },
            [],
        )

    clock.now = t0 + 0.051
    page_ack("a", 40.0, [(0, t0 + 0.04)], sent=t0 + 0.05)
    clock.now = t0 + 0.081
    page_ack("b", 90.0, [(0, t0 + 0.045), (1, t0 + 0.07)], sent=t0 + 0.08)  # loaded later
    assert view.clock_offsets == {"a": pytest.approx(40.001), "b": pytest.approx(90.001)}
    assert [(a.flush.seq, a.page) for a in view.acks] == [(0, "a"), (1, "b")]
    assert view.render_lags == pytest.approx([0.031, 0.031])
    feeder.end()


@pytest.mark.anyio
async def test_one_ack_covers_earlier_flushes_it_does_not_list(
    view: DeltaView, clock: FakeClock
) -> None:
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    t0 = clock.now
    for i in range(6):  # flushes at t0+0.03 and +0.06
        feeder.token(f"{i}", gap=0.01)
    clock.now = t0 + 0.1
    # A snapshot showed everything up to seq 1 at once: flush 0 was on screen then too.
    batch_ack(view, [(1, t0 + 0.09)], sent=t0 + 0.1)
    assert [a.flush.seq for a in view.acks] == [0, 1]
    assert view.render_lags == pytest.approx([0.08, 0.05])
    feeder.end()


@pytest.mark.anyio
async def test_acks_after_the_end_still_count_but_not_after_the_next_start(
    view: DeltaView, clock: FakeClock
) -> None:
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    feeder.token("a", gap=0.01)
    feeder.end()
    clock.now += 0.05
    ack(view, 0)
    assert view.render_lags == pytest.approx([0.05])
    Feeder(view, clock)  # a new stream: the old one's acks no longer belong
    ack(view, 0, stream=0)
    assert view.acks == []


def test_a_browser_that_joins_late_gets_a_snapshot(view: DeltaView, clock: FakeClock) -> None:
    sent = Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    for text in ("one ", "two ", "three ", "four"):
        feeder.token(text)  # no loop: each token is its own flush
    view.text_widget._on_frontend_msg(None, {"kind": "sync"}, [])
    assert sent.messages[-1] == {
        "kind": "snapshot",
        "stream": 0,
        "seq": 3,
        "text": "one two three four",
    }


@pytest.mark.anyio
async def test_a_restart_begins_a_new_delta_stream(view: DeltaView, clock: FakeClock) -> None:
    sent = Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    for text in "abc":
        feeder.token(text, gap=0.01)
    error = StreamInterrupted("connection lost", partial_text="abc")
    feeder.send(StreamRetry(error, 1, 0.1, None, clock.now, discarded=3, max_attempts=3))
    assert view.text == ""
    assert "restarting" in view.header.value
    feeder.send(StreamStart(sent_at=clock.now, time=clock.now, model=MODEL))
    for text in "xyz":
        feeder.token(text, gap=0.01)
    assert "retried 1×" in view.header.value
    assert [(m["stream"], m["seq"], m["text"]) for m in sent.deltas] == [
        (0, 0, "abc"),
        (1, 0, "xyz"),
    ]
    clock.now += 0.01
    ack(view, 0, stream=0)  # the voided text's ack: ignored
    ack(view, 0, stream=1)
    assert [a.flush.chars for a in view.acks] == [3]
    assert view.acks[0].flush is view.flushes[1]
    feeder.end()
    assert view.text_widget.value.endswith(">xyz</pre>")


# -- adaptive batching in the view ----------------------------------------------------------


@pytest.mark.anyio
async def test_adaptive_view_batches_a_fast_stream_to_about_25_flushes_a_second(
    clock: FakeClock,
) -> None:
    view = DeltaView(clock=clock)  # adaptive by default, starting at 1 token / 40 ms
    try:
        assert view.adaptive and (view.buffer.max_tokens, view.buffer.max_delay) == (1, 0.04)
        Recorder(view.text_widget)
        feeder = Feeder(view, clock)
        start = clock.now
        for _ in range(2000):  # 1,000 tokens/s for 2 s of the fake clock
            feeder.token("x", gap=0.001)
        steady = [f for f in view.flushes if f.flushed_at >= start + 0.5]
        assert 15 <= len(steady) / 1.5 <= 30, len(steady)
        assert view.buffer.max_tokens == 80  # ceil(2 * 1000 tokens/s * 40 ms)
        assert view.policy.token_rate == pytest.approx(1000, rel=0.01)
        feeder.end()
        assert sum(f.tokens for f in view.flushes) == 2000
    finally:
        view.close()


@pytest.mark.anyio
async def test_fixed_view_keeps_its_settings_but_still_measures_the_rate(
    view: DeltaView, clock: FakeClock
) -> None:
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    for _ in range(30):
        feeder.token("x", gap=0.01)
    assert (view.buffer.max_tokens, view.buffer.max_delay) == (3, 10.0)
    assert view.policy.token_rate == pytest.approx(100, rel=0.01)
    feeder.end()


@pytest.mark.anyio
async def test_a_slow_acknowledgement_grows_the_adaptive_interval(clock: FakeClock) -> None:
    policy = AdaptivePolicy(adjust_every=0, latency=0.0, clock=clock)
    view = DeltaView(policy=policy, clock=clock)
    try:
        Recorder(view.text_widget)
        feeder = Feeder(view, clock)
        feeder.token("a", gap=0.01)
        clock.now += 0.5  # the browser took half a second to show it
        ack(view, 0)
        assert policy.render_lag == pytest.approx(0.5)  # sent to screen (a bare ack: on send)
        assert policy.interval == pytest.approx(0.06)
        assert view.buffer.max_delay == pytest.approx(0.06)
        feeder.end()
    finally:
        view.close()


# -- choosing the view ----------------------------------------------------------------------


def test_delta_view_is_text_outside_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMKIT_VIEW", raising=False)
    console = delta_view(max_tokens=2, max_delay=0.1)
    assert isinstance(console, ConsoleView)
    assert (console.buffer.max_tokens, console.buffer.max_delay) == (2, 0.1)
    monkeypatch.setenv("STREAMKIT_VIEW", "widget")
    widget = delta_view(adaptive=False)
    assert isinstance(widget, DeltaView) and not widget.adaptive
    widget.close()


def test_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"^max_tokens=0 is out of range"):
        DeltaView(max_tokens=0)


# -- the controls panel ---------------------------------------------------------------------


@pytest.fixture
def panel(view: DeltaView, clock: FakeClock) -> Iterator[ControlsPanel]:
    made = ControlsPanel(view, clock=clock, refresh_every=0)
    yield made
    made.close()


def message_text(panel: ControlsPanel) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", panel.message.value))


@pytest.mark.anyio
async def test_moving_the_slider_mid_stream_changes_the_running_buffer(
    view: DeltaView, clock: FakeClock, panel: ControlsPanel
) -> None:
    sent = Recorder(view.text_widget)
    panel.max_tokens.value = 1
    feeder = Feeder(view, clock)
    for _ in range(5):
        feeder.token("x", gap=0.01)
    assert len(sent.deltas) == 5  # one token per flush
    panel.max_tokens.value = 5  # mid-stream, as a hand on the slider would
    assert view.buffer.max_tokens == 5
    assert panel.max_tokens_box.value == "5"
    for _ in range(10):
        feeder.token("x", gap=0.01)
    assert len(sent.deltas) == 7  # two flushes of five
    panel.max_tokens_box.value = "20"  # typed into the box, then Enter
    assert view.buffer.max_tokens == 20 and panel.max_tokens.value == 20
    panel.max_delay_box.value = "250"
    assert view.buffer.max_delay == 0.25 and panel.max_delay.value == 250
    assert panel.message.value == ""
    feeder.end()


@pytest.mark.parametrize(
    ("box", "typed", "message"),
    [
        (
            "max_tokens_box",
            "0",
            "max tokens per flush: 0 refused: must be between 1 and 500 tokens",
        ),
        (
            "max_tokens_box",
            "-3",
            "max tokens per flush: -3 refused: must be between 1 and 500 tokens",
        ),
        (
            "max_tokens_box",
            "501",
            "max tokens per flush: 501 refused: must be between 1 and 500 tokens",
        ),
        (
            "max_tokens_box",
            "2.5",
            "max tokens per flush: '2.5' refused: must be a whole number between 1 and 500 tokens",
        ),
        (
            "max_tokens_box",
            "lots",
            "max tokens per flush: 'lots' refused: must be a whole number between 1 and 500 tokens",
        ),
        ("max_delay_box", "1500", "max delay (ms): 1500 refused: must be between 0 and 1000 ms"),
        (
            "speed_box",
            "0",
            "server tokens/s (next): 0.0 refused: must be between 1 and 10000 tokens/s",
        ),
        (
            "speed_box",
            "nan",
            "server tokens/s (next): 'nan' refused: must be a number between 1 and 10000 tokens/s",
        ),
        ("jitter_box", "1.5", "server jitter (next): 1.5 refused: must be between 0 and 1"),
    ],
)
def test_an_out_of_range_value_typed_in_a_box_is_refused_with_a_message(
    view: DeltaView, panel: ControlsPanel, box: str, typed: str, message: str
) -> None:
    before = (view.buffer.max_tokens, view.buffer.max_delay, panel.request_overrides())
    text_box = getattr(panel, box)
    old_text = text_box.value
    text_box.value = typed
    assert message_text(panel) == message
    assert text_box.value == old_text  # put back: the box shows the value in force
    assert (view.buffer.max_tokens, view.buffer.max_delay, panel.request_overrides()) == before
    # The next accepted change clears the message.
    panel.max_tokens_box.value = "7"
    assert panel.message.value == ""


@pytest.mark.parametrize(
    ("slider", "value", "message"),
    [
        ("max_tokens", 0, "max tokens per flush: 0 refused: must be between 1 and 500 tokens"),
        (
            "max_tokens",
            10_000,
            "max tokens per flush: 10000 refused: must be between 1 and 500 tokens",
        ),
        ("max_delay", -5, "max delay (ms): -5 refused: must be between 0 and 1000 ms"),
        (
            "speed",
            50_000.0,
            "server tokens/s (next): 50000.0 refused: must be between 1 and 10000 tokens/s",
        ),
        ("jitter", -0.1, "server jitter (next): -0.1 refused: must be between 0 and 1"),
    ],
)
def test_setting_a_slider_out_of_range_from_code_raises_instead_of_clamping(
    view: DeltaView, panel: ControlsPanel, slider: str, value: float, message: str
) -> None:
    widget = getattr(panel, slider)
    before = widget.value
    with pytest.raises(traitlets.TraitError, match=f"^{re.escape(message)}$"):
        widget.value = value
    assert widget.value == before  # not clamped to the nearest end
    assert message_text(panel) == message
    assert (view.buffer.max_tokens, view.buffer.max_delay) == (3, 10.0)


def test_a_value_the_buffer_refuses_is_refused_and_put_back(
    view: DeltaView, panel: ControlsPanel
) -> None:
    # The panel's ranges sit inside the buffer's, so force a refusal from the buffer itself.
    def refuse(value: float) -> None:
        raise UsageError(f"max_delay={value} is out of range: must be between 0 and 10 seconds")

    panel._delay._apply = refuse
    panel.max_delay.value = 400
    assert message_text(panel).startswith("max_delay=400 is out of range")
    # As before: the slider at its end, the box with the buffer's exact 10 s.
    assert panel.max_delay.value == 1000 and panel.max_delay_box.value == "10000"
    assert view.buffer.max_delay == 10.0


def test_presets_set_the_buffer_and_a_manual_move_makes_it_custom(
    view: DeltaView, panel: ControlsPanel
) -> None:
    assert panel.preset.value == "custom"  # 3 tokens / 10 s is no preset
    panel.preset.value = "slow"
    assert (view.buffer.max_tokens, view.buffer.max_delay) == (10, 0.15)
    assert (panel.max_tokens.value, panel.max_delay.value) == (10, 150)
    assert (panel.max_tokens_box.value, panel.max_delay_box.value) == ("10", "150")
    panel.max_tokens.value = 11
    assert panel.preset.value == "custom"
    panel.max_tokens.value = 4
    panel.max_delay.value = 50
    assert panel.preset.value == "medium"  # the settings match a preset again
    panel.preset.value = "custom"  # keeps what is in force
    assert (view.buffer.max_tokens, view.buffer.max_delay) == (
        PRESETS["medium"].max_tokens,
        PRESETS["medium"].max_delay,
    )


def test_adaptive_switch_hands_the_buffer_to_the_policy_and_a_hand_takes_it_back(
    view: DeltaView, panel: ControlsPanel
) -> None:
    assert not panel.adaptive.value and not panel.adaptive.disabled
    panel.adaptive.value = True
    assert view.adaptive
    assert (view.buffer.max_tokens, view.buffer.max_delay) == (1, 0.04)  # the policy's choice
    assert panel.max_tokens.disabled and panel.max_delay_box.disabled
    assert (panel.max_tokens.value, panel.max_delay.value) == (1, 40)
    panel.max_delay.value = 300  # code moves a slider: the hand wins
    assert not view.adaptive and not panel.adaptive.value
    assert view.buffer.max_delay == 0.3
    assert not panel.max_tokens.disabled
    panel.adaptive.value = True
    panel.preset.value = "fast"
    assert not view.adaptive and (view.buffer.max_tokens, view.buffer.max_delay) == (1, 0.016)


def test_adaptive_needs_a_view_with_a_policy() -> None:
    plain = WidgetView()
    panel = ControlsPanel(plain, refresh_every=0)
    try:
        assert panel.adaptive.disabled
        panel.adaptive.value = True
        assert panel.adaptive.value is False
        assert "has no adaptive policy" in message_text(panel)
        panel.max_tokens.value = 9
        assert plain.buffer.max_tokens == 9
        assert "render lag" not in panel.readout.value  # nothing to acknowledge with
    finally:
        panel.close()
        plain.close()


def test_request_overrides_carry_the_next_requests_speed_and_jitter(panel: ControlsPanel) -> None:
    assert panel.request_overrides() == {
        "extra_body": {"streamkit": {"tokens_per_second": 80.0, "jitter": 0.15}}
    }
    panel.speed_box.value = "500"
    panel.jitter.value = 0.5
    assert panel.request_overrides() == {
        "extra_body": {"streamkit": {"tokens_per_second": 500.0, "jitter": 0.5}}
    }
    assert panel.speed.value == pytest.approx(500.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"speed": 0}, "speed: 0 refused: must be between 1 and 10000"),
        ({"jitter": 2}, "jitter: 2 refused: must be between 0 and 1"),
        ({"speed": "fast"}, "speed='fast' is not a number: must be 1 to 10000"),
    ],
)
def test_panel_arguments_are_validated(
    view: DeltaView, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        ControlsPanel(view, refresh_every=0, **kwargs)


@pytest.mark.anyio
async def test_readout_shows_flush_rate_and_render_lag_percentiles(
    view: DeltaView, clock: FakeClock, panel: ControlsPanel
) -> None:
    Recorder(view.text_widget)
    feeder = Feeder(view, clock)
    for _ in range(90):
        feeder.token("x", gap=0.02)  # 50 tokens/s, a flush every 3 tokens: ~17 flushes/s
    panel.refresh()
    text = html.unescape(panel.readout.value)
    assert re.search(r"^1[67] flushes/s", re.sub(r"<[^>]+>", "", text)), text
    assert "~50 tokens/s" in text
    assert "no acknowledgements yet (needs a browser showing the view)" in text
    clock.now += 0.01
    for seq in range(len(view.flushes)):
        ack(view, seq)
        clock.now += 0.001
    panel.refresh()
    text = html.unescape(panel.readout.value)
    assert re.search(r"render lag p50 \d+ ms · p99 \d+ ms \(last 30\)", text), text
    assert "now 3 tokens / 10000 ms" in text
    feeder.end()
    panel.refresh()
    assert "30 flushes (16.7/s)" in html.unescape(panel.readout.value)


@pytest.mark.anyio
async def test_readout_refreshes_itself_while_a_loop_runs(view: DeltaView) -> None:
    panel = ControlsPanel(view, refresh_every=0.02)
    try:
        Recorder(view.text_widget)
        before = panel.readout.value
        Feeder(view, None).token("x")
        await asyncio.sleep(0.1)
        assert panel.readout.value != before
    finally:
        panel.close()
    assert panel._timer is None


def test_panel_shows_as_a_widget_with_a_text_form(panel: ControlsPanel) -> None:
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "ControlsPanel(custom: max_tokens=3, max_delay=10000 ms)"
