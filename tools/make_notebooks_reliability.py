"""Write the reliability notebooks (outputs empty, no widget state) from the cells below.

- notebooks/01_sse.ipynb: SSE on the wire (frames with ids), the SDK path, resume by Last-Event-ID
- notebooks/02_websocket.ipynb: one socket, several streams, cancel one; SSE and WS measured
- notebooks/03_retry.ipynb: every fault kind injected, what the user sees, the backoff plotted

Run ``python tools/make_notebooks_reliability.py`` after editing, then check them with
``python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/0[123]*``.
"""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

md = new_markdown_cell
code = new_code_cell

SSE = [
    md(
        """# Server-sent events on the wire: ids, the SDK path, and resume

A chat stream is a `text/event-stream`: frames of `field: value` lines ended by a blank line. In
this notebook you will:

1. read the **raw frames** the bundled server sends, and see the `id:` line on every content token,
2. decode them with streamkit's WHATWG decoder (and meet the "last event id in force" rule), and
   **plot when each frame arrived**,
3. **resume by hand**: ask for the rest of a stream after token 2 with `Last-Event-ID`,
4. watch the **openai SDK path** survive a dropped connection: one `StreamRetry`, then the same
   text a fault-free run gives, with no token twice and none missing,
5. do the same with streamkit's own SSE client over httpx2, and read any event stream with
   `EventSource`.

Everything runs offline against the bundled server."""
    ),
    code(
        """import json
import time

import httpx2
import pandas as pd
import plotly.graph_objects as go

import streamkit as sk
from streamkit._sse import SSEDecoder

server = sk.default_server()
URL = f"{server.base_url}/chat/completions"
BODY = {
    "model": "sim-small",
    "messages": [{"role": "user", "content": "Explain event ids"}],
    "stream": True,
    "seed": 7,
    # slow enough to see the frames arrive: a 0.3 s time to first token, then 20 tokens/s
    "streamkit": {"length": 5, "ttft": 0.3, "tokens_per_second": 20},
}
print(f"bundled server at {server.base_url}")"""
    ),
    md(
        """## 1. Raw frames

A plain HTTP POST, read as bytes, noting when each read arrived. Content frames start with
`id: N`, the token's 0-based index in the whole reply; the role frame, the finish frame and
`[DONE]` carry no id."""
    ),
    code(
        """reads = []  # (seconds since the request was sent, the bytes of one read from the socket)
async with httpx2.AsyncClient() as http:
    started = time.perf_counter()
    async with http.stream("POST", URL, json=BODY) as response:
        async for chunk in response.aiter_raw():
            reads.append((time.perf_counter() - started, chunk))
raw = b"".join(chunk for _, chunk in reads)

for frame in raw.decode().split("\\n\\n"):
    if frame:
        print(frame if len(frame) < 100 else frame[:100] + "…")
assert "id: 0\\ndata: " in raw.decode() and raw.endswith(b"data: [DONE]\\n\\n")"""
    ),
    md(
        """## 2. Decoded

`SSEDecoder` follows the WHATWG parsing rules (any line ending, bytes split anywhere). Note the
finish frame: it has no `id:` line, yet its id reads `4`. The spec keeps the *last event id in
force* until a new one arrives. That is why streamkit numbers a token only when a **new** id
comes with it."""
    ),
    code(
        """def content_of(event):
    if event.data == b"[DONE]":
        return None
    choices = json.loads(event.data).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or None


decoder = SSEDecoder()
events, arrived = [], []  # each event, and when the read that completed it arrived
for seconds, chunk in reads:  # fed read by read: a frame split across reads decodes once
    for event in decoder.feed(chunk):
        events.append(event)
        arrived.append(seconds)
decoded = pd.DataFrame(
    [
        {
            "arrived (ms)": round(seconds * 1000, 1),
            "id": e.id,
            "content": content_of(e),
            "data": e.data[:48].decode(),
        }
        for seconds, e in zip(arrived, events, strict=True)
    ]
)
first_run = [content_of(e) for e in events if content_of(e)]
assert [e.id for e in events] == [None, "0", "1", "2", "3", "4", "4", "4"]
decoded"""
    ),
    md(
        """The same frames on a time line. The role frame comes with the response headers, at once
(the *time to first byte*); the first content frame waits for the model's time to first token,
0.3 s here; then comes one frame per token at the decode speed, 20 tokens/s; the finish frame
and `[DONE]` follow the last token at once. A gap before the first content frame is the model
thinking; a gap later on is a stall (notebook 03 injects one)."""
    ),
    code(
        """def kind_of(event):
    if event.data == b"[DONE]":
        return "[DONE]"
    choices = json.loads(event.data).get("choices")
    if not choices:
        return "usage"  # a usage frame (sent when stream_options asks for it) has no choices
    if content_of(event):
        return "content"
    return "finish" if choices[0].get("finish_reason") else "role"


frames = pd.DataFrame(
    {
        "seconds": arrived,
        "frame": range(1, len(events) + 1),
        "kind": [kind_of(e) for e in events],
        "label": [repr(content_of(e)) if content_of(e) else kind_of(e) for e in events],
    }
)
assert list(frames["kind"]) == ["role", *["content"] * 5, "finish", "[DONE]"]
fig = go.Figure(
    go.Scatter(
        x=frames["seconds"],
        y=frames["frame"],
        mode="lines",
        line={"shape": "hv", "color": "lightgrey"},
        showlegend=False,
        hoverinfo="skip",
    )
)
for kind, group in frames.groupby("kind", sort=False):
    fig.add_trace(
        go.Scatter(
            x=group["seconds"],
            y=group["frame"],
            mode="markers+text",
            text=group["label"],
            textposition="middle right",
            marker={"size": 10},
            name=kind,
        )
    )
first_token = frames.loc[frames["kind"] == "content", "seconds"].min()
fig.add_vline(x=first_token, line_dash="dot", annotation_text="first token")
fig.update_layout(
    title="When each SSE frame arrived",
    xaxis_title="seconds since the request was sent",
    xaxis_range=[0, frames["seconds"].max() * 1.2],  # room for the last labels
    yaxis_title="frame",
    height=340,
    margin={"t": 50, "b": 40},
)
fig.show()"""
    ),
    md(
        """## 3. Resume by hand

Send the same request again with `Last-Event-ID: 2`. The server regenerates the same reply (same
prompt, same seed) and sends only what comes after token 2: a role frame, then ids 3 and 4."""
    ),
    code(
        """# NBVAL_CHECK_OUTPUT
resume_header = {"Last-Event-ID": "2"}
async with (
    httpx2.AsyncClient() as http,
    http.stream("POST", URL, json=BODY, headers=resume_header) as response,
):
    resumed = SSEDecoder().feed(b"".join([c async for c in response.aiter_raw()]))

resumed_tokens = [(e.id, content_of(e)) for e in resumed if content_of(e)]
print(resumed_tokens)
assert [i for i, _ in resumed_tokens] == ["3", "4"]
assert [t for _, t in resumed_tokens] == first_run[3:]"""
    ),
    md(
        """## 4. The SDK path survives a drop

`sk.Client` opens the request through the real `openai` SDK and parses the bytes itself. Every
stream goes through the resilience layer: here the server is told to cut the TCP connection after
8 tokens on the first attempt (`"attempts": 1`), and the client resumes with `Last-Event-ID: 7`.

The events show it all: one `StreamRetry` (why, which attempt, how long it waits, where it
resumes), a second `StreamStart`, and token indices running 0…19 exactly once."""
    ),
    code(
        """policy = sk.RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.5)
client = sk.Client(server.base_url, model="sim-small", retry=policy)
sim = {"length": 20, "ttft": 0.0, "tokens_per_second": 100}
drop = {"streamkit": {**sim, "faults": [{"kind": "drop", "at": 8, "attempts": 1}]}}

events = [e async for e in client.events("Explain event ids", seed=7, extra_body=drop)]
clean = await client.chat("Explain event ids", view=None, seed=7, extra_body={"streamkit": sim})


def row(event):
    kind = type(event).__name__
    if isinstance(event, sk.TokenDelta):
        return {"event": kind, "detail": f"#{event.index} {event.text!r}"}
    if isinstance(event, sk.StreamRetry):
        detail = (
            f"{event.error.kind} on attempt {event.attempt}; resume after token "
            f"{event.resume_after} in {event.delay:.2f} s"
        )
        return {"event": kind, "detail": detail}
    return {"event": kind, "detail": ""}


tokens = [e for e in events if isinstance(e, sk.TokenDelta)]
[retry] = [e for e in events if isinstance(e, sk.StreamRetry)]
assert [t.index for t in tokens] == list(range(20)) and retry.resume_after == 7
assert "".join(t.text for t in tokens) == clean.text
pd.DataFrame([row(e) for e in events]).iloc[[0, 1, 7, 8, 9, 10, 11, -1]]"""
    ),
    md(
        """A view says the same thing to a person. The console view notes the retry on a line of its own
(a status stream would keep it out of the transcript, as `streamkit chat` does with stderr), and
the text simply carries on."""
    ),
    code(
        """result = await client.chat("Explain event ids", view="console", seed=7, extra_body=drop)
assert result.ok and result.text == clean.text and result.retries == 1"""
    ),
    md(
        """## 5. Without the SDK: streamkit's own SSE client

`transport="generic-sse"` speaks the same protocol over httpx2 directly (no SDK objects at all).
An httpx2 event hook shows the header each attempt sent: nothing, then `Last-Event-ID: 7`."""
    ),
    code(
        """# NBVAL_CHECK_OUTPUT
sent = []


async def note_request(request):
    sent.append(request.headers.get("last-event-id"))


generic = sk.Client(server.base_url, model="sim-small", transport="generic-sse", retry=policy)
generic.http().event_hooks["request"].append(note_request)
again = await generic.chat("Explain event ids", view=None, seed=7, extra_body=drop)
print("Last-Event-ID per attempt:", sent)
print("same text as the fault-free run:", again.text == clean.text)
assert sent == [None, "7"] and again.text == clean.text"""
    ),
    md(
        """`sk.EventSource` reads *any* event-stream endpoint the way a browser's `EventSource` does: it
keeps the last id, and after a drop it reconnects with `Last-Event-ID` (waiting the server's
`retry:` if it sent one, or the policy's backoff). Here it reads the chat endpoint directly,
through the same drop."""
    ),
    code(
        """body = {**BODY, "streamkit": {**sim, "faults": [{"kind": "drop", "at": 8, "attempts": 1}]}}
body["streamkit"]["attempt_key"] = "event-source-demo"  # one logical request across reconnects
async with sk.EventSource(URL, method="POST", json_body=body, policy=policy) as source:
    ids = [event.id async for event in source if content_of(event)]
print(f"{source.reconnects} reconnect; ids {ids[0]}…{ids[-1]}")
assert source.reconnects == 1 and ids == [str(i) for i in range(20)]"""
    ),
    code("""await client.aclose()
await generic.aclose()"""),
    md(
        """## What to try next

- Change `"at": 8` to `"at": 0` (drop before any token) or add `"mid_frame": True` (half a frame
  arrives before the cut): the text is still identical.
- Drop on *every* attempt (remove `"attempts"`): after `max_attempts` the client raises
  `StreamInterrupted`, and `error.partial_text` holds the text it kept.
- `notebooks/02_websocket.ipynb` carries the same streams over one WebSocket;
  `notebooks/03_retry.ipynb` injects every other kind of fault."""
    ),
]

