"""Reasoning as a first-class part of a stream: every transport, both field names, resume and
restart across drops, a foreign server's dialect, and the non-streamed response.

Real loopback servers throughout: the bundled simulator's ``sim-reasoner`` (reasoning first,
then the answer) and a small server of our own that speaks ``delta.reasoning`` as newer vLLM,
Ollama and OpenRouter do, with none of the simulator's habits (no ids, no usage).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from _events import FAST, TRANSPORTS, EventLog

import streamkit as sk
from streamkit.events import Event, ReasoningDelta, StreamRetry, TokenDelta
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

SIM = {"ttft": 0.0, "tokens_per_second": 2000, "length": 20, "jitter": 0.0}
PROMPT = "Think first, then explain caching"


def body(*faults: dict[str, Any], **sim: Any) -> dict[str, Any]:
    return {"streamkit": {**SIM, **sim, "faults": list(faults)}}


async def run(
    server: RunningServer, transport: Any, *faults: dict[str, Any], **options: Any
) -> tuple[sk.StreamResult, list[Event]]:
    log = EventLog()
    events = log.events
    sim = options.pop("sim", {})
    observers = [log, *options.pop("observers", [])]
    options.setdefault("retry", FAST)
    async with sk.Client(
        server.base_url, model="sim-reasoner", transport=transport, **options
    ) as client:
        result = await client.chat(
            PROMPT,
            view=None,
            seed=7,
            raise_on_error=False,
            observers=observers,
            extra_body=body(*faults, **sim),
        )
    return result, events


def pieces(events: list[Event]) -> list[tuple[str, int, str]]:
    out = []
    for e in events:
        if isinstance(e, ReasoningDelta):
            out.append(("reasoning", e.index, e.text))
        elif isinstance(e, TokenDelta):
            out.append(("content", e.index, e.text))
    return out


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_every_transport_gives_the_same_reasoning_and_answer(
    server: RunningServer, field: str
) -> None:
    results = {}
    for transport in TRANSPORTS:
        result, events = await run(server, transport, sim={"reasoning_field": field})
        assert result.ok, result.summary()
        got = pieces(events)
        # Reasoning first, then the answer, on one shared index: 0, 1, 2, … with no gap.
        assert [i for _, i, _ in got] == list(range(len(got)))
        kinds = [k for k, _, _ in got]
        assert kinds == sorted(kinds, key=lambda k: k != "reasoning")
        results[transport] = (result.reasoning, result.text, tuple(got))
        assert result.reasoning and result.text
        assert result.reasoning_chunks == kinds.count("reasoning")
        assert result.reasoning_tokens == result.reasoning_chunks  # usage says so too
        assert result.answer_tokens == result.output_tokens - result.reasoning_tokens == 20
        assert result.ttft is not None and result.ttft_answer is not None
        assert result.ttft_answer > result.ttft
    assert len(set(results.values())) == 1, "transports disagree"


async def test_both_field_names_carry_the_same_reasoning(server: RunningServer) -> None:
    a, _ = await run(server, "generic-sse", sim={"reasoning_field": "reasoning_content"})
    b, _ = await run(server, "generic-sse", sim={"reasoning_field": "reasoning"})
    assert a.reasoning == b.reasoning and a.text == b.text


async def test_the_server_sends_the_field_asked_for(server: RunningServer) -> None:
    async with httpx2.AsyncClient() as http:
        for field in ("reasoning_content", "reasoning"):
            request = {
                "model": "sim-reasoner",
                "messages": [{"role": "user", "content": PROMPT}],
                "stream": True,
                "seed": 7,
                **body(reasoning_field=field),
            }
            response = await http.post(server.base_url + "/chat/completions", json=request)
            deltas = [
                json.loads(line[6:])["choices"][0]["delta"]
                for line in response.text.splitlines()
                if line.startswith("data: {") and '"choices":[{' in line
            ]
            other = "reasoning" if field == "reasoning_content" else "reasoning_content"
            assert any(field in d for d in deltas) and not any(other in d for d in deltas)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("at", [5, 40], ids=["mid_reasoning", "mid_answer"])
async def test_a_drop_resumes_to_identical_reasoning_and_text(
    server: RunningServer, transport: str, at: int
) -> None:
    expected, ref_events = await run(server, transport)
    n = len(pieces(ref_events))
    at = min(at, n - 3)
    result, events = await run(
        server, transport, {"kind": "drop", "at": at, "mid_frame": True, "attempts": 1}
    )
    assert result.ok
    assert (result.reasoning, result.text) == (expected.reasoning, expected.text)
    assert pieces(events) == pieces(ref_events)  # nothing twice, nothing lost, same order
    [retry] = [e for e in events if isinstance(e, StreamRetry)]
    assert retry.resume_after == at - 1 and retry.discarded == 0


async def test_a_restart_discards_the_reasoning_visibly(server: RunningServer) -> None:
    expected, _ = await run(server, "generic-sse")
    result, events = await run(
        server,
        "generic-sse",
        {"kind": "drop", "at": 6, "attempts": 1},
        resume=False,
        on_interrupt="restart",
    )
    [retry] = [e for e in events if isinstance(e, StreamRetry)]
    assert retry.discarded == 6 and retry.resume_after is None
    assert result.ok and result.discarded_tokens == 6
    assert (result.reasoning, result.text) == (expected.reasoning, expected.text)


async def test_non_streamed_reply_has_the_reasoning(server: RunningServer) -> None:
    streamed, _ = await run(server, "generic-sse")
    async with httpx2.AsyncClient() as http:
        request = {
            "model": "sim-reasoner",
            "messages": [{"role": "user", "content": PROMPT}],
            "seed": 7,
            **body(),
        }
        response = await http.post(server.base_url + "/chat/completions", json=request)
    data = response.json()
    message = data["choices"][0]["message"]
    assert message["reasoning_content"] == streamed.reasoning
    assert message["content"] == streamed.text
    details = data["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == streamed.reasoning_chunks


# -- a foreign server: delta.reasoning, no ids, no usage, reasoning and content in one chunk ---

THOUGHT = ["The user", " greets me", "; answer", " briefly."]
ANSWER = ["Hi", " there", "!"]


def _chunks() -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "x",
            "object": "chat.completion.chunk",
            "model": "thinker",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    for piece in THOUGHT[:-1]:
        yield chunk({"reasoning": piece, "content": None})
    # One chunk carrying both: the reasoning's last piece and the answer's first.
    yield chunk({"reasoning": THOUGHT[-1], "content": ANSWER[0]})
    for piece in ANSWER[1:]:
        yield chunk({"content": piece})
    yield chunk({}, "stop")


@pytest.fixture(scope="module")
def thinker() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for c in _chunks():
                self.wfile.write(b"data:" + json.dumps(c).encode() + b"\r\n\r\n")
            self.wfile.write(b"data: [DONE]\r\n\r\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.mark.parametrize("transport", ["sse", "generic-sse", "fast-sse"])
async def test_a_foreign_server_sending_delta_reasoning(thinker: str, transport: Any) -> None:
    log = EventLog()
    events = log.events
    async with sk.Client(thinker, model="thinker", transport=transport, retry=None) as client:
        result = await client.chat("hello", view=None, observers=[log])
    assert result.ok
    assert result.reasoning == "".join(THOUGHT) and result.text == "".join(ANSWER)
    got = pieces(events)
    assert got[3:5] == [("reasoning", 3, THOUGHT[-1]), ("content", 4, ANSWER[0])]
    assert [i for _, i, _ in got] == list(range(len(THOUGHT) + len(ANSWER)))
    # No usage: every piece counted, reasoning apart from the answer.
    assert result.output_tokens == 7 and result.reasoning_tokens == 4
    assert result.answer_tokens == 3


# -- the CLI: the answer on stdout, reasoning and tool calls on stderr, both in the metrics ----


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "chat", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_answer_on_stdout_reasoning_on_stderr(server: RunningServer, tmp_path: Path) -> None:
    metrics = tmp_path / "m.json"
    out = _cli(
        PROMPT,
        "--base-url",
        server.base_url,
        "--model",
        "sim-reasoner",
        "--seed",
        "7",
        "--metrics-json",
        str(metrics),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(metrics.read_text())
    assert data["reasoning"] and data["reasoning_tokens"] > 0
    assert out.stdout.strip() and data["reasoning"] not in out.stdout  # stdout is the answer only
    assert data["reasoning"] in out.stderr  # not a terminal: no dimming codes around it
    assert 0 < data["ttft"] < data["ttft_answer"]


def test_cli_tools_and_tool_choice(server: RunningServer, tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(
        json.dumps(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ]
        )
    )
    metrics = tmp_path / "m.json"
    out = _cli(
        "Weather in Paris?",
        "--base-url",
        server.base_url,
        "--tools",
        str(tools),
        "--tool-choice",
        "get_weather",
        "--metrics-json",
        str(metrics),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""  # no answer text: the reply is a call
    data = json.loads(metrics.read_text())
    [call] = data["tool_calls"]
    assert call["name"] == "get_weather" and set(call["parsed"]) == {"city"}
    assert f"[tool call] get_weather({call['arguments']})" in out.stderr
    assert data["finish_reason"] == "tool_calls"
    bad = _cli("x", "--base-url", server.base_url, "--tool-choice", "auto")
    assert bad.returncode == 2 and "--tools" in bad.stderr


async def test_the_metrics_time_the_first_piece_and_the_first_answer_chunk(
    server: RunningServer,
) -> None:
    collector = sk.MetricsCollector()
    recorder = collector.track("reasoner")
    result, _ = await run(server, "fast-sse", observers=[recorder])
    recorder.finish(result)
    [metrics] = collector.request_metrics()
    assert metrics.ttft == pytest.approx(result.ttft) and metrics.ttft_answer == pytest.approx(
        result.ttft_answer
    )
    assert metrics.ttft is not None and metrics.ttft_answer is not None
    assert metrics.ttft < metrics.ttft_answer
    assert metrics.reasoning_chunks == result.reasoning_chunks > 0
    assert metrics.chunks == result.pieces and len(metrics.itl) == result.pieces - 1


async def test_requests_df_has_both_first_token_times_and_piece_counts(
    server: RunningServer,
) -> None:
    collector = sk.MetricsCollector()
    async with sk.Client(server.base_url, model="sim-reasoner") as client:
        result = await client.chat(
            "Why is the sky blue?", view=None, seed=4, max_tokens=120, observers=[collector]
        )
    row = collector.requests_df().iloc[0]
    assert row["reasoning_chunks"] == result.reasoning_chunks > 0
    assert row["tool_call_chunks"] == 0
    assert 0 < row["ttft"] < row["ttft_answer"]  # the thinking comes first
    assert row["ttft_answer"] == pytest.approx(result.ttft_answer)
