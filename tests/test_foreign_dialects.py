"""Reasoning and tool calls from a server we did not write, through the command line.

The server (:mod:`_foreign`) streams the way DeepSeek / vLLM / llama.cpp do: ``reasoning_content``
pieces, then the answer, or a tool call whose id and name come first and whose JSON arguments come
in pieces; CRLF framing, no SSE ids, no usage, HTTP/1.0 with a close-delimited body.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _foreign import foreign_server
from test_conventions import cli

THINKING = ["The user", " asks about", " the sky."]
ANSWER = ["Rayleigh", " scattering."]
CALL = [
    {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    },
    {"index": 0, "function": {"arguments": '{"city": '}},
    {"index": 0, "function": {"arguments": '"Paris"}'}},
]


@pytest.mark.parametrize("transport", ["sse", "generic-sse", "fast-sse"])
def test_reasoning_goes_to_stderr_and_the_answer_to_stdout(transport: str, tmp_path: Path) -> None:
    deltas = [{"reasoning_content": t} for t in THINKING] + [{"content": t} for t in ANSWER]
    metrics = tmp_path / "m.json"
    with foreign_server(deltas=deltas) as foreign:
        out = cli(
            "chat",
            "why?",
            "--base-url",
            foreign.base_url,
            "--transport",
            transport,
            "--metrics-json",
            str(metrics),
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "".join(ANSWER) + "\n"
    assert "".join(THINKING) in out.stderr
    report = json.loads(metrics.read_text())
    assert report["reasoning"] == "".join(THINKING)
    # one read may carry both, so the answer can share the first piece's arrival time
    assert report["ttft_answer"] is not None and report["ttft"] <= report["ttft_answer"]


@pytest.mark.parametrize("transport", ["sse", "generic-sse", "fast-sse"])
def test_a_tool_call_is_assembled_and_reported(transport: str, tmp_path: Path) -> None:
    deltas = [{"tool_calls": [piece]} for piece in CALL]
    metrics = tmp_path / "m.json"
    with foreign_server(deltas=deltas, finish="tool_calls") as foreign:
        out = cli(
            "chat",
            "weather?",
            "--base-url",
            foreign.base_url,
            "--transport",
            transport,
            "--metrics-json",
            str(metrics),
        )
    assert out.returncode == 0, out.stderr
    assert '[tool call] get_weather({"city": "Paris"})' in out.stderr
    report = json.loads(metrics.read_text())
    assert report["finish_reason"] == "tool_calls"
    (call,) = report["tool_calls"]
    assert call["id"] == "call_1" and call["name"] == "get_weather"
    assert call["parsed"] == {"city": "Paris"}
