"""Write notebooks/05_metrics.ipynb from the cells below (outputs empty, no widget state)."""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

cells = [
    new_markdown_cell(
        """# Measuring streams: TTFT, TPOT, ITL, goodput, and a live dashboard

A stream is more than its text: *when* each piece arrived is what users feel. In this notebook you
will:

1. attach a **`MetricsCollector`** to a chat and watch a **live dashboard** while it streams,
2. run **50 concurrent streams** at different speeds against the bundled server and read the run
   like a serving benchmark (percentiles, throughput, **goodput** against your SLOs),
3. compare how **vLLM**, **genai-perf** and **GuideLLM** would report the *same* run, and see where
   and why their numbers differ.

Everything runs offline against the bundled OpenAI-compatible simulator.

**The definitions** (vLLM's `bench serve`, all from the request's send time):

| metric | definition |
| --- | --- |
| TTFB | response headers arrived (time to first byte) |
| TTFT | first chunk **with content**; a role-only first chunk does not count |
| E2E | last content chunk |
| TPOT | (E2E − TTFT) / (N_out − 1), only for N_out > 1 (undefined is left out, never 0) |
| ITL | every gap between consecutive content chunks, pooled over requests before percentiles |
| N_out | `usage.completion_tokens`, else the content chunks counted (`output_tokens_source`) |
| throughput | Σ N_out / wall duration of the run; goodput = requests meeting every SLO / duration |"""
    ),
    new_code_cell(
        """import asyncio
import random

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from IPython.display import display

import streamkit as sk

client = sk.Client.bundled()  # the simulator, offline and keyless, whatever the environment says
collector = sk.MetricsCollector()"""
    ),
    new_markdown_cell(
        """## 1. One stream, with the dashboard drawn first

The dashboard is a plotly `FigureWidget` that redraws at most 4 times a second from the collector
(never once per token), in one `batch_update` per frame. Draw it **before** streaming: the first
draw of a figure can keep a busy browser page frozen for a few seconds, long enough to miss a
short stream."""
    ),
    new_code_cell(
        """dashboard = sk.Dashboard(collector).show()""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_code_cell(
        """result = await client.chat(
    "Explain how time to first token differs from time to first byte",
    model="sim-large",
    max_tokens=80,
    observers=[collector],  # every event reaches the collector; the screen is throttled
)
assert result.ok and collector.requests[0].chunks == result.chunks == 80"""
    ),
    new_markdown_cell(
        """What the collector recorded for that request, in seconds. The bundled server sends a
role-only chunk with the headers, so **TTFB** is a few milliseconds while **TTFT** is the model's
~0.4 s: a client that started its TTFT clock at the first chunk of any kind would report the
first byte instead."""
    ),
    new_code_cell(
        """one = collector.requests_df()
one[["ttfb", "ttft", "tpot", "e2e", "itl_mean", "output_tokens", "output_tokens_source"]]"""
    ),
    new_code_cell(
        """m = collector.request_metrics()[0]
assert m.ttfb < m.ttft  # the role-only chunk is not a token
assert m.output_tokens_source == "usage" and m.output_tokens == 80
assert abs(m.tpot - (m.e2e - m.ttft) / 79) < 1e-12
print(collector.summary())"""
    ),
    new_markdown_cell(
        """## 2. Fifty concurrent streams

Now a small load test: 50 requests at once, each asking the simulator for its own speed
(`extra_body={"streamkit": {...}}`), plus two requests for a model that does not exist, to see
errors counted by class. `collector.track(label, **tags)` names each request and keeps its
settings as columns. A fresh collector and dashboard first, drawn before the load starts."""
    ),
    new_code_cell(
        """load = sk.MetricsCollector()
load_dashboard = sk.Dashboard(load).show()""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_code_cell(
        """rng = random.Random(5)
speeds = [10, 20, 40, 80]


def one_request(i: int):
    speed = speeds[i % len(speeds)]
    ttft = round(rng.uniform(0.05, 0.6), 3)
    settings = {"tokens_per_second": speed, "ttft": ttft, "jitter": 0.2, "length": 40}
    return client.chat(
        f"Request {i}: explain batching",
        view=None,  # fifty text views would be noise; the dashboard is the view
        extra_body={"streamkit": settings},
        observers=[load.track(f"r{i}", speed=speed, configured_ttft=ttft)],
    )


def missing_model(i: int):
    return client.chat(
        "hello",
        model="no-such-model",
        view=None,
        raise_on_error=False,
        observers=[load.track(f"bad{i}")],
    )


results = await asyncio.gather(
    *(one_request(i) for i in range(50)), *(missing_model(i) for i in range(2))
)
summary = load.summary()
assert summary.completed == 50 and summary.failed == 2
assert summary.errors == {"NotFoundError": 2}
print(summary)"""
    ),
    new_markdown_cell(
        """### Percentiles, throughput and goodput

`summary_df()` has one row per metric (seconds; linear-interpolation percentiles, as numpy's
default). Goodput counts only the requests that met **every** objective you give, per second of
the run: here a time to first token under 0.4 s and under 40 ms per output token."""
    ),
    new_code_cell(
        """slo = sk.SLO(ttft=0.4, tpot=0.04)
table = load.summary_df(slo)
in_ms = table.drop(index="tokens_per_second")
seconds = ["mean", "p50", "p90", "p95", "p99", "max"]
in_ms[seconds] = (in_ms[seconds] * 1000).round(1)
display(in_ms.rename(columns={c: f"{c} (ms)" for c in seconds}))
attrs = table.attrs
print(
    f"duration {attrs['duration']:.2f} s · output {attrs['output_throughput']:.0f} tok/s · "
    f"{attrs['request_throughput']:.1f} req/s · goodput {attrs['goodput']:.1f} req/s"
)
assert 0 < attrs["goodput"] < attrs["request_throughput"]"""
    ),
    new_markdown_cell(
        """Each dot is a request: how long it waited for its first token against how fast it then
streamed, colored by the speed it asked for. The dashed lines are the SLO; goodput counts the
dots in the lower-left box."""
    ),
    new_code_cell(
        """requests = load.requests_df(slo).query("status == 'completed'")
fig = px.scatter(
    requests.assign(ttft_ms=requests.ttft * 1000, tpot_ms=requests.tpot * 1000),
    x="ttft_ms",
    y="tpot_ms",
    color=requests.speed.astype(int).astype(str) + " tok/s",
    symbol=requests.good.map({True: "meets the SLO", False: "misses it"}),
    labels={"ttft_ms": "time to first token (ms)", "tpot_ms": "time per output token (ms)"},
    title="Every request: first-token wait against decode speed",
    height=420,
)
fig.add_vline(x=slo.ttft * 1000, line_dash="dash")
fig.add_hline(y=slo.tpot * 1000, line_dash="dash")
fig.show()
assert requests.good.sum() == load.summary(slo).good_requests"""
    ),
    new_markdown_cell(
        """Look at TTFB: a few milliseconds for the single stream, but about a quarter of a second
here. The simulator answers every request at once; the wait is the *client* opening 52 requests
at the same moment on one busy core (each goes through the openai SDK), and it counts, because
every latency starts at the send. Subtracting TTFB leaves the server's share, which tracks the
time to first token each request asked for:"""
    ),
    new_code_cell(
        """server_share = (requests.ttft - requests.ttfb) * 1000
fig = px.scatter(
    x=requests.configured_ttft * 1000,
    y=server_share,
    labels={"x": "configured time to first token (ms)", "y": "measured TTFT − TTFB (ms)"},
    title="The server's share of the wait follows the configuration",
    height=360,
)
fig.add_shape(type="line", x0=0, y0=0, x1=600, y1=600, line_dash="dot")
fig.show()
# A load on the machine delays every request a little; the relation must hold regardless.
assert server_share.corr(requests.configured_ttft) > 0.9, server_share.describe()"""
    ),
    new_markdown_cell(
        """The raw per-chunk log is kept (`chunks_df()`: one row per chunk, ~16 bytes each in
memory), so any view of the run can be drawn afterwards. Inter-token gaps per configured speed:
the boxes sit at 1/speed, spread by the simulator's ±20% jitter."""
    ),
    new_code_cell(
        """chunks = load.chunks_df().merge(load.requests_df()[["request", "speed"]], on="request")
gaps = chunks.dropna(subset=["gap"])
fig = px.box(
    gaps.assign(gap_ms=gaps.gap * 1000, speed=gaps.speed.astype(int).astype(str) + " tok/s"),
    x="speed",
    y="gap_ms",
    points=False,
    labels={"gap_ms": "inter-token latency (ms)", "speed": "configured speed"},
    title="Inter-token latency by configured speed",
    height=380,
)
fig.show()
medians = gaps.groupby("speed").gap.median()
for speed, median in medians.items():
    assert abs(median - 1 / speed) < 0.25 / speed, (speed, median)"""
    ),
    new_markdown_cell(
        """How much kernel time did the live dashboard cost? Each frame is timed (thread CPU) as it is
drawn; with a frontend attached, each frame is also one comm message the browser renders."""
    ),
    new_code_cell(
        """cost = load_dashboard.frame_cost()
print(f"{cost['frames']} frames, median {cost['cpu_ms_p50']:.1f} ms CPU per frame")
assert cost["frames"] >= 1""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_markdown_cell(
        """## 3. Same run, three conventions

Benchmark tools agree on the names and disagree on the formulas. From the same raw log:

- **vLLM** (`bench serve`): ITL is *every gap*, pooled over requests, so its p99 shows the stalls a
  reader sees; TPOT is per request, (E2E − TTFT)/(N − 1).
- **genai-perf** (NVIDIA): its **ITL is vLLM's TPOT**: one average per request,
  (latency − TTFT)/(N − 1), so the first token is excluded and each request weighs the same; a stall
  inside a long reply is averaged away. It drops empty responses first (a role-only chunk never
  counts), counts every request that produced content, and divides throughput by first send → last
  response.
- **GuideLLM**: its **TPOT includes the first token**, (last token − start)/N, so a slow start
  inflates it, most for short replies; its ITL is (last − first token)/(N − 1) like vLLM's TPOT,
  but both are **token-weighted** and its percentiles take the nearest value of the weighted
  distribution (no interpolation); request latency runs to the closed response (after the usage
  chunk and `[DONE]`).

The table is in milliseconds (throughput rows: tokens/s)."""
    ),
    new_code_cell(
        """conventions = load.conventions()
pivot = conventions.pivot_table(index="metric", columns="convention", values=["mean", "p50", "p99"])
pivot.round(1)"""
    ),
    new_code_cell(
        """def value(convention: str, metric: str, stat: str = "mean") -> float:
    row = conventions.query("convention == @convention and metric == @metric")
    return float(row[stat].item())


# genai-perf's ITL is vLLM's TPOT, request for request.
assert abs(value("genai-perf", "itl") - value("vllm", "tpot")) < 1e-9
# GuideLLM's TPOT carries the whole time to first token: it is the largest "per token" figure.
assert value("guidellm", "tpot") > value("vllm", "tpot")
# Pooled gaps weigh long replies more than per-request averages do; here the lengths are equal,
# so the means agree closely while the tails differ.
assert value("vllm", "itl", "p99") > value("genai-perf", "itl", "p99")
conventions.query("metric in ['tpot', 'itl']")[["convention", "metric", "definition"]]"""
    ),
    new_markdown_cell(
        """The tails tell the story: pooled gaps (vLLM's ITL) keep every slow gap, per-request averages
(genai-perf's ITL, vLLM's TPOT) smooth them out, and GuideLLM's TPOT is shifted up by the
time to first token."""
    ),
    new_code_cell(
        """show = conventions[conventions.metric.isin(["ttft", "tpot", "itl", "e2e"])]
fig = px.bar(
    show.melt(id_vars=["convention", "metric"], value_vars=["p50", "p99"], var_name="stat"),
    x="metric",
    y="value",
    color="convention",
    barmode="group",
    facet_col="stat",
    log_y=True,
    labels={"value": "ms (log scale)"},
    title="The same 50 requests under three conventions",
    height=380,
)
fig.show()"""
    ),
    new_code_cell(
        """gp = sk.metrics.genai_perf_metrics(load.requests)
pooled = [g * 1000 for r in load.request_metrics() if r.ok for g in r.itl]
per_request = [r.tpot * 1000 for r in load.request_metrics() if r.ok and r.tpot is not None]
fig = go.Figure()
fig.add_histogram(x=pooled, name="vLLM ITL: every gap", histnorm="probability", opacity=0.6)
fig.add_histogram(
    x=per_request,
    name="genai-perf ITL: one average per request",
    histnorm="probability",
    opacity=0.6,
)
fig.update_layout(
    barmode="overlay",
    title="Why the ITL tails differ",
    xaxis_title="ms",
    yaxis_title="share",
    height=360,
)
fig.show()
assert gp.metrics["itl"].count == len(per_request) == 50"""
    ),
    new_markdown_cell(
        """## 4. Keep the data

Tables export to CSV (and Parquet with `pip install 'streamkit[parquet]'`); `read_csv` restores the
column types."""
    ),
    new_code_cell(
        """import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as folder:
    path = load.to_csv(Path(folder) / "requests.csv")
    back = sk.metrics.read_csv(path)
    chunks_path = load.to_csv(Path(folder) / "chunks.csv", "chunks")
    chunk_rows = len(sk.metrics.read_csv(chunks_path, "chunks"))
pd.testing.assert_frame_equal(back, load.requests_df(), check_exact=False)
assert chunk_rows == 50 * 40
print(f"{len(back)} requests and {chunk_rows} chunks written and read back")"""
    ),
    new_markdown_cell(
        """## What to try next

- Pass `observers=[collector]` to your own chats against a real endpoint
  (`sk.Client(base_url, model=...)`) and compare its TTFB and TTFT: servers differ in when they
  send the role chunk.
- Tighten the SLO and watch goodput fall while throughput stays put.
- `load.requests_df()` has a `retries` and a `retry_causes` column: run requests that the server
  drops mid-stream and see the retries counted by cause on the dashboard."""
    ),
]

write_notebook("05_metrics.ipynb", cells)
