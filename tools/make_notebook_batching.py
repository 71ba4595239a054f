"""Write notebooks/04_batching.ipynb from the cells below (outputs empty, no widget state)."""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

cells = [
    new_markdown_cell(
        """# Batching: how often the browser hears about new text, and what it costs

Every time a view *flushes*, the kernel sends one message to the browser. Flush on every token and
the text appears the moment it arrives, but a fast model then sends hundreds of messages a second:
each one costs the kernel ~0.1–0.3 ms, the browser about as much again, and the Jupyter server drops
output beyond its IOPub rate limit (1,000 messages/s by default). Flush rarely and the messages are
few, but the text arrives in lumps and late. This notebook makes that trade-off visible and tunable:

1. why the stream runs in the background (`sk.start_chat`), and what a blocking cell holds back,
2. a live stream into a **`DeltaView`** (it sends only the new text of each flush, and the browser
   acknowledges each flush once it is on screen) with a **controls panel** next to it,
3. messages per second against lag for a sweep of settings,
4. the **adaptive** policy against a fixed setting, at slow and fast token rates.

Without a browser (a script, CI, `pytest --nbval-lax`) every cell still runs: the sweeps measure what
the kernel sent and how long tokens waited to be sent. How long they took to reach the *screen* needs
a browser showing the view: those columns stay empty here until one does."""
    ),
    new_code_cell(
        """import asyncio
import math

import ipykernel
import plotly.graph_objects as go
from IPython.display import display

import streamkit as sk
from streamkit.batching import PRESETS, BatchSettings

server = sk.default_server()  # the bundled simulator, in a background thread
presets = ", ".join(
    f"{name} = {s.max_tokens} tokens / {s.max_delay * 1000:g} ms" for name, s in PRESETS.items()
)
print(f"ipykernel {ipykernel.__version__}; presets: {presets}")"""
    ),
    new_markdown_cell(
        """## 1. Why the stream runs in the background

A kernel hears the browser on one channel and handles its messages on its main thread, one at a
time. A cell that **blocks** that thread (synchronous code, `sk.chat_sync(...)`, a long computation)
holds back *every* message from the browser until the cell ends: slider moves, the Stop button, and
the acknowledgements a `DeltaView` uses to measure render lag. Messages *to* the browser still flow,
so the text still grows; only the way back is shut.

A cell that `await`s a stream used to be just as deaf. ipykernel 7.4 (the version printed above, if
it is at least that) dispatches widget messages while an async cell awaits; older kernels queue them
until the cell ends. `sk.start_chat` works the same on every kernel: the stream runs as a background
task on the kernel's event loop, the cell returns at once, and the kernel stays free between tokens
to hear the panel and the acknowledgements (and you can run other cells meanwhile).

Measured with `benchmarks/bench_render.py` (a real kernel, a client acknowledging flushes the way
the browser does, 50 tokens/s for 3 s): with `start_chat`, and with `await sk.chat(...)` on
ipykernel 7.4, acknowledgements were processed as they came (their batching, at most every 0.5 s,
is the only wait); with `sk.chat_sync(...)` they waited for the cell to end, up to 3 s (the whole
stream). The render lag itself still came out right (p50 ~2 ms, p99 ~5 ms without rendering)
because each acknowledgement carries the time the browser showed each delta: late mail, correct
postmarks. The panel's sliders have no such luck: a blocked kernel applies them only at the end."""
    ),
    new_markdown_cell(
        """## 2. A live stream, with the controls next to it

`DeltaView` shows the text like the standard widget view, but sends each flush as a small message
holding only the new text (the browser appends it), and the full transcript once at the end (what a
saved notebook keeps). The panel's sliders set the running view's buffer the moment they move: max
tokens per flush and max delay, a preset, or **adaptive** (the view's policy picks both from the
measured token rate and render lag). The server's speed and jitter apply to the *next* request.
Out-of-range values typed into a box are refused with a message, never clamped.

Run the next two cells, then move the sliders while the text streams."""
    ),
    new_code_cell(
        """view = sk.DeltaView()  # adaptive by default
panel = sk.ControlsPanel(view, speed=40, jitter=0.2)
display(panel, view)"""
    ),
    new_code_cell(
        """request = panel.request_overrides()  # {"extra_body": {"streamkit": {"tokens_per_second": …}}}
request["extra_body"]["streamkit"]["length"] = 300  # tokens: ~8 s at 40 tokens/s
task = sk.start_chat("Write an essay about latency in data pipelines", view=view, **request)"""
    ),
    new_markdown_cell(
        """The cell above returned at once. This one waits for the end and reads what the view measured:
the flushes it sent and, if a browser showed the view, the lag from each flush's first token
arriving in the kernel to the browser's acknowledgement that it is on screen."""
    ),
    new_code_cell(
        """result = await task
await asyncio.sleep(0.7)  # the last acknowledgements, if a browser shows the view
assert result.ok and result.output_tokens == 300
assert view.text == result.text and len(view.flushes) >= 1


def pct(values, q):
    \"\"\"The q-th percentile, linear interpolation between closest ranks.\"\"\"
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


settings = f"{view.buffer.max_tokens} tokens / {view.buffer.max_delay * 1000:.0f} ms"
print(f"{len(view.flushes)} flushes for {result.output_tokens} tokens; now {settings}")
if view.render_lags:
    p50, p99 = pct(view.render_lags, 50), pct(view.render_lags, 99)
    print(f"render lag p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
else:
    print("no acknowledgements: no browser is showing the view (render lag needs one)")"""
    ),
    new_markdown_cell(
        """## 3. The trade-off: messages per second against lag

One stream per setting, 2 s each at 200 tokens/s, into one view shown below. For each: messages
per second sent to the browser, how long tokens **waited in the buffer** before being sent (the
kernel's share of the lag: measured everywhere), and, with a browser, the **arrival-to-screen lag**
(the wait, plus the trip to the screen and the acknowledgement back).

How the lag is timed: a flush's first token arrived at kernel time *a*; the browser appends the
text and acknowledges on its next animation frame; the kernel processes the acknowledgement at
kernel time *k*. Both times are on the kernel's clock (`time.perf_counter`); the browser's own
`performance.now()` has another origin and is never subtracted from them. So *k − a* is an upper
bound of arrival-to-screen: it includes the acknowledgement's trip back (a few ms on one machine)."""
    ),
    new_code_cell(
        """sweep_view = sk.DeltaView(adaptive=False)
display(sweep_view)


async def run(view, settings, rate, seconds=2.0):
    \"\"\"One stream at `rate` tokens/s into `view`: fixed `settings`, or adaptive when None.\"\"\"
    view.adaptive = settings is None
    if settings is not None:
        settings.apply(view.buffer)
    tokens = max(20, round(rate * seconds))
    body = {"streamkit": {"tokens_per_second": rate, "jitter": 0.1, "length": tokens}}
    result = await sk.start_chat("Explain batching", view=view, extra_body=body)
    await asyncio.sleep(0.7)  # the last acknowledgements, if a browser shows the view
    assert result.ok and view.text == result.text
    span = result.token_times[-1] - result.token_times[0]
    waits = [f.wait for f in view.flushes]
    lags = view.render_lags
    return {
        "messages/s": len(view.flushes) / span,
        "tokens/flush": result.output_tokens / len(view.flushes),
        "wait p50 ms": pct(waits, 50) * 1000,
        "wait p99 ms": pct(waits, 99) * 1000,
        "lag p50 ms": pct(lags, 50) * 1000,
        "lag p99 ms": pct(lags, 99) * 1000,
    }


SETTINGS = {
    **PRESETS,
    "25 / 300 ms": BatchSettings(25, 0.3),
    "60 / 600 ms": BatchSettings(60, 0.6),
    "adaptive": None,
}
sweep = {name: await run(sweep_view, settings, rate=200) for name, settings in SETTINGS.items()}
for name, row in sweep.items():
    print(f"{name:>12}: " + ", ".join(f"{key} {value:.1f}" for key, value in row.items()))

# More tokens per flush: fewer messages, longer waits.
assert sweep["fast"]["messages/s"] > 3 * sweep["slow"]["messages/s"]
assert sweep["60 / 600 ms"]["wait p99 ms"] > sweep["fast"]["wait p99 ms"]
assert sweep["adaptive"]["messages/s"] <= 35"""
    ),
    new_code_cell(
        """names = list(sweep)
fig = go.Figure()
fig.add_trace(
    go.Scatter(
        x=[sweep[n]["messages/s"] for n in names],
        y=[sweep[n]["wait p99 ms"] for n in names],
        mode="markers+text",
        text=names,
        textposition="top center",
        name="buffer wait p99 (kernel)",
    )
)
fig.add_trace(
    go.Scatter(
        x=[sweep[n]["messages/s"] for n in names],
        y=[sweep[n]["wait p50 ms"] for n in names],
        mode="markers",
        name="buffer wait p50 (kernel)",
    )
)
if any(not math.isnan(sweep[n]["lag p99 ms"]) for n in names):
    fig.add_trace(
        go.Scatter(
            x=[sweep[n]["messages/s"] for n in names],
            y=[sweep[n]["lag p99 ms"] for n in names],
            mode="markers",
            marker_symbol="diamond",
            name="arrival-to-screen p99 (browser)",
        )
    )
    title = "200 tokens/s: messages to the browser against lag"
else:
    title = "200 tokens/s: messages to the browser against buffer wait (no browser: no lag)"
fig.update_layout(
    title=title,
    xaxis_title="messages/s to the browser",
    yaxis_title="ms",
    xaxis_type="log",
    height=380,
    margin={"t": 50, "b": 40},
)
fig.show()"""
    ),
    new_markdown_cell(
        """Read it right to left: one message per token (`fast`) shows text with no wait but sends
~200 messages a second; `60 / 600 ms` sends a handful but holds tokens for up to half a second.
Around 20–25 messages a second, text still looks continuous to a reader and the browser does a
fraction of the work.

## 4. Adaptive against fixed

A fixed setting is right for one token rate only: `medium` (4 tokens / 50 ms) sends ~5 messages a
second for a slow model and hundreds for a fast one. The adaptive policy measures the rate (a
time-weighted moving average) and sets `max_delay = 40 ms` with `max_tokens = 1` when at most one
token arrives per 40 ms, else twice the tokens expected in 40 ms (so the delay, not the count, sets
the pace): every token at once when the stream is slow, at most ~25 messages a second when it is
fast. If the browser's acknowledgements come back later than 50 ms beyond the connection's own
latency, it stretches the 40 ms (×1.5, up to 0.5 s) until the browser keeps up, and shrinks it back
when it does."""
    ),
    new_code_cell(
        """RATES = [20, 200, 2000]
compare = {
    (mode, rate): await run(sweep_view, PRESETS["medium"] if mode == "medium" else None, rate)
    for rate in RATES
    for mode in ("medium", "adaptive")
}
for (mode, rate), row in compare.items():
    print(f"{mode:>8} @ {rate:>4} tokens/s: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))

assert compare[("adaptive", 2000)]["messages/s"] <= 35  # capped, however fast the model
assert compare[("medium", 2000)]["messages/s"] > 3 * compare[("adaptive", 2000)]["messages/s"]
assert compare[("adaptive", 20)]["tokens/flush"] < 1.5  # a slow stream: each token at once"""
    ),
    new_code_cell(
        """fig = go.Figure()
for mode in ("medium", "adaptive"):
    fig.add_trace(
        go.Bar(
            x=[f"{rate} tokens/s" for rate in RATES],
            y=[compare[(mode, rate)]["messages/s"] for rate in RATES],
            name=f"{mode}: messages/s",
        )
    )
fig.update_layout(
    title="Messages per second to the browser: fixed 'medium' against adaptive",
    yaxis_title="messages/s",
    yaxis_type="log",
    barmode="group",
    height=340,
    margin={"t": 50, "b": 40},
)
fig.show()"""
    ),
    new_markdown_cell(
        """## What to try next

- Run section 2 again and switch the panel to `fast` mid-stream, then to `slow`: watch the text go
  from a flowing stream to whole phrases, and the readout's messages/s drop.
- Set the server to 2,000 tokens/s in the panel, tick **adaptive**, and start another stream: the
  readout stays near 25 flushes/s.
- `benchmarks/bench_render.py` measures the same in a separate kernel: messages/s, bytes per token
  (linear for `DeltaView`, quadratic for the HTML widget view) and the kernel's CPU."""
    ),
]

write_notebook("04_batching.ipynb", cells)
