"""The server says when it is saturated: token lateness kept by the pacer, the loop's own delay and
busy fraction, the verdict, the stderr line and ``GET /metrics``.

The pure parts run on plain numbers; the pacer on an event loop whose clock the test moves (a
"blocked" loop is one whose clock jumped while a callback ran); end to end, a real server whose
loop the test blocks (in a thread, with busy work on its loop; in a child process, stopped with
SIGSTOP) while streams are due. No assertion depends on how fast this machine is: a block of
B seconds makes the tokens due in it at least B minus one gap late, however slow the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from streamkit.server import serve_in_thread
from streamkit.server.lateness import (
    LAG_LIMIT,
    LATE,
    LatenessWindow,
    LoopLoad,
    SaturationLog,
    saturation,
)
from streamkit.server.pacer import Pacer
from streamkit.server.process import serve_in_subprocess
from streamkit.server.stats import ServerStats, exposition

# --- the rolling window, on plain numbers ------------------------------------------------------


def test_quantiles_follow_the_recorded_lateness() -> None:
    w = LatenessWindow()
    for _ in range(98):
        w.record(100.0, 0.0)
    w.record(100.0, 0.140)
    w.record(100.0, 0.140)
    assert w.count(100.0) == 100
    assert w.quantile(100.0, 0.5) <= 0.001
    # p99 falls in the bucket holding 140 ms; buckets are 25 % wide.
    assert 0.140 / 1.25 <= w.quantile(100.0, 0.99) <= 0.140 * 1.25
    assert w.late == 2 and w.total == 100


def test_early_and_on_time_releases_are_not_late() -> None:
    w = LatenessWindow()
    w.record(5.0, -0.0008)  # released within the pacer's slack, before its due time
    w.record(5.0, LATE)  # exactly at the threshold: not more than it
    assert w.late == 0
    assert w.quantile(5.0, 0.99) <= LATE * 1.25


def test_the_window_forgets_old_seconds_but_the_late_count_stays() -> None:
    w = LatenessWindow(window=5.0, slots=5)
    for _ in range(50):
        w.record(10.2, 0.5)
    assert w.count(10.9) == 50
    assert w.count(14.9) == 50  # slot 10 is still among the last five (10-14)
    assert w.count(15.0) == 0  # now slots 11-15
    assert w.quantile(15.0, 0.99) == 0.0
    assert w.late == 50
    # A slot reused after the window wrapped starts from zero.
    w.record(20.5, 0.0)
    assert w.histogram(20.5)[0] == 1 and w.count(20.5) == 1


def test_a_release_past_the_last_bucket_reads_as_its_bound() -> None:
    w = LatenessWindow()
    w.record(0.0, 3600.0)
    assert 60.0 <= w.quantile(0.0, 0.99) < 80.0


def test_loop_load_busy_fraction_peak_and_the_lag_its_work_explains() -> None:
    load = LoopLoad(window=5.0)
    # Ten idle ticks (no CPU), then a second in which the loop burned 0.9 s of CPU and its tick
    # came 0.9 s late.
    for k in range(10):
        load.tick(100.0 + 0.1 * k, cpu=1.0, lag=0.0)
    load.tick(101.9, cpu=1.9, lag=0.9)
    assert load.max_lag(101.9) >= 0.9
    assert load.max_busy_lag(101.9) >= 0.9
    assert load.busy() == pytest.approx(0.9 / 1.9)
    assert load.peak() == pytest.approx(0.9 / 1.0, abs=0.01)
    # Late while idle (the process got no core): the lag is real, the loop's own share is not.
    idle = LoopLoad()
    idle.tick(0.0, cpu=0.0, lag=0.0)
    idle.tick(0.7, cpu=0.001, lag=0.6)
    assert idle.max_lag(0.7) >= 0.6
    assert idle.max_busy_lag(0.7) < LAG_LIMIT


def test_the_verdict_needs_enough_late_tokens_or_a_busy_late_loop() -> None:
    tokens, load = LatenessWindow(), LoopLoad()
    assert not saturation(tokens, load, 1.0).saturated
    for _ in range(5):
        tokens.record(1.0, 0.2)  # a few late tokens after an idle spell: not saturation
    assert not saturation(tokens, load, 1.0).saturated
    for _ in range(100):
        tokens.record(1.0, 0.2)
    verdict = saturation(tokens, load, 1.0)
    assert verdict.saturated and verdict.p99 > LATE and verdict.releases == 105
    # No tokens at all, but the loop's tick was 300 ms late while it was busy: a burst of opens.
    load.tick(10.0, cpu=0.0, lag=0.0)
    load.tick(10.4, cpu=0.4, lag=0.3)
    verdict = saturation(LatenessWindow(), load, 10.4)
    assert verdict.saturated and verdict.releases == 0


def test_the_line_says_how_late_and_comes_at_most_every_few_seconds() -> None:
    tokens, load = LatenessWindow(), LoopLoad()
    load.tick(0.0, cpu=0.0, lag=0.0)
    for k in range(1, 11):
        load.tick(0.1 * k, cpu=0.1 * k, lag=0.0)  # a loop at 100 %
    for _ in range(100):
        tokens.record(1.0, 0.140)
    log = SaturationLog("streamkit serve", every=5.0)
    line = log.line(saturation(tokens, load, 1.0), 1.0)
    assert line is not None
    assert re.fullmatch(
        r"streamkit serve: saturated — tokens p99 1\d\d ms late over the last 5 s \(1 core at "
        r"100% in the busiest second, 100% on average\); add --workers or lower the load",
        line,
    ), line
    assert log.line(saturation(tokens, load, 3.0), 3.0) is None  # too soon
    for _ in range(100):
        tokens.record(6.0, 0.140)
    assert log.line(saturation(tokens, load, 6.0), 6.0) is not None
    calm = SaturationLog()
    assert calm.line(saturation(LatenessWindow(), LoopLoad(), 1.0), 1.0) is None


def test_late_on_a_loop_without_a_core_blames_the_machine_not_the_loop() -> None:
    tokens, load = LatenessWindow(), LoopLoad()
    # The loop ran 5 % of the second and waited for a core 60 % of it (Linux's schedstat).
    load.tick(0.0, cpu=0.0, lag=0.0, waited=2.0)
    load.tick(1.0, cpu=0.05, lag=0.0, waited=2.6)
    assert load.waiting() == pytest.approx(0.6)
    for _ in range(100):
        tokens.record(1.0, 0.2)
    verdict = saturation(tokens, load, 1.0)
    assert verdict.waiting == pytest.approx(0.6)
    line = SaturationLog().line(verdict, 1.0)
    assert line is not None and "short of a core" in line and "--workers" not in line
    assert "waiting for a core 60% of the time" in line
    assert LoopLoad().waiting() is None  # where the platform does not say


def test_late_in_a_burst_on_a_loop_with_its_core_names_the_burst() -> None:
    tokens, load = LatenessWindow(), LoopLoad()
    # Busy 60 % of the second (a 0.6 s burst of opens), never waiting for a core.
    load.tick(0.0, cpu=0.0, lag=0.0, waited=2.0)
    load.tick(1.0, cpu=0.6, lag=0.0, waited=2.0)
    for _ in range(100):
        tokens.record(1.0, 0.2)
    line = SaturationLog().line(saturation(tokens, load, 1.0), 1.0)
    assert line is not None and "short of a core" not in line
    assert "busy in bursts shorter than a second" in line and "--ramp-up" in line


def test_metrics_carry_the_timing_figures() -> None:
    stats = ServerStats()
    now = time.monotonic()
    for _ in range(100):
        stats.lateness.record(now, 0.2)
    text = exposition(stats)
    assert "streamkit_late_tokens 100\n" in text
    assert "streamkit_paced_tokens 100\n" in text
    assert "streamkit_saturated 1\n" in text
    p99 = re.search(r'streamkit_token_lateness_seconds\{quantile="0.99"\} (\S+)', text)
    assert p99 is not None and float(p99.group(1)) > LATE
    snap = stats.snapshot()
    assert snap["late_tokens"] == 100 and snap["saturated"] == 1 and snap["requests"] == 0


# --- the pacer, on a clock the test moves -------------------------------------------------------


class _FakeClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is a number the test sets; timers fire once it passes them."""

    now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def fake_loop() -> Iterator[_FakeClockLoop]:
    loop = _FakeClockLoop()
    try:
        yield loop
    finally:
        loop.close()


