"""The live dashboard: it updates while real streams run, throttled, and degrades to text."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go
import pytest

import streamkit as sk
from streamkit.metrics import MetricsCollector

# ~1.4 s of streaming: 0.2 s to the first token, then 60 tokens at 50 tokens/s.
PACED = {"streamkit": {"ttft": 0.2, "tokens_per_second": 50, "jitter": 0, "length": 60}}


@dataclass
class _Due:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTime:
    """A clock and a ``call_later`` that move only when the test says: the dashboard's frames
    fire on this time, so what the tests assert about the throttle does not depend on the
    machine's load."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[_Due] = []

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Due:
        due = _Due(self.now + delay, callback)
        self.pending.append(due)
        return due

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing every timer that comes due on the way, in order."""
        end = self.now + seconds
        while True:
            ready = [d for d in self.pending if not d.cancelled and d.when <= end]
            if not ready:
                break
            due = min(ready, key=lambda d: d.when)
            self.pending.remove(due)
            self.now = max(self.now, due.when)
            due.callback()
        self.now = end

    async def run_alongside(self, done: asyncio.Event, step: float = 0.05) -> None:
        """Advance ``step`` per ``step`` of real time while real streams run, until ``done``."""
        while not done.is_set():
            self.advance(step)
            await asyncio.sleep(step)


@pytest.mark.anyio
async def test_dashboard_updates_while_a_stream_runs_and_is_throttled(server) -> None:  # type: ignore[no-untyped-def]
    collector = MetricsCollector()
    manual = ManualTime()
    dash = sk.Dashboard(
        collector, kind="widget", rate=4, clock=manual.clock, call_later=manual.call_later
    )
    fig = dash.widget
    assert isinstance(fig, go.FigureWidget)
    samples: list[tuple[float, int, int, int]] = []
    done = asyncio.Event()

    def take_sample() -> None:
        itl_total = sum(fig.data[1].y[:-1]) if fig.data[1].y else 0
        samples.append((manual.now, len(fig.data[0].x), len(fig.data[2].x), int(itl_total)))

    async def sample() -> None:
        # What a browser would see: the figure's trace lengths, read every 50 ms (of the
        # manual clock, moved on 50 ms per 50 ms of real time while the stream runs).
        while not done.is_set():
            manual.advance(0.05)
            take_sample()
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    t0 = manual.now
    async with sk.Client(server.base_url, model="sim-small") as client:
        result = await client.chat("Explain", view=None, extra_body=PACED, observers=[collector])
    done.set()
    await sampler
    streamed = manual.now
    # The last frames, then the timer stops by itself.
    for _ in range(16):
        manual.advance(0.05)
        take_sample()
    t_end = manual.now

    assert result.ok and result.chunks == 60
    # Live: the ITL panel took many distinct partial values while the stream ran.
    during = {itl for when, _, _, itl in samples if when < streamed}
    assert len(during) >= 3, samples
    assert samples[-1][3] == 59 and samples[-1][2] == 1  # every gap; one TTFT point
    assert samples[-1][1] >= 3  # tokens/s bins over ~1.4 s of 0.5 s bins
    # Throttled: one timer at 4 Hz, never a frame per event.
    assert 3 <= dash.frames <= (t_end - t0) * dash.rate + 1, dash.frames
    loop_times = [when for when, _, _ in dash.frame_log]
    gaps = [b - a for a, b in itertools.pairwise(loop_times)]
    assert min(gaps) >= 1 / dash.rate - 0.01, gaps
    assert dash._timer is None  # idle: no timer left running
    assert "1 requests · 1 done" in fig.layout.title.text
    cost = dash.frame_cost()
    assert cost["frames"] == dash.frames and cost["cpu_ms_p50"] < 50  # generous: a busy machine
    dash.close()


@pytest.mark.anyio
async def test_frames_stay_bounded_with_many_concurrent_streams(server) -> None:  # type: ignore[no-untyped-def]
    collector = MetricsCollector()
    manual = ManualTime()
    dash = sk.Dashboard(
        collector, kind="widget", rate=5, clock=manual.clock, call_later=manual.call_later
    )
    body = {"streamkit": {"ttft": 0.05, "tokens_per_second": 100, "jitter": 0.1, "length": 40}}
    done = asyncio.Event()
    driver = asyncio.create_task(manual.run_alongside(done))
    t0 = manual.now
    async with sk.Client(server.base_url, model="sim-small") as client:
        await asyncio.gather(
            *(
                client.chat(f"p{i}", view=None, extra_body=body, observers=[collector.track()])
                for i in range(20)
            )
        )
    done.set()
    await driver
    manual.advance(0.5)
    elapsed = manual.now - t0
    assert collector.summary().completed == 20
    assert 1 <= dash.frames <= elapsed * dash.rate + 1  # 800 chunks, a handful of frames
    assert len(dash.widget.data[2].x) == 20
    assert sum(dash.widget.data[1].y[:-1]) == 20 * 39
    dash.close()


@pytest.mark.anyio
async def test_console_fallback_prints_a_summary_and_draws_static_figures(
    server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STREAMKIT_VIEW", "console")
    collector = MetricsCollector()
    manual = ManualTime()
    dash = sk.Dashboard(collector, clock=manual.clock, call_later=manual.call_later).show()
    assert dash.kind == "console" and dash.widget is None
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 200, "length": 20}}
    async with sk.Client(server.base_url, model="sim-small") as client:
        await client.chat("hi", view=None, extra_body=body, observers=[collector])
    manual.advance(0.6)  # the timer notices the idle run
    out = capsys.readouterr().out
    assert "1 requests: 1 completed" in out and "TTFT" in out
    assert out.count("1 requests: 1 completed") == 1  # printed once, when the run went idle
    fig = dash.figure()
    assert type(fig) is go.Figure
    assert len(fig.data[2].x) == 1 and sum(fig.data[1].y[:-1]) == 19
    assert "1 requests: 1 completed" in str(dash)
    dash.close()


@pytest.mark.anyio
async def test_a_chat_on_another_threads_loop_still_drives_frames_here(server) -> None:  # type: ignore[no-untyped-def]
    # chat_sync runs its stream on a loop in another thread; the dashboard keeps drawing on the
    # loop it was made on (the one its widget belongs to).
    collector = MetricsCollector()
    manual = ManualTime()
    dash = sk.Dashboard(
        collector, kind="widget", rate=5, clock=manual.clock, call_later=manual.call_later
    )
    client = sk.Client(server.base_url, model="sim-small")
    done = asyncio.Event()
    driver = asyncio.create_task(manual.run_alongside(done))
    result = await asyncio.to_thread(
        client.chat_sync, "hi", view=None, extra_body=PACED, observers=[collector]
    )
    done.set()
    await driver
    await asyncio.sleep(0)  # the other thread's last pokes hop onto this loop
    manual.advance(0.5)
    assert result.ok and dash.frames >= 3
    assert sum(dash.widget.data[1].y[:-1]) == 59
    dash.close()


def test_refresh_without_a_loop_draws_on_demand() -> None:
    from streamkit.events import StreamEnd, StreamStart, TokenDelta
    from streamkit.result import StreamResult

    collector = MetricsCollector()
    dash = sk.Dashboard(collector, kind="console")
    rec = collector.track()
    for event in (StreamStart(0.0, 0.01, "m"), TokenDelta("a", 0, 0.1), TokenDelta("b", 1, 0.2)):
        rec.on_event(event)
    assert dash.refresh() and dash.frames == 1
    assert not dash.refresh(only_if_changed=True)  # nothing new: no frame
    rec.on_event(StreamEnd("stop", None, 0.3))
    rec.finish(StreamResult(status="completed"))
    fig = dash.figure()
    assert list(fig.data[2].y) == pytest.approx([100.0])  # TTFT in ms
    dash.close()


def test_invalid_settings() -> None:
    collector = MetricsCollector()
    with pytest.raises(sk.UsageError, match="rate"):
        sk.Dashboard(collector, rate=0)
    with pytest.raises(sk.UsageError, match="kind"):
        sk.Dashboard(collector, kind="tv")  # type: ignore[arg-type]
