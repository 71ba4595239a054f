"""Write notebooks/06_cost.ipynb from the cells below (outputs empty, no widget state)."""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

cells = [
    new_markdown_cell(
        """# What a stream costs, and four ways to change it

In this notebook you will:

1. look up **prices per model** from three sources (the `genai-prices` library's bundled table,
   offline; the bundled server's simulated models; your own overrides or a price file),
2. price a request's **usage** exactly, including cached prompt tokens, and **estimate** a
   request that reported no usage, with a named tokenizer,
3. keep a **ledger** of requests that flags missing usage and disagreements, and shows what a
   **retry** costs in tokens that were generated and thrown away,
4. measure four experiments against the bundled server: **response caching**, **dynamic model
   selection**, **connection pooling**, and **batching** (which changes only the screen).

Everything runs offline against the bundled server. One marked cell uses a real provider when
one is configured (`OPENAI_BASE_URL`, or `STREAMKIT_BASE_URL`)."""
    ),
    new_code_cell(
        """import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

import streamkit as sk
from streamkit.experiments import (
    batching_experiment,
    caching_experiment,
    pooling_experiment,
    routing_experiment,
)

server = sk.default_server()
client = sk.Client.bundled()  # the simulator, whatever the environment says; model sim-small
print(f"bundled server at {server.base_url}")"""
    ),
    new_markdown_cell(
        """## 1. Prices

`PriceTable.default()` merges the `genai-prices` table (its data ships inside the package, so a
lookup needs no network) with the bundled server's simulated models. Prices are USD per 1M tokens:
fresh input, cached input, output. Each price says where it came from."""
    ),
    new_code_cell(
        """table = sk.PriceTable.default()
models = ["sim-small", "sim-large", "gpt-4o-mini"]
rows = []
for model in models:
    price = table.price_for(model)
    rows.append(
        {
            "model": model,
            "input": price.input,
            "cached_input": price.cached_input,
            "output": price.output,
            "source": price.source,
        }
    )
prices = pd.DataFrame(rows).set_index("model")
assert prices.loc["sim-large", "output"] == 10.0
assert prices.loc["gpt-4o-mini", "source"].startswith("genai-prices")
prices"""
    ),
    new_markdown_cell(
        """A model nobody priced is an error, not a free request. Ask for a marker instead when you
would rather see the gap in a table."""
    ),
    new_code_cell(
        """# NBVAL_CHECK_OUTPUT
try:
    table.price_for("my-finetune")
except sk.UnpricedModelError as exc:
    print(f"{exc.kind}: {exc.message}")
marker = table.price_for("my-finetune", strict=False)
assert isinstance(marker, sk.Unpriced) and not marker
print(marker)"""
    ),
    new_markdown_cell(
        """Your own prices win over both sources: pass them in code, or keep them in a JSON or TOML file.
A bad entry names itself and the file."""
    ),
    new_code_cell(
        """mine = table.with_prices({"my-finetune": {"input": 0.30, "cached_input": 0.15, "output": 1.20}})
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "prices.json"
    path.write_text('{"currency": "USD", "models": {"other": {"input": -1, "output": 2}}}')
    try:
        sk.PriceTable.from_file(path, base=mine)
    except sk.PriceTableError as exc:
        print(exc.message.replace(folder, "<tmp>"))
assert mine.price_for("my-finetune").output == 1.20"""
    ),
    new_markdown_cell(
        """## 2. Pricing usage, and estimating without it

`usage.prompt_tokens` *includes* the cached tokens. Each part is priced once, the cached part at
the cached rate. Pricing the cached tokens again at the full input rate is a common mistake, and
with cache rates at a tenth of input it overstates the prompt cost by up to 10×."""
    ),
    new_code_cell(
        """# NBVAL_CHECK_OUTPUT
usage = sk.Usage(
    prompt_tokens=10_000, completion_tokens=800, total_tokens=10_800, cached_tokens=8_000
)
cost = sk.cost_of(usage, "sim-large", table)
print(cost)
assert cost.input_tokens == 2_000 and cost.cached_tokens == 8_000
assert abs(cost.total_usd - (2_000 * 2.5 + 8_000 * 1.25 + 800 * 10.0) / 1e6) < 1e-12"""
    ),
    new_markdown_cell(
        """With no usage, the tokens have to be counted. For the `sim-*` models the bundled server's own
tokenizer gives the exact count; for other models streamkit uses `tiktoken` when installed and
otherwise a labelled chars/4 heuristic. The estimate says which."""
    ),
    new_code_cell(
        """text = "Streaming does not change the price of a reply, but stopping early can."
for model in ("sim-small", "gpt-4o-mini"):
    counted = sk.count_tokens(text, model)
    print(f"{model:12} {counted.tokens:3} tokens by {counted.tokenizer} (exact: {counted.exact})")
estimate = sk.estimate_cost("Why stream?", text, "sim-small", table)
assert estimate.estimated and estimate.tokenizer
print(estimate)"""
    ),
    new_markdown_cell(
        """## 3. A ledger, and what a retry costs

The ledger keeps one row per request: usage as reported, tokens as counted, the price. Below,
three requests: a normal one, one whose usage is switched off (`include_usage: False`, as some
servers do), and one whose connection the server drops after 10 tokens. That client restarts
from scratch (`on_interrupt="restart"`, `resume=False`), so the 10 tokens already generated are
thrown away, but they were generated, and a provider bills them. The second attempt also sends
the prompt again, billed again: given the request's metrics recorder, the ledger counts that too
(`resent_prompt_tokens`)."""
    ),
    new_code_cell(
        """collector = sk.MetricsCollector()
ledger = sk.Ledger(table)
prompt = "Explain what a retry costs"

normal = await client.chat(prompt, view=None, max_tokens=40, seed=1)
ledger.add(normal, prompt=prompt, label="normal")

no_usage = await client.chat(
    prompt, view=None, max_tokens=40, seed=1, stream_options={"include_usage": False}
)
ledger.add(no_usage, prompt=prompt, label="no usage")

restarting = sk.Client.bundled(on_interrupt="restart", resume=False)
recorder = collector.track("dropped at 10")
retried = await restarting.chat(
    prompt,
    view=None,
    max_tokens=40,
    seed=1,
    observers=[recorder],
    extra_body={"streamkit": {"faults": [{"kind": "drop", "at": 10, "attempts": 1}]}},
)
ledger.add(retried, prompt=prompt, recorder=recorder, label="dropped at 10")
await restarting.aclose()

rows = ledger.df().set_index("label")
assert rows.loc["no usage", "missing_usage"] and rows.loc["no usage", "estimated"]
assert rows.loc["dropped at 10", "discarded_tokens"] == 10
assert rows.loc["dropped at 10", "resent_prompt_tokens"] == retried.usage.prompt_tokens
assert not rows["disagreement"].any()  # the sim tokenizer counts exactly what the server bills
assert retried.text == normal.text  # the restart produced the same reply, paid for twice in part
rows[
    [
        "prompt_tokens_reported",
        "prompt_tokens_counted",
        "completion_tokens_reported",
        "completion_tokens_counted",
        "discarded_tokens",
        "resent_prompt_tokens",
        "retry_usd",
        "total_usd",
        "missing_usage",
        "disagreement",
    ]
]"""
    ),
    new_code_cell(
        """totals = ledger.totals()
chunks = collector.chunks_df()
print(f"{int((~chunks['kept']).sum())} chunks discarded in the metrics log (attempt 1)")
print(f"retries cost ${totals['retry_usd']:.8f} of ${totals['total_usd']:.8f} in total")
assert totals["retry_usd"] > 0"""
    ),
    new_markdown_cell(
        """## 4. Experiments

### Response caching

An exact-match cache keyed on the normalised request (model, messages, `max_tokens`, `seed`,
`temperature`). A hit sends nothing, costs nothing, and returns the same text at once."""
    ),
    new_code_cell(
        """prompts = ["Explain caching", "What is a token?", "Why stream replies?"]
cached = await caching_experiment(client, prompts, rounds=3, max_tokens=30)
assert (
    cached.loc[cached["round"] > 1, "hit"].all()
    and not cached.loc[cached["round"] == 1, "hit"].any()
)
by_round = cached.groupby("round")[["seconds", "usd"]].sum()
print(
    f"hit rate {cached.attrs['hit_rate']:.0%}, saved ${cached.attrs['saved_usd']:.8f} "
    f"and {cached.attrs['saved_seconds']:.2f} s of waiting"
)
fig = go.Figure(go.Bar(x=[f"round {r}" for r in by_round.index], y=by_round["seconds"]))
fig.update_layout(
    title="Wall time per round (round 1 fills the cache)", yaxis_title="seconds", height=300
)
fig.show()
by_round"""
    ),
    new_markdown_cell(
        """### Dynamic model selection

A simple router sends short, simple prompts to `sim-small` and long or reasoning prompts
("explain", "compare", "why"…) to `sim-large`. Both arms stream the same prompts."""
    ),
    new_code_cell(
        """questions = [
    "Say hi",
    "List three colours",
    "What is SSE?",
    "Name a fast model",
    "Explain why retries cost money",
    "Compare pooled and fresh connections for a long notebook session with many streams",
]
routed = await routing_experiment(client, questions, max_tokens=30)
assert set(routed["routed_model"]) == {"sim-small", "sim-large"}
summary = pd.DataFrame(
    {
        "USD": [routed["routed_usd"].sum(), routed["large_usd"].sum()],
        "mean e2e (s)": [routed["routed_e2e"].mean(), routed["large_e2e"].mean()],
    },
    index=["routed", "always sim-large"],
)
assert summary.loc["routed", "USD"] < summary.loc["always sim-large", "USD"]
fig = go.Figure(
    [
        go.Bar(name="routed", x=routed["prompt"], y=routed["routed_usd"] * 1e6),
        go.Bar(name="always sim-large", x=routed["prompt"], y=routed["large_usd"] * 1e6),
    ]
)
fig.update_layout(title="Cost per prompt", yaxis_title="micro-USD", barmode="group", height=350)
fig.show()
display(routed[["prompt", "reason", "routed_model"]])
summary"""
    ),
    new_markdown_cell(
        """### Connection pooling

A fresh `Client` per request opens (and closes) a new connection each time; one client keeps its
connection alive. On loopback a handshake costs little, so expect a small difference here; over
TLS to a distant provider it is a round trip or two per request."""
    ),
    new_code_cell(
        """pool = await pooling_experiment(requests=6)
medians = pool.groupby(["mode", "warm"])[["ttfb", "ttft", "e2e"]].median() * 1000
assert len(pool) == 12 and pool["ttft"].notna().all()
fig = go.Figure(
    [
        go.Box(name=f"{mode} {'warm' if warm else 'cold'}", y=group["ttft"] * 1000)
        for (mode, warm), group in pool.groupby(["mode", "warm"])
    ]
)
fig.update_layout(title="Time to first token", yaxis_title="ms", height=300)
fig.show()
medians.round(1)"""
    ),
    new_markdown_cell(
        """### Batching changes the screen, not the bill

The same request (same seed) streamed into a view that shows every token and one that batches up
to 32 tokens or half a second per update: the screen updates differ, the tokens, the text and the
price do not."""
    ),
    new_code_cell(
        """batching = await batching_experiment(client, max_tokens=40)
assert batching["screen_updates"].nunique() == 2
assert batching["usd"].nunique() == 1 and batching["text_sha"].nunique() == 1
batching"""
    ),
    new_markdown_cell(
        """## A real provider (optional)

**This cell talks to a real provider only when one is configured** (`OPENAI_BASE_URL` and
`OPENAI_API_KEY`, or their `STREAMKIT_` twins); otherwise it prints a skip line. It prices one
short reply from the provider's own usage. Prices for real models come from `genai-prices`; add
yours with `with_prices` if the model is missing."""
    ),
    new_code_cell(
        """real = sk.Client.from_env()  # None unless STREAMKIT_BASE_URL or OPENAI_BASE_URL is set
if real is None:
    print("No endpoint configured: skipping the real provider.")
else:
    reply = await real.chat("Say hello in five words", view=None, max_tokens=20)
    print(sk.Ledger(table).add(reply, prompt="Say hello in five words"))
    await real.aclose()"""
    ),
    new_code_cell("""await client.aclose()"""),
    new_markdown_cell(
        """## What to try next

- Put your provider's prices in a `prices.toml` and load it with `sk.PriceTable.from_file`.
- Drop a stream with `resume=True` (the default) instead: the bundled server numbers its events,
  so the retry resumes and nothing is discarded. Compare the ledger rows.
- Tune the `Router` (`max_small_tokens`, `complex_words`) on your own prompt set and watch the
  cost and latency trade off.
- Lower the ledger's `threshold` and price a model counted with the chars/4 heuristic: see how
  often an estimate disagrees with what is billed."""
    ),
]

write_notebook("06_cost.ipynb", cells, real_provider=False)