WS = [
    md(
        """# One WebSocket, many streams

The bundled server also speaks a small JSON protocol over WebSocket (`GET /v1/ws`, written down in
`docs/protocol.md`): one socket carries many concurrent streams, each tagged with its own id, and
one can be cancelled while the others go on. In this notebook you will:

1. open a socket and run **two streams on it** by hand, message by message,
2. let `sk.Client(transport="ws")` and a `StreamManager` run four streams on **one socket** and
   **cancel one**,
3. measure **SSE against WebSocket** side by side: bytes on the wire per token, time to first
   token, and client CPU per token."""
    ),
    code(
        """import asyncio
import statistics
import time

import httpx2
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import streamkit as sk
from streamkit.transports.ws import WSConnection, ws_url

server = sk.default_server()
print("WebSocket endpoint:", ws_url(server.base_url))"""
    ),
    md(
        """## 1. Two streams on one socket, by hand

`WSConnection` owns the socket and one reader task that hands each message to its stream's queue.
Both streams run at once on the server; reading them one after the other changes nothing, because
each has its own queue."""
    ),
    code(
        """def chat_body(prompt, length=4):
    return {
        "model": "sim-small",
        "messages": [{"role": "user", "content": prompt}],
        "seed": 1,
        "streamkit": {"length": length, "ttft": 0.0, "tokens_per_second": 100},
    }


log = []
async with WSConnection(ws_url(server.base_url)) as socket:
    first = await socket.open_stream(chat_body("first question"))
    second = await socket.open_stream(chat_body("second question"))
    for stream in (first, second):
        async for message in stream:
            log.append(
                {
                    "stream": stream.id,
                    "type": message["type"],
                    "seq": message.get("seq"),
                    "content": message.get("content"),
                }
            )
        stream.close()
messages = pd.DataFrame(log)
assert list(messages["type"].value_counts()[["start", "token", "end"]]) == [2, 8, 2]
messages"""
    ),
    md(
        """## 2. Four streams, one socket, cancel one

`sk.Client(transport="ws")` keeps one socket per event loop and puts all its streams on it. A
`StreamManager` caps how many run at once and can cancel one: the client sends `chat.cancel` for
that stream only, and the server stops generating it while the others carry on."""
    ),
    code(
        """stats = server.app.stats
sockets_before, cancelled_before = stats.ws_connections, stats.ws_streams_cancelled
ws_client = sk.Client(server.base_url, model="sim-small", transport="ws")
slow = {"streamkit": {"length": 60, "ttft": 0.0, "tokens_per_second": 60}}

async with sk.StreamManager(ws_client, max_concurrent=8) as manager:
    streams = [manager.start(f"Topic {i}", extra_body=slow) for i in range(4)]
    await asyncio.sleep(0.4)
    manager.cancel(streams[1])
    results = await manager.wait()

print(f"{stats.ws_connections - sockets_before} socket for {len(streams)} streams")
assert stats.ws_connections - sockets_before == 1
assert [r.status for r in results] == ["completed", "stopped", "completed", "completed"]
pd.DataFrame(
    [{"stream": s.name, "status": s.result.status, "tokens": s.result.chunks} for s in streams]
)"""
    ),
    code(
        """await asyncio.sleep(0.2)
print("streams the server cancelled:", stats.ws_streams_cancelled - cancelled_before)
assert stats.ws_streams_cancelled - cancelled_before == 1"""
    ),
    md(
        """## 3. SSE and WebSocket side by side

Three numbers per wire, all measured here, against the same server:

- **bytes per token**: payload bytes of a 200-token reply (the HTTP body, or the WebSocket
  messages) divided by 200. Each SSE chunk repeats the completion id, model and timestamps; a
  WebSocket token message carries only the stream id, `seq` and the text.
- **time to first token**: median of 20 short requests on a warm connection.
- **client CPU per token**: CPU time of this notebook's thread (the bundled server runs in
  another thread, so it is not counted) while 10 streams of 300 tokens each arrive at once.

`sse` opens the request through the openai SDK (its per-request work shows in the first-token
time); `generic-sse` is streamkit's own httpx2 client; `ws` is the WebSocket. Numbers vary from
machine to machine; the ordering is what to look at."""
    ),
    code(
        """N = 200
sim = {"length": N, "ttft": 0.0, "tokens_per_second": 5000}
body = {**chat_body("Measure me"), "streamkit": sim}

async with httpx2.AsyncClient() as http:
    request = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", f"{server.base_url}/chat/completions", json=request) as r:
        sse_bytes = sum([len(chunk) async for chunk in r.aiter_raw()])
async with WSConnection(ws_url(server.base_url)) as socket:
    stream = await socket.open_stream(body)
    ws_tokens = sum([m["type"] == "token" async for m in stream])
    ws_bytes = socket.bytes_received
assert ws_tokens == N
bytes_per_token = {"sse": sse_bytes / N, "generic-sse": sse_bytes / N, "ws": ws_bytes / N}


async def measure(transport):
    async with sk.Client(server.base_url, model="sim-small", transport=transport) as client:
        await client.chat("warm up", view=None, max_tokens=2)
        ttfts = []
        for i in range(20):
            short = {"streamkit": {"length": 3, "ttft": 0.0}}
            ttfts.append((await client.chat("ttft", view=None, seed=i, extra_body=short)).ttft)
        many = {"streamkit": {"length": 300, "ttft": 0.0, "tokens_per_second": 3000}}
        cpu = time.thread_time()
        results = await asyncio.gather(
            *(client.chat(f"p{i}", view=None, extra_body=many) for i in range(10))
        )
        cpu = time.thread_time() - cpu
    tokens = sum(r.chunks for r in results)
    assert tokens == 3000 and all(r.ok for r in results)
    return {
        "transport": transport,
        "bytes per token": round(bytes_per_token[transport], 1),
        "TTFT p50 (ms)": round(statistics.median(ttfts) * 1000, 2),
        "client CPU per token (µs)": round(cpu / tokens * 1e6, 1),
    }


table = pd.DataFrame([await measure(t) for t in ("sse", "generic-sse", "ws")])
table = table.set_index("transport")
assert table.loc["ws", "bytes per token"] < table.loc["sse", "bytes per token"]
table"""
    ),
    code(
        """fig = make_subplots(rows=1, cols=3, subplot_titles=list(table.columns))
for col, name in enumerate(table.columns, start=1):
    fig.add_trace(
        go.Bar(x=list(table.index), y=list(table[name]), name=name, showlegend=False),
        row=1,
        col=col,
    )
fig.update_layout(height=320, margin={"t": 60, "b": 40}, title="SSE and WebSocket, measured here")
fig.show()"""
    ),
    code("""await ws_client.aclose()"""),
    md(
        """## What to try next

- Drop the socket under running streams: add
  `"faults": [{"kind": "drop", "at": 20, "attempts": 1}]` to one stream's `streamkit` settings.
  The drop closes the whole socket, so *every* stream on it is interrupted, and each resumes on a
  new socket with `resume_after` (see `notebooks/03_retry.ipynb` for the other faults).
- Raise `max_concurrent` and the number of streams, and watch `server.app.stats.ws_active_streams`.
- Compare `time.thread_time()` per token at 100 concurrent streams instead of 10."""
    ),
]

