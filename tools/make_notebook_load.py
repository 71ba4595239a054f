"""Write notebooks/07_load.ipynb from the cells below (outputs empty, no widget state)."""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

cells = [
    new_markdown_cell(
        """# Load experiments: concurrency, arrivals, routing and scale-out

*What happens to time to first token at 64 concurrent users?* That is the question of vLLM's
`bench serve`, genai-perf and llmperf; here you ask it from a notebook, with live plots. You will:

1. run a **closed-loop** load (N users, each sending its next request when the last one ends) with
   a live dashboard and a progress bar,
2. **sweep concurrency** and watch the throughput–latency trade-off of a server with finite
   capacity,
3. send **open-loop Poisson arrivals** at a chosen rate and check the rate you got,
4. check that the **client is not the bottleneck** (its CPU and event-loop lag are in every result),
5. **route** across three endpoints — one fast, one slow, one that fails for a while — and compare
   round robin with least-outstanding-requests,
6. **fan out** the same experiment over Dask workers and merge their results,
7. do it all from the command line with **`streamkit bench`**.

Everything runs offline against the bundled simulator (sizes are kept small so the notebook runs
in about a minute)."""
    ),
    new_code_cell(
        """import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import streamkit as sk
from streamkit.load import LoadSpec, run_load"""
    ),
    new_markdown_cell(
        """The simulator runs in a **child process** for load work: a server thread inside the
kernel would share the kernel's interpreter lock with the client and skew what it measures. This
one has a finite capacity, like a GPU engine: at most 32 streams generate at once (the rest queue)
and they share 1,600 decode tokens/s (the model alone would give each stream 80 tokens/s)."""
    ),
    new_code_cell(
        """server = sk.serve_in_subprocess(extra_args=("--max-batch", "32", "--decode-capacity", "1600"))
client = sk.Client(server.base_url, model="sim-small", transport="fast-sse")
server"""
    ),
    new_markdown_cell(
        """## 1. A closed loop, watched live

`run_load` records every event in a `MetricsCollector`, so the dashboard of the metrics notebook
follows the run as it happens. Draw it first, then run."""
    ),
    new_code_cell(
        """collector = sk.MetricsCollector()
dashboard = sk.Dashboard(collector).show()""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_code_cell(
        """# warmup: 16 unrecorded requests first, so connections (and imports) are ready
spec = LoadSpec(num_requests=96, concurrency=16, max_tokens=48, seed=1, warmup=16)
result = await run_load(client, spec, collector=collector, progress=True)
print(result.table())
assert result.summary.completed == 96""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_markdown_cell(
        """The report reads like `vllm bench serve`'s: throughput, then TTFT, TPOT (time per output
token after the first), ITL (every gap between chunks) and E2E at p50/p90/p99. Every request is a
row of `result.requests_df()`:"""
    ),
    new_code_cell(
        """result.requests_df()[["request", "status", "ttft", "tpot", "e2e", "output_tokens"]].head()"""
    ),
    new_markdown_cell(
        """## 2. Sweeping concurrency

More users means more throughput — until the server's capacity is shared so thinly that each
stream slows down (past 20 streams, 1,600 tokens/s no longer give each its 80: TPOT rises), and
past 32 streams requests queue for a batch slot (TTFT rises)."""
    ),
    new_code_cell(
        """rows = []
for users in (1, 4, 16, 48):
    r = await run_load(
        client, LoadSpec(num_requests=max(2 * users, 12), concurrency=users, max_tokens=30),
        progress=False,
    )
    s = r.summary
    rows.append({
        "users": users,
        "ttft_p50_ms": s.ttft.p50 * 1000, "ttft_p99_ms": s.ttft.p99 * 1000,
        "tpot_p50_ms": s.tpot.p50 * 1000, "output_tok_s": s.output_throughput,
        "client_cpu": r.client_cpu,
    })
sweep = pd.DataFrame(rows)
first, last = sweep.iloc[0], sweep.iloc[-1]
assert last["output_tok_s"] > first["output_tok_s"]  # more users, more throughput...
assert last["tpot_p50_ms"] > first["tpot_p50_ms"]    # ...each stream slower (shared capacity)
assert last["ttft_p99_ms"] > first["ttft_p99_ms"]    # ...and some wait for a batch slot
sweep.round(2)"""
    ),
    new_code_cell(
        """fig = make_subplots(rows=1, cols=2, subplot_titles=("latency (ms)", "output tokens/s"))
lines = {"ttft_p50_ms": "TTFT p50", "ttft_p99_ms": "TTFT p99", "tpot_p50_ms": "TPOT p50"}
for col, name in lines.items():
    fig.add_trace(go.Scatter(x=sweep["users"], y=sweep[col], name=name, mode="lines+markers"), 1, 1)
fig.add_trace(go.Scatter(x=sweep["users"], y=sweep["output_tok_s"], name="throughput",
                         mode="lines+markers"), 1, 2)
fig.update_xaxes(type="log", title="concurrent users")
fig.update_layout(height=340, margin=dict(t=40, b=40))
fig.show()"""
    ),
    new_markdown_cell(
        """## 3. Open-loop arrivals

Real users do not wait for each other. With `request_rate=R`, requests arrive at random, R per
second on average (a Poisson process: exponential gaps), whether or not the server keeps up.
Two rates to tell apart: the *drawn* rate of this sample of arrival times varies around the one
asked for by about 1/√n (±7% for 200 requests: that is randomness, not error), and the *sent* rate
is what the dispatcher achieved against the drawn times; `arrival_lag` is how late it sent each
request."""
    ),
    new_code_cell(
        """poisson = await run_load(
    client,
    LoadSpec(num_requests=200, concurrency=None, request_rate=50, max_tokens=20, seed=3),
    progress=False,
)
print(f"asked 50 req/s · drawn {poisson.scheduled_rate:.1f} · sent {poisson.send_rate:.1f} req/s")
df = poisson.requests_df().sort_values("scheduled_at")
gaps = df["scheduled_at"].diff().dropna()
print(f"dispatch lag p99 {df['arrival_lag'].quantile(0.99) * 1000:.1f} ms")
assert abs(poisson.send_rate / poisson.scheduled_rate - 1) < 0.1"""
    ),
    new_code_cell(
        """fig = px.histogram(gaps, nbins=25, histnorm="probability density",
                   labels={"value": "gap between arrivals (s)"}, title="inter-arrival gaps")
x = [i / 250 for i in range(1, 41)]
fig.add_trace(go.Scatter(x=x, y=[50 * math.exp(-50 * t) for t in x], name="exponential, 50/s"))
fig.update_layout(height=300, showlegend=False, margin=dict(t=40, b=40))
fig.show()"""
    ),
    new_markdown_cell(
        """## 4. Is the client the bottleneck?

A load generator that saturates its own core measures itself. Every result carries the event
loop's CPU use and lag, and warns past 85% of a core. Compare the transports on the same 40
streams of unpaced tokens: the request paths built on httpx2 (`sse`, through the openai SDK, and
`generic-sse`) cost several times the lean `fast-sse` reader (asyncio + the llhttp parser) or the
WebSocket. Absolute figures in a kernel are higher than in a script (the kernel's own work shares
the thread); `benchmarks/bench_load.py` measures them on a quiet core."""
    ),
    new_code_cell(
        """unpaced = {"streamkit": {"ttft": 0, "tokens_per_second": 100000, "jitter": 0}}
rows = []
for transport in ("sse", "generic-sse", "fast-sse", "ws"):
    async with sk.Client(server.base_url, model="sim-small", transport=transport) as c:
        r = await run_load(c, LoadSpec(num_requests=40, concurrency=40, max_tokens=200,
                                       warmup=40, extra_body=unpaced), progress=False)
    rows.append({"transport": transport,
                 "µs CPU per chunk": r.client_cpu_seconds / r.summary.output_tokens * 1e6,
                 "loop lag p99 (ms)": r.loop_lag["p99"] * 1000})
costs = pd.DataFrame(rows)
assert costs.set_index("transport")["µs CPU per chunk"].idxmin() in ("fast-sse", "ws")
costs.round(1)"""
    ),
    new_code_cell(
        """px.bar(costs, x="transport", y="µs CPU per chunk", title="client CPU per streamed chunk",
       height=300).show()"""
    ),
    new_markdown_cell(
        """## 5. Routing across endpoints

Three bundled servers: `fast`, `slow` (a model four times slower) and `flaky`, which answers 503
for a while in the middle of the run. A `LoadBalancer` probes each endpoint's `/v1/models` every
0.2 s, takes one out after 2 failures and back after a success, and sends a request that fails
before its first token to another endpoint (failover). We run the same open-loop load with each
strategy."""
    ),
    new_code_cell(
        """import asyncio
import dataclasses

from streamkit.server.models import MODELS

slow_model = dataclasses.replace(MODELS["sim-small"], ttft=0.3, tokens_per_second=20)
servers = {
    "fast": sk.serve_in_thread(),
    "slow": sk.serve_in_thread(models={"sim-small": slow_model}),
    "flaky": sk.serve_in_thread(),
}


async def routed_run(strategy: str) -> pd.DataFrame:
    balancer = sk.LoadBalancer(
        {name: s.base_url for name, s in servers.items()},
        strategy=strategy, model="sim-small", health_interval=0.2,
    )
    async with balancer:
        async def outage() -> None:
            await asyncio.sleep(0.5)
            servers["flaky"].set_failing(503)
            await asyncio.sleep(1.0)
            servers["flaky"].set_failing(None)

        blip = asyncio.create_task(outage())
        r = await run_load(balancer, LoadSpec(num_requests=100, concurrency=None,
                                              request_rate=40, max_tokens=20, seed=5),
                           progress=False)
        await blip
    df = r.requests_df()
    df["strategy"] = strategy
    return df


routed = pd.concat([await routed_run(s) for s in ("round_robin", "least_outstanding")])
assert (routed["status"] == "completed").all()  # failover hid the outage from every request
routed.groupby(["strategy", "endpoint"]).size().unstack(fill_value=0)"""
    ),
    new_code_cell(
        """fig = px.scatter(routed, x="sent_at", y="ttft", color="endpoint", facet_col="strategy",
                 labels={"sent_at": "sent at (s)", "ttft": "TTFT (s)"}, height=340,
                 title="who served each request, and how fast (flaky is down from 0.5 to 1.5 s)")
fig.show()
routed.assign(on_slow=routed["endpoint"] == "slow").groupby("strategy").agg(
    share_on_slow=("on_slow", "mean"), ttft_mean=("ttft", "mean"), e2e_mean=("e2e", "mean"),
).round(3)"""
    ),
    new_markdown_cell(
        """Round robin keeps sending a third of the traffic to the slow endpoint; least-outstanding
sees its requests pile up there and sends fewer. During the outage, requests that hit `flaky`
before the health check caught it were moved to another endpoint before their first token: no
request failed.

## 6. Scale-out over Dask

One Python process streams tens of thousands of chunks per second; beyond that, or to load a
remote cluster from many machines, split the experiment over Dask workers.
`run_load_distributed` starts a local cluster when you give it none; pass `dask_client=` (a
`distributed.Client` or `"tcp://scheduler:8786"`) for a real one. Each worker runs its shard on
its own event loop, and every request comes back into one collector with a `worker` column."""
    ),
    new_code_cell(
        """from streamkit.distributed import run_load_distributed

spread = run_load_distributed(
    LoadSpec(num_requests=40, concurrency=8, max_tokens=20, seed=9),
    base_url=server.base_url, model="sim-small", transport="fast-sse", workers=2, progress=False,
)
per_worker = spread.requests_df().groupby("worker").agg(
    requests=("request", "size"), ttft_p50=("ttft", "median"))
assert spread.summary.completed == 40 and len(per_worker) == 2
per_worker""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_markdown_cell(
        """## 7. The same from a terminal

`streamkit bench` runs the experiment with a progress bar and prints the report (`--json` for
machines, `--output runs.csv|.jsonl|.parquet` for every request). Without `--base-url` it starts
the simulator itself."""
    ),
    new_code_cell(
        """import subprocess
import sys

bench = subprocess.run(
    [sys.executable, "-m", "streamkit", "bench", "--num-requests", "20", "--concurrency", "5",
     "--max-tokens", "16", "--goodput", "ttft:500", "tpot:50"],
    capture_output=True, text=True, timeout=120,
)
print(bench.stdout)
assert bench.returncode == 0, bench.stderr""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_code_cell(
        """for s in servers.values():
    s.stop()
await client.aclose()
server.stop()"""
    ),
    new_markdown_cell(
        """## What to try next

- Raise `--max-batch` or `--decode-capacity` (or remove them) and rerun the sweep: where does the
  knee move?
- Try `burstiness=0.3` in the open loop: the same mean rate, in bursts. What happens to TTFT p99?
- Give the balancer `sticky=True` and a `conversation_id` per user, and see each conversation stay
  on one endpoint.
- Point `client` at a real endpoint (below) and find its concurrency knee — mind your rate limits
  and bill: start with `num_requests=20`."""
    ),
]

write_notebook("07_load.ipynb", cells)