def _paced(loop: _FakeClockLoop, jump: float, n: int = 30) -> LatenessWindow:
    """``n`` waiters due 10 ms apart; a callback moves the clock ``jump`` past the last one's
    due time before the timer can fire (a loop that was busy that long)."""
    window = LatenessWindow()

    async def main() -> None:
        pacer = Pacer(loop=loop, lateness=window)
        start = loop.now
        dues = [start + 0.010 * (k + 1) for k in range(n)]
        loop.call_soon(lambda: setattr(loop, "now", dues[-1] + jump))
        await asyncio.gather(*(pacer.wait_until(t) for t in dues))

    loop.run_until_complete(main())
    return window


def test_the_pacer_records_a_blocked_loop_as_late_tokens(fake_loop: _FakeClockLoop) -> None:
    window = _paced(fake_loop, jump=0.25)
    assert window.total == 30
    assert window.late == 30  # every waiter came out at least 250 ms after its due time
    verdict = saturation(window, LoopLoad(), fake_loop.now)
    assert verdict.saturated and verdict.p50 >= 0.25 / 1.25


def test_the_pacer_on_time_is_not_saturated(fake_loop: _FakeClockLoop) -> None:
    window = LatenessWindow()

    async def main() -> None:
        pacer = Pacer(loop=fake_loop, lateness=window)
        for _ in range(30):
            due = fake_loop.now + 0.010
            # The clock reaches each due time exactly: the timer fires on time.
            fake_loop.call_soon(lambda d=due: setattr(fake_loop, "now", d))
            assert await pacer.wait_until(due)
        # A waiter already due is released at once and counted with its (zero) lateness.
        assert not await pacer.wait_until(fake_loop.now)

    fake_loop.run_until_complete(main())
    assert window.total == 31 and window.late == 0
    assert not saturation(window, LoopLoad(), fake_loop.now).saturated