RETRY = [
    md(
        """# When streams break: every fault, what you see, and the backoff

The bundled server can break a stream on request (`extra_body={"streamkit": {"faults": [...]}}`,
see `docs/protocol.md`): drop the connection, stall, answer 429 or 503, send a malformed chunk, or
end without `[DONE]`. In this notebook you will:

1. watch a dropped stream **resume** and see what the view says while it waits,
2. inject **every kind of fault** and read, in one table, what each one does to a stream,
3. see the path for servers **without event ids** (a real OpenAI endpoint): raise, or restart and
   mark the discarded tokens,
4. plot the **backoff schedule** (full jitter) and check it against the waits measured on a real
   run."""
    ),
    code(
        """# NBVAL_CHECK_OUTPUT
import random
import time

import pandas as pd
import plotly.graph_objects as go

import streamkit as sk

server = sk.default_server()
policy = sk.RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=1.0)
client = sk.Client(server.base_url, model="sim-small", retry=policy, idle_timeout=0.5)
PROMPT = "Explain why retries need jitter"
SIM = {"length": 30, "ttft": 0.0, "tokens_per_second": 150}


def settings(*faults):
    return {"streamkit": {**SIM, "faults": list(faults)}}


reference = await client.chat(PROMPT, view=None, seed=3, extra_body=settings())
print(reference.text)"""
    ),
    md(
        """## 1. A drop, as the user sees it

The connection is cut after 15 tokens. The view notes what happened and what comes next
(`connection lost after 15 tokens — resuming in … s (2/4)`), and the text carries on from token
15. In JupyterLab's widget view the same line appears in the header while the client waits."""
    ),
    code(
        """result = await client.chat(
    PROMPT, view="console", seed=3, extra_body=settings({"kind": "drop", "at": 15, "attempts": 1})
)
assert result.ok and result.text == reference.text and result.retries == 1"""
    ),
    md(
        """## 2. Every fault, one table

Each row is one request with one fault. `attempts: 1` limits a fault to the first attempt, so the
retry can succeed; without it the fault comes back on every attempt. What to read in the table:

- drops, stalls (caught by the 0.5 s idle timeout) and a missing `[DONE]` **resume** after the
  last token received and end with exactly the reference text;
- 429 and 503 are retried before any token; a 429's `Retry-After` is a floor on the wait;
- a malformed chunk **fails fast** with `ProtocolError` by default (a server that sends garbage
  is broken; retrying hides that), unless the policy opts in with `retry_on=(ProtocolError,)`;
- a fault on every attempt ends with the typed error after `max_attempts`, keeping the partial
  text."""
    ),
    code(
        """cases = {
    "drop at 10": [{"kind": "drop", "at": 10, "attempts": 1}],
    "drop mid-frame at 10": [{"kind": "drop", "at": 10, "mid_frame": True, "attempts": 1}],
    "stall 30 s at 12": [{"kind": "stall", "at": 12, "seconds": 30, "attempts": 1}],
    "stall 0.2 s at 12": [{"kind": "stall", "at": 12, "seconds": 0.2}],
    "429, Retry-After 1 s": [{"kind": "status", "code": 429, "retry_after": 1, "attempts": 1}],
    "503 twice": [{"kind": "status", "code": 503, "attempts": 2}],
    "no [DONE] after 20": [{"kind": "no_done", "at": 20, "attempts": 1}],
    "malformed at 8": [{"kind": "malformed", "at": 8, "attempts": 1}],
    "drop at 10, every attempt": [{"kind": "drop", "at": 10}],
}


async def run_case(name, faults, on=client):
    started = time.perf_counter()
    result = await on.chat(
        PROMPT, view=None, seed=3, raise_on_error=False, extra_body=settings(*faults)
    )
    return {
        "fault": name,
        "status": result.status,
        "retries": result.retries,
        "same text as reference": result.text == reference.text,
        "text kept is a prefix": reference.text.startswith(result.text),
        "error": result.error.kind if result.error else "",
        "seconds": round(time.perf_counter() - started, 2),
    }


rows = [await run_case(name, faults) for name, faults in cases.items()]
lenient = sk.Client(
    server.base_url,
    model="sim-small",
    retry=sk.RetryPolicy(
        max_attempts=4, base_delay=0.2, max_delay=1.0, retry_on=(sk.ProtocolError,)
    ),
)
rows.append(await run_case("malformed at 8, retry_on", cases["malformed at 8"], on=lenient))
await lenient.aclose()
table = pd.DataFrame(rows).set_index("fault")
expected_failures = {
    "malformed at 8": "ProtocolError",
    "drop at 10, every attempt": "StreamInterrupted",
}
for name, row in table.iterrows():
    if name in expected_failures:
        assert row["status"] == "failed" and row["error"] == expected_failures[name], name
    else:
        assert row["status"] == "completed" and row["same text as reference"], name
assert table["text kept is a prefix"].all()
assert table.loc["429, Retry-After 1 s", "seconds"] >= 1.0
table"""
    ),
    md(
        """## 3. Servers without event ids: raise, or restart

A real OpenAI endpoint does not number its chunks, so a stream cut after 15 tokens cannot be
resumed: asking again starts the reply over. `resume=False` makes the client ignore the bundled
server's ids to show both choices. By default (`on_interrupt="raise"`) the typed error is raised
with the partial text; nothing is discarded behind the user's back."""
    ),
    code(
        """no_ids = sk.Client(server.base_url, model="sim-small", retry=policy, resume=False)
try:
    await no_ids.chat(
        PROMPT, view=None, seed=3, extra_body=settings({"kind": "drop", "at": 15, "attempts": 1})
    )
except sk.StreamInterrupted as error:
    print(f"{error.kind}: {len(error.partial_text)} characters kept")
    assert reference.text.startswith(error.partial_text) and error.partial_text
await no_ids.aclose()"""
    ),
    md(
        """With `on_interrupt="restart"` the client starts over and says so: the view marks the 15 tokens
it throws away, and the result counts them (`discarded_tokens`) so metrics can too. The final
text is the reference, once."""
    ),
    code(
        """restarting = sk.Client(
    server.base_url, model="sim-small", retry=policy, resume=False, on_interrupt="restart"
)
result = await restarting.chat(
    PROMPT, view="console", seed=3, extra_body=settings({"kind": "drop", "at": 15, "attempts": 1})
)
print(result.summary())
assert result.text == reference.text and result.discarded_tokens == 15
await restarting.aclose()"""
    ),
    md(
        """## 4. The backoff schedule

The wait after failed attempt *n* is drawn uniformly from 0 to `min(max_delay, base_delay ·
2^(n-1))`: AWS's "full jitter". The cap doubles until `max_delay`; the jitter spreads clients
that failed together, so they do not all come back at once. A `Retry-After` from the server is a
floor on the wait. The policy is pure and takes its random source as an argument, so the
schedule below is reproducible."""
    ),
    code(
        """schedule_policy = sk.RetryPolicy(
    max_attempts=9, base_delay=0.5, max_delay=20.0, random=random.Random(7).random
)
attempts = list(range(1, 9))
samples = [(n, schedule_policy.delay(n)) for n in attempts for _ in range(200)]
fig = go.Figure()
fig.add_trace(
    go.Scatter(
        x=[n + random.uniform(-0.2, 0.2) for n, _ in samples],
        y=[d for _, d in samples],
        mode="markers",
        marker={"size": 3, "opacity": 0.4},
        name="drawn waits (200 per attempt)",
    )
)
fig.add_trace(
    go.Scatter(
        x=attempts,
        y=[schedule_policy.backoff(n) for n in attempts],
        mode="lines+markers",
        name="cap: min(max_delay, base · 2^(n-1))",
    )
)
fig.update_layout(
    title="Full-jitter backoff (base 0.5 s, max 20 s)",
    xaxis_title="failed attempt",
    yaxis_title="wait before the next attempt (s)",
    height=360,
)
assert all(0 <= d <= schedule_policy.backoff(n) for n, d in samples)
fig.show()"""
    ),
    md(
        """And on a real run: a drop on every attempt, five attempts. Each `StreamRetry` says how long the
client will wait; the next attempt's send time shows how long it did wait."""
    ),
    code(
        """spacing_policy = sk.RetryPolicy(max_attempts=5, base_delay=0.2, max_delay=1.0)
spaced = sk.Client(server.base_url, model="sim-small", retry=spacing_policy)
events = []
try:
    async for event in spaced.events(
        PROMPT, seed=3, extra_body=settings({"kind": "drop", "at": 5})
    ):
        events.append(event)
except sk.StreamInterrupted:
    pass
await spaced.aclose()

retries = [e for e in events if isinstance(e, sk.StreamRetry)]
starts = [e for e in events if isinstance(e, sk.StreamStart)][1:]
spacing = pd.DataFrame(
    {
        "after attempt": [r.attempt for r in retries],
        "planned wait (s)": [round(r.delay, 3) for r in retries],
        "measured wait (s)": [
            round(s.sent_at - r.time, 3) for r, s in zip(retries, starts, strict=True)
        ],
        "cap (s)": [spacing_policy.backoff(r.attempt) for r in retries],
    }
)
assert len(retries) == 4
assert (spacing["measured wait (s)"] >= spacing["planned wait (s)"] - 0.01).all()
fig = go.Figure(
    [
        go.Bar(x=spacing["after attempt"], y=spacing["planned wait (s)"], name="planned"),
        go.Bar(x=spacing["after attempt"], y=spacing["measured wait (s)"], name="measured"),
        go.Scatter(
            x=spacing["after attempt"], y=spacing["cap (s)"], name="cap", mode="lines+markers"
        ),
    ]
)
fig.update_layout(
    title="Waits between attempts on a real run",
    xaxis_title="failed attempt",
    yaxis_title="seconds",
    height=320,
)
fig.show()
spacing"""
    ),
    code("""await client.aclose()"""),
    md(
        """## What to try next

- Put two faults in one request, e.g. a 503 and then a drop: `settings({"kind": "status",
  "code": 503, "attempts": 1}, {"kind": "drop", "at": 5, "attempts": 2})`.
- Give the client a `first_token_timeout=0.5` and ask for `"ttft": 3`: the stream fails with
  `FirstTokenTimeout` (a slow start) instead of `IdleTimeout` (a stall).
- `streamkit chat "…" --max-retries 5 --transport ws` does all of this from a terminal, with the
  retry notes on stderr."""
    ),
]

NOTEBOOKS = {"01_sse.ipynb": SSE, "02_websocket.ipynb": WS, "03_retry.ipynb": RETRY}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        write_notebook(name, cells)


if __name__ == "__main__":
    main()
