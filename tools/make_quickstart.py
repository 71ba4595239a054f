"""Write notebooks/00_quickstart.ipynb from the cells below (outputs empty, no widget state)."""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

cells = [
    new_markdown_cell(
        """# streamkit quick start: watch a model stream

In five minutes you will:

1. start the **bundled OpenAI-compatible server** (offline, no API key: the embedded default),
2. stream a chat completion through the real `openai` SDK and **watch the text grow live**,
3. read what the stream measured (time to first token, tokens/s, usage, finish reason),
4. run a stream in the background with a **Stop** button, and see what errors look like,
5. keep a multi-turn conversation in a `ChatState`,
6. read a reply rendered as **Markdown** while it streams, and chat in a **chat box**.

Every cell runs top to bottom without a network. The last section points the same code at a real
provider (OpenAI, vLLM, Ollama, llama.cpp) by changing a base URL and a key."""
    ),
    new_code_cell(
        """import pandas as pd

import streamkit as sk
from streamkit.server import MODELS

server = sk.default_server()  # started once per process, in a background thread, on a free port
print(f"bundled server at {server.base_url}")
pd.DataFrame(
    [
        {
            "model": m.id,
            "time to first token (s)": m.ttft,
            "tokens/s": m.tokens_per_second,
            "USD per 1M input": m.input_price,
            "USD per 1M output": m.output_price,
        }
        for m in MODELS.values()
    ]
).set_index("model")"""
    ),
    new_markdown_cell(
        """## 1. Stream a reply

`sk.chat` sends the prompt, and renders tokens as they arrive into a live view: a widget here in
JupyterLab, plain text in a terminal or a CI log. `sim-large` is the slower of the simulated models
(~25 tokens/s after a ~0.4 s time to first token), slow enough to watch."""
    ),
    new_code_cell(
        """result = await sk.chat("Explain server-sent events", model="sim-large", max_tokens=120)
assert result.ok and result.output_tokens == 120"""
    ),
    new_markdown_cell(
        """The result keeps the text and what the stream measured. Time to first token counts the first
chunk *with content* (the role-only chunk the server sends first does not count), as vLLM's
`bench serve` does."""
    ),
    new_code_cell(
        """print(result.summary())
print(f"time to first byte {result.ttfb * 1000:.0f} ms")
print(f"time to first token {result.ttft * 1000:.0f} ms")"""
    ),
    new_markdown_cell(
        """Token arrival over time shows the shape of a stream better than numbers do: a flat start
(time to first token), then a steady slope (the decode speed) with a little jitter."""
    ),
    new_code_cell(
        """import plotly.graph_objects as go

t0 = result.sent_at
fig = go.Figure(
    go.Scatter(
        x=[t - t0 for t in result.token_times],
        y=list(range(1, result.chunks + 1)),
        mode="lines+markers",
        marker={"size": 4},
        name="tokens received",
    )
)
fig.add_vline(x=result.ttft, line_dash="dot", annotation_text="first token")
fig.update_layout(
    title="Tokens received over time (sim-large)",
    xaxis_title="seconds since the request was sent",
    yaxis_title="tokens",
    height=320,
    margin={"t": 50, "b": 40},
)
fig.show()"""
    ),
    new_markdown_cell(
        """## 2. A stream in the background, with a Stop button

`sk.start_chat` runs the stream as a background task: the cell returns at once, you can go on
working while it streams, and **Stop** works on every Jupyter kernel. (Recent ipykernel versions
also handle widget events while a cell `await`s; older ones, and any cell that blocks its thread,
hold them back until the cell ends.) Stopping closes the HTTP connection, so the server stops
generating, and keeps the text received so far."""
    ),
    new_code_cell(
        """task = sk.start_chat(
    "Write a long essay about latency in data pipelines",
    model="sim-large",
    max_tokens=400,
)"""
    ),
    new_code_cell(
        """import asyncio

await asyncio.sleep(1.5)  # a person would press Stop here; we press it from code
task.stop()
stopped = await task
print(stopped.status, "after", stopped.chunks, "chunks")
assert stopped.status == "stopped" and 0 < stopped.chunks < 400"""
    ),
    new_markdown_cell(
        """## 3. Errors are typed, and say what to do

Every failure raises a subclass of `sk.StreamkitError` that names its cause, says whether a retry
could help, and keeps any text that arrived before it. Here a server that requires a key gets the
wrong one."""
    ),
    new_code_cell(
        """secured = sk.serve_in_thread(api_key="the-right-key")
try:
    client = sk.Client(secured.base_url, api_key="a-wrong-key", model="sim-small")
    await client.chat("hello", view=None)
except sk.AuthError as error:
    print(f"{error.kind} (retryable: {error.retryable}): {error}")
finally:
    secured.stop()"""
    ),
    new_markdown_cell(
        """## 4. A conversation

A `ChatState` holds the history, sends it as context with each prompt, and tells subscribers when
anything changes (what a UI binds to)."""
    ),
    new_code_cell(
        """state = sk.ChatState(system="You are a concise assistant.")
changes = []
state.subscribe(lambda s, change: changes.append(change))

await sk.chat("What is time to first token?", state=state, max_tokens=40, view=None)
await sk.chat("And inter-token latency?", state=state, max_tokens=40, view=None)

for message in state.history:
    print(f"{message.role:>9}: {message.content[:70]}…")
assert [m.role for m in state.history] == ["user", "assistant", "user", "assistant"]
assert changes.count("end") == 2"""
    ),
    new_markdown_cell(
        """## 5. Replies that read well: Markdown, and a chat box

Here in JupyterLab a reply renders as Markdown *while it streams*: headings, lists, tables and
highlighted code, with buttons that copy the reply or a code block, and the figures (time to first
token, tokens/s, then usage and cost) in the bar above it. The kernel still sends only the new
text; the page renders it. A model's reply is untrusted, so raw HTML in it is shown as text and
everything is sanitized before it reaches the page. `sim-markdown` is a simulated model that
answers in Markdown; `view="text"` would show the same reply as plain text."""
    ),
    new_code_cell(
        """reply = await sk.chat(
    "How do I measure streaming latency?",
    model="sim-markdown",
    seed=3,
    extra_body={"streamkit": {"tokens_per_second": 60}},
)
assert reply.ok and "```" in reply.text and "| ---" in reply.text"""
    ),
    new_markdown_cell(
        """A `ChatBox` is a chat in a cell: type, **Send** (it becomes **Stop** while the reply streams),
**Regenerate** the last reply. It keeps a `ChatState`, so every prompt is sent with the
conversation before it; the reply streams in the background and the kernel stays free. Type a
question in the box below, or run the next cell, which sends one from code."""
    ),
    new_code_cell(
        """box = sk.ChatBox(model="sim-markdown", system="You are a concise assistant.")
box"""
    ),
    new_code_cell(
        """await box.send("What should I measure in a streaming API?")
# The conversation is plain data: save it, or continue it with sk.ChatBox(messages=...)
print([message["role"] for message in box.messages])"""
    ),
    new_markdown_cell(
        """## 6. Point it at a real provider

The same code streams from any OpenAI-compatible endpoint, configured as the openai SDK is: set
`OPENAI_BASE_URL` (for example `https://api.openai.com/v1`, `http://localhost:8000/v1` for vLLM,
`http://localhost:11434/v1` for Ollama, `http://localhost:8080/v1` for llama.cpp) and
`OPENAI_API_KEY` if the endpoint needs one, then run this cell. The model is the server's own
unless `STREAMKIT_MODEL` names one. Without them the cell does nothing, and no key is ever stored
in the notebook. (`sk.chat` above always uses the bundled server; `sk.Client()` follows the
environment.)"""
    ),
    new_code_cell(
        """real = sk.Client.from_env()  # None unless STREAMKIT_BASE_URL or OPENAI_BASE_URL is set
if real is None:
    print("No endpoint configured: staying on the bundled server.")
else:
    real_result = await real.chat("Explain server-sent events in two sentences.")
    await real.aclose()"""
    ),
    new_markdown_cell(
        """## What to try next

- Change `model="sim-large"` to `"sim-small"` and compare the arrival plot.
- Make a stream slower or faster per request: `extra_body={"streamkit": {"tokens_per_second": 5}}`.
- From a terminal: `streamkit chat "Explain caching"` streams to stdout; `streamkit serve` runs this
  server for curl, the openai SDK or any other client."""
    ),
]

write_notebook("00_quickstart.ipynb", cells, real_provider=False)
