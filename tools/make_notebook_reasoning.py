"""Write notebooks/08_reasoning_and_tools.ipynb from the cells below (outputs empty, no widget
state)."""

from __future__ import annotations

from _nb import write_notebook  # tools/ is on sys.path when a generator runs
from nbformat.v4 import new_code_cell, new_markdown_cell

cells = [
    new_markdown_cell(
        """# Reasoning models, tool calls, and the Responses API

Newer models do more than stream an answer: a **reasoning model** thinks first (and streams its
thinking), and a model given **tools** may answer with a function call instead of text. Both change
what "time to first token" means and what a client has to do with the stream. In this notebook you
will:

1. watch several reasoning replies **think, then answer**, on a live chart, and see why a reasoning
   model has two first-token times,
2. run a **tool-call round trip**: the model asks for a function, you run it, you send the result
   back, and the model answers,
3. send the **same chat over Chat Completions and the Responses API** side by side and check that
   they give the same reply, and what differs on the wire.

Everything runs offline against the bundled server: `sim-reasoner` streams its thinking before its
answer, and any model calls a tool when a request carries `tools`."""
    ),
    new_code_cell(
        """import asyncio
import json
import time

import ipywidgets
import pandas as pd
import plotly.graph_objects as go
from IPython.display import display

import streamkit as sk

client = sk.Client.bundled()  # the simulator, offline and keyless, whatever the environment says"""
    ),
    new_markdown_cell(
        """## 1. Thinking, then answering

A reasoning model streams its thinking as `delta.reasoning_content` (DeepSeek, llama.cpp, older
vLLM) or `delta.reasoning` (newer vLLM, Ollama, OpenRouter) before the first word of its answer.

First, the chart that six reasoning requests will fill later in this section, empty for now. It is
drawn in a cell of its own, before anything streams into it: the first draw of a figure can keep a
busy browser page frozen for a moment, long enough to miss a short stream."""
    ),
    new_code_cell(
        """fig = go.FigureWidget(
    data=[
        go.Bar(name="thinking", orientation="h", x=[], y=[], marker_color="#b0b7c3"),
        go.Bar(name="answering", orientation="h", x=[], y=[], marker_color="#2a6fdb"),
    ],
    layout={
        "title": "Thinking, then answering (sim-reasoner, six requests)",
        "barmode": "overlay",
        "xaxis": {"title": "seconds since the first request was sent", "rangemode": "tozero"},
        "yaxis": {"autorange": "reversed"},
        "height": 340,
        "margin": {"t": 50, "b": 40},
    },
)
fig""",
        metadata={"tags": ["nbval-ignore-output"]},
    ),
    new_markdown_cell(
        """Now one reasoning reply. streamkit reads both field names as `ReasoningDelta` events and
keeps them apart from the answer: the view shows the answer, so it stays empty for a second or two
while the model thinks, and `result.reasoning` holds the thinking. (The pace is slowed to 30
tokens/s here, so you can watch.)"""
    ),
    new_code_cell(
        """first = await client.chat(
    "Why does a reasoning model start its answer later?",
    model="sim-reasoner",
    seed=9,
    extra_body={"streamkit": {"tokens_per_second": 30}},
)
assert first.ok and first.reasoning and first.text
assert first.ttft < first.ttft_answer  # the thinking came first"""
    ),
    new_markdown_cell(
        """So this reply has **two first-token times**. `ttft` counts the first piece of any kind, as
`vllm bench serve` does: the server was working and the stream was alive. `ttft_answer` counts the
first piece of the *answer*: what a reader who does not see the thinking waits for. For a model
that does not reason they are the same number; for this one the gap is the thinking."""
    ),
    new_code_cell(
        """print(f"thinking: {first.reasoning[:160]}…")
print(f"answer:   {first.text[:160]}…")
print(
    f"ttft {first.ttft * 1000:.0f} ms · ttft_answer {first.ttft_answer * 1000:.0f} ms · "
    f"{first.reasoning_tokens} reasoning + {first.answer_tokens} answer tokens"
)"""
    ),
    new_markdown_cell(
        """### Six replies at once, on the chart

Now six reasoning requests, sent 0.4 s apart at the model's own pace. Each gets a bar that grows
while it streams: **thinking** from the send to its first answer token, then **answering** to its
last token. An observer (anything with `on_event` and `finish`, passed as `observers=[...]`) sees
every event of its request and redraws the chart above at most 8 times a second, in one
`batch_update` per frame: every token reaches the observer, only the screen is throttled."""
    ),
    new_code_cell(
        """class PhaseChart:
    \"\"\"Every tracked request's thinking and answering, drawn at most `fps` times a second.\"\"\"

    def __init__(self, fig: go.FigureWidget, fps: float = 8.0) -> None:
        self.fig = fig
        self.every = 1 / fps
        self.requests: list[Phases] = []
        self.drawn_at = 0.0
        self.frames = 0

    def track(self, label: str) -> "Phases":
        phases = Phases(self, label)
        self.requests.append(phases)
        return phases

    def maybe_draw(self) -> None:
        if time.perf_counter() - self.drawn_at >= self.every:
            self.draw()

    def draw(self) -> None:
        now = self.drawn_at = time.perf_counter()
        shown = [p for p in self.requests if p.sent is not None]
        if not shown:
            return
        t0 = min(p.sent for p in shown)
        # A phase still running ends "now": its bar grows frame by frame.
        answered = [p.answer or p.end or now for p in shown]
        with self.fig.batch_update():
            thinking, answering = self.fig.data
            thinking.y = answering.y = [p.label for p in shown]
            thinking.base = [p.sent - t0 for p in shown]
            thinking.x = [a - p.sent for p, a in zip(shown, answered, strict=True)]
            answering.base = [a - t0 for a in answered]
            answering.x = [(p.end or now) - a if p.answer else 0 for p, a in zip(shown, answered, strict=True)]
        self.frames += 1


class Phases:
    \"\"\"An observer of one request: when it was sent, answered first, and ended.\"\"\"

    def __init__(self, chart: PhaseChart, label: str) -> None:
        self.chart, self.label = chart, label
        self.sent = self.answer = self.end = None
        self.pieces = 0

    def on_event(self, event: sk.Event) -> None:
        if isinstance(event, sk.StreamStart):
            self.sent = event.sent_at
        elif isinstance(event, sk.TokenDelta | sk.ReasoningDelta):
            self.pieces += 1
            if isinstance(event, sk.TokenDelta) and self.answer is None:
                self.answer = event.time
        elif isinstance(event, sk.StreamEnd | sk.StreamError):
            self.end = event.time
        self.chart.maybe_draw()

    def finish(self, result: sk.StreamResult) -> None:
        self.chart.draw()  # the last frame of this request, whatever the throttle says"""
    ),
    new_code_cell(
        """chart = PhaseChart(fig)


async def reasoner(i: int) -> sk.StreamResult:
    await asyncio.sleep(0.4 * i)  # staggered, so the bars start one after another
    return await client.chat(
        f"Question {i}: why do streams stall?",
        model="sim-reasoner",
        seed=i,
        view=None,  # the chart is the view
        observers=[chart.track(f"request {i}")],
    )


results = await asyncio.gather(*(reasoner(i) for i in range(6)))
assert all(r.ok and r.reasoning and r.text for r in results)
pieces = sum(p.pieces for p in chart.requests)
assert chart.frames < pieces / 4, (chart.frames, pieces)  # frames are throttled, events are not
print(f"{pieces} pieces streamed, {chart.frames} frames drawn")"""
    ),
    new_markdown_cell(
        """The same requests as a table, in milliseconds. `ttft` is almost the same for every request
(the model starts thinking at once); `ttft_answer` is not, because each request thinks for as long
as it needs. A benchmark that reports only one of the two tells half the story: `ttft` says how
responsive the server is, `ttft_answer` what a reader waits for. `reasoning_tokens` comes from
the usage's `completion_tokens_details`, and is part of `completion_tokens` (and of the bill)."""
    ),
    new_code_cell(
        """table = pd.DataFrame(
    [{"request": f"request {i}", **r.to_dict()} for i, r in enumerate(results)]
).set_index("request")
in_ms = table[["ttft", "ttft_answer", "e2e"]].mul(1000).round(0).add_suffix(" (ms)")
table = in_ms.join(table[["reasoning_tokens", "answer_tokens", "output_tokens"]])
assert (table["ttft (ms)"] < table["ttft_answer (ms)"]).all()
assert (table.reasoning_tokens + table.answer_tokens == table.output_tokens).all()
table"""
    ),
    new_markdown_cell(
        """Servers disagree on the field's name, not on its meaning. Ask the simulator for newer
vLLM's `delta.reasoning` instead: the same request gives the same thinking and the same answer."""
    ),
    new_code_cell(
        """fast = {"tokens_per_second": 2000}  # watching is not the point here
old_name = await client.chat(
    "Question 0: why do streams stall?",
    model="sim-reasoner",
    seed=0,
    view=None,
    extra_body={"streamkit": fast},
)
new_name = await client.chat(
    "Question 0: why do streams stall?",
    model="sim-reasoner",
    seed=0,
    view=None,
    extra_body={"streamkit": {**fast, "reasoning_field": "reasoning"}},
)
assert new_name.reasoning == old_name.reasoning == results[0].reasoning
assert new_name.text == old_name.text == results[0].text"""
    ),
    new_markdown_cell(
        """## 2. A tool-call round trip

A tool is a function the model may ask you to run. You describe it with a JSON schema in
`tools=[...]`; instead of text, the reply then streams a **tool call**: the function's name and
its JSON arguments, a few characters per chunk. Here is the tool: a weather lookup that works
offline (a real one would call a weather service)."""
    ),
    new_code_cell(
        """CITIES = {"Paris": 18.0, "Berlin": 14.5, "Lisbon": 22.0}  # °C, made up


def get_weather(city: str, unit: str = "celsius") -> dict[str, object]:
    \"\"\"The current temperature in `city` (from a small table: this notebook is offline).\"\"\"
    celsius = CITIES.get(city, 20.0)
    value = celsius if unit == "celsius" else celsius * 9 / 5 + 32
    return {"city": city, "temperature": round(value, 1), "unit": unit}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current temperature in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]"""
    ),
    new_markdown_cell(
        """streamkit's text views show the answer, and a tool call has none, so this cell watches the
call with a small observer of its own: each `ToolCallDelta` carries the call's index, its id and
name (in the first piece) and the next piece of the arguments, and the box shows them as they
grow (slowed to 8 pieces a second, to watch). `result.tool_calls` holds the calls, joined."""
    ),
    new_code_cell(
        """class CallBox:
    \"\"\"Shows a reply's tool calls as they stream: `name(arguments so far)`.\"\"\"

    def __init__(self) -> None:
        self.widget = ipywidgets.HTML("<pre>(waiting for a tool call)</pre>")
        self.calls: dict[int, list[str]] = {}

    def on_event(self, event: sk.Event) -> None:
        if isinstance(event, sk.ToolCallDelta):
            call = self.calls.setdefault(event.call_index, [event.name or "?", ""])
            call[1] += event.arguments_piece
            lines = [f"{name}({arguments}" for name, arguments in self.calls.values()]
            self.widget.value = "<pre>" + "\\n".join(lines) + "</pre>"

    def finish(self, result: sk.StreamResult) -> None:
        lines = [f"{c.name}({c.arguments})  → {result.finish_reason}" for c in result.tool_calls]
        self.widget.value = "<pre>" + "\\n".join(lines) + "</pre>"


question = "What is the weather in Berlin right now?"
box = CallBox()
display(box.widget)
asked = await client.chat(
    question,
    model="sim-small",
    seed=1,
    tools=TOOLS,
    view=None,  # the box is the view
    observers=[box],
    extra_body={"streamkit": {"tokens_per_second": 8}},
)
assert asked.ok and asked.finish_reason == "tool_calls" and asked.text == ""
assert len(asked.tool_calls) == 1 and asked.tool_calls[0].name == "get_weather\""""
    ),
    new_markdown_cell(
        """The model asked for `get_weather` with these arguments. `call.parsed()` decodes them (a
typed `ToolCallArgumentsError` names the call if the JSON is broken); run the function on them.
(The simulator builds arguments from the function's schema and a seeded word list, not from the
question: this seed happens to pick the right city.)"""
    ),
    new_code_cell(
        """# NBVAL_CHECK_OUTPUT
call = asked.tool_calls[0]
arguments = call.parsed()
observation = get_weather(**arguments)
print(call.name, arguments)
print(observation)"""
    ),
    new_markdown_cell(
        """Now send the conversation back: the question, the assistant's message carrying its
`tool_calls` (with no content), and a `tool` message with the result, tied to the call by its id.
The model answers in text.

One difference from a real model: the simulator calls a tool whenever `tools` allows it, so this
turn says `tool_choice="none"` (a real model decides by itself that it has what it needs). And the
simulator's answer does not read the weather; a real model's would."""
    ),
    new_code_cell(
        """messages = [
    {"role": "user", "content": question},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
        ],
    },
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(observation)},
]
answer = await client.chat(
    messages,
    model="sim-small",
    seed=1,
    tools=TOOLS,
    tool_choice="none",
    max_tokens=100,
    extra_body={"streamkit": {"tokens_per_second": 40}},
)
assert answer.ok and answer.finish_reason in ("stop", "length")
assert answer.text and not answer.tool_calls
print(f"first turn: finish {asked.finish_reason} · second turn: finish {answer.finish_reason}")"""
    ),
    new_markdown_cell(
        """## 3. Chat Completions and the Responses API, side by side

OpenAI's newer **Responses API** (`POST /v1/responses`) carries the same conversation in a
different shape: `input` items instead of `messages`, typed events (`response.output_text.delta`,
`response.reasoning_summary_text.delta`, `response.completed`, …) instead of `choices[0].delta`.
`api="responses"` (on `chat`, or `sk.Client(..., api="responses")`) speaks it, and folds its events
into the same streamkit events, so the result, the views and the metrics do not change.

Here the same prompt and seed go over both at the same time (so both see the same machine load):
the upper view is Chat Completions, the lower one the Responses API."""
    ),
    new_code_cell(
        """same = {
    "model": "sim-reasoner",
    "seed": 6,
    "max_tokens": 200,
    "extra_body": {"streamkit": {"tokens_per_second": 40}},
}
prompt = "Explain how a client resumes an interrupted stream"
over_chat, over_responses = await asyncio.gather(
    client.chat(prompt, api="chat", **same),
    client.chat(prompt, api="responses", **same),
)
assert over_chat.ok and over_responses.ok
assert over_chat.text == over_responses.text and over_chat.reasoning == over_responses.reasoning"""
    ),
    new_code_cell(
        """# NBVAL_CHECK_OUTPUT
print("same answer:", over_chat.text == over_responses.text, f"({len(over_chat.text)} characters)")
print("same thinking:", over_chat.reasoning == over_responses.reasoning)
print("same usage:", over_chat.usage == over_responses.usage, over_chat.usage)"""
    ),
    new_markdown_cell(
        """Their timings, in milliseconds. The numbers are close, not equal: both ran at once on one
client, and each chunk went through a different parser."""
    ),
    new_code_cell(
        """side = pd.DataFrame(
    [{"api": api, **r.to_dict()} for api, r in [("chat", over_chat), ("responses", over_responses)]]
).set_index("api")
timings = side[["ttfb", "ttft", "ttft_answer", "tpot", "e2e"]].mul(1000).round(1)
timings.join(side[["prompt_tokens", "output_tokens", "reasoning_tokens", "finish_reason"]])"""
    ),
    new_markdown_cell(
        """**What differs on the wire:** Chat Completions sends untyped `data:` chunks and the bundled
server numbers them with SSE `id:` lines, so a client resumes with `Last-Event-ID`; the Responses
API sends typed events, each with its `event:` name and a `sequence_number`, and a client resumes
with `GET /v1/responses/{id}?stream=true&starting_after=N`. Here are the events of a three-token
reply, read with nothing but the standard library:"""
    ),
    new_code_cell(
        """# NBVAL_CHECK_OUTPUT
import urllib.request

body = {
    "model": "sim-small",
    "input": "hello",
    "stream": True,
    "seed": 1,
    "streamkit": {"length": 3, "tokens_per_second": 1000},
}
request = urllib.request.Request(
    f"{client.base_url}/responses",
    data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request) as response:
    for line in response:
        if line.startswith(b"data: "):
            event = json.loads(line[6:])
            print(f"{event['sequence_number']:>3}  {event['type']}")"""
    ),
    new_markdown_cell(
        """## What to try next

- Give the tool call two tools (say `get_weather` and `get_time`) and a seed that makes the
  simulator call both at once: `result.tool_calls` then holds two calls, each with its own index.
- Pass a `sk.MetricsCollector()` as an observer to the six reasoning requests and compare its
  TTFT with the table's `ttft_answer`.
- Point the client at a real reasoning model (a DeepSeek-R1 distill on vLLM or Ollama) and watch
  `result.reasoning` fill; with OpenAI, `api="responses"` streams its reasoning summaries."""
    ),
]

write_notebook("08_reasoning_and_tools.ipynb", cells)