# --- end to end ---------------------------------------------------------------------------------

_FAST = {"ttft": 0.02, "tokens_per_second": 200, "jitter": 0}


def _burn(seconds: float) -> None:
    # Busy work on the server's loop, as a flood of requests would do: CPU, not a sleep.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _streams(base_url: str, n: int, tokens: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def one(i: int) -> str:
            body = {
                "model": "sim-small",
                "messages": [{"role": "user", "content": f"stream {i}"}],
                "stream": True,
                "max_tokens": tokens,
                "streamkit": _FAST,
            }
            text = []
            async with client.stream("POST", "/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        text.append(delta.get("content") or "")
            return "".join(text)

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_a_blocked_loop_shows_in_stats_and_metrics() -> None:
    with serve_in_thread() as server:
        before = server.app.stats.lateness.late

        async def main() -> None:
            streams = asyncio.ensure_future(_streams(server.base_url, 20, 200))
            # Block once the streams are under way (tokens due every 5 ms for ~0.5 s more): a
            # block before their requests arrive would delay their start instead.
            for _ in range(3000):
                if server.app.stats.tokens_sent >= 20:
                    break
                await asyncio.sleep(0.01)
            server.loop.call_soon_threadsafe(_burn, 0.3)
            await streams

        asyncio.run(main())
        stats = server.app.stats
        assert stats.lateness.late - before >= 20  # at least one late token per stream
        verdict = stats.saturation()
        assert verdict.saturated and verdict.p99 > LATE
        text = httpx.get(server.url + "/metrics").text
        assert "streamkit_saturated 1\n" in text
        late = re.search(r"^streamkit_late_tokens (\d+)$", text, re.M)
        assert late is not None and int(late.group(1)) >= 20


def _sent(response: httpx.Response) -> int:
    found = re.search(r"^streamkit_tokens_sent (\d+)$", response.text, re.M)
    assert found is not None
    return int(found.group(1))


def test_a_stopped_server_process_says_it_is_saturated() -> None:
    server = serve_in_subprocess()
    metrics = server.base_url[: -len("/v1")] + "/metrics"
    try:

        async def main() -> None:
            streams = asyncio.ensure_future(_streams(server.base_url, 20, 200))
            async with httpx.AsyncClient() as client:
                for _ in range(3000):
                    if _sent(await client.get(metrics)) >= 20:  # the streams are under way
                        break
                    await asyncio.sleep(0.01)
            # Freeze the whole server for 300 ms: every token due meanwhile leaves late.
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(0.3)
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            await streams

        asyncio.run(main())
        text = httpx.get(metrics).text
        assert "streamkit_saturated 1\n" in text
        # The tick that looks at the figures comes every 0.5 s: wait for it, not for a time.
        deadline = time.monotonic() + 10
        while "saturated —" not in server.log and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(x for x in server.log.splitlines() if "saturated —" in x)
        assert line.startswith("streamkit serve: saturated — tokens p99 ")
        assert re.search(r"tokens p99 \d+ ms late.* over the last 5 s \(1 core at \d+%", line)
    finally:
        server.stop()
