"""Tool calls as a first-class part of a stream: every transport, tool_choice, resume across a
drop mid-arguments, the non-streamed response, and the typed error for arguments that are not
JSON. Real loopback servers (the bundled simulator); result folding is pure and tested exactly.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from _events import FAST, TRANSPORTS, EventLog

import streamkit as sk
from streamkit.events import Event, StreamRetry, ToolCallDelta
from streamkit.result import ToolCall, ToolCallArgumentsError
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

SIM = {"ttft": 0.0, "tokens_per_second": 2000, "jitter": 0.0}
PROMPT = "What is the weather in Paris?"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {}}}},
}


async def run(
    server: RunningServer,
    transport: Any,
    *faults: dict[str, Any],
    model: str = "sim-small",
    **request: Any,
) -> tuple[sk.StreamResult, list[Event]]:
    log = EventLog()
    events = log.events
    request.setdefault("tools", [WEATHER, SEARCH])
    async with sk.Client(server.base_url, model=model, transport=transport, retry=FAST) as c:
        result = await c.chat(
            PROMPT,
            view=None,
            seed=11,
            raise_on_error=False,
            observers=[log],
            extra_body={"streamkit": {**SIM, "faults": list(faults)}},
            **request,
        )
    return result, events


def calls(result: sk.StreamResult) -> list[dict[str, object]]:
    return [call.to_dict() for call in result.tool_calls]


async def test_every_transport_gives_the_same_tool_calls(server: RunningServer) -> None:
    seen = []
    for transport in TRANSPORTS:
        result, events = await run(server, transport)
        assert result.ok and result.finish_reason == "tool_calls", result.summary()
        assert result.text == "" and result.tool_calls
        got = [e for e in events if isinstance(e, ToolCallDelta)]
        assert [e.index for e in got] == list(range(len(got)))
        first = {e.call_index: e for e in reversed(got)}
        assert all(e.id and e.name for e in first.values())  # id and name in the first piece
        for call in result.tool_calls:
            assert isinstance(call.parsed(), dict)
            if call.name == "get_weather":
                args = call.parsed()
                assert set(args) == {"city", "unit", "days"}
                assert args["unit"] in ("celsius", "fahrenheit") and isinstance(args["days"], int)
        seen.append(json.dumps(calls(result)))
    assert len(set(seen)) == 1, "transports disagree"


async def test_a_reasoner_reasons_then_calls(server: RunningServer) -> None:
    result, _ = await run(server, "fast-sse", model="sim-reasoner", tools=[WEATHER])
    assert result.ok and result.reasoning and [c.name for c in result.tool_calls] == ["get_weather"]


async def test_tool_choice(server: RunningServer) -> None:
    none, _ = await run(server, "generic-sse", tool_choice="none")
    assert none.ok and none.text and not none.tool_calls and none.finish_reason != "tool_calls"
    named, _ = await run(
        server,
        "generic-sse",
        tool_choice={"type": "function", "function": {"name": "search"}},
    )
    assert [c.name for c in named.tool_calls] == ["search"]
    required, _ = await run(server, "generic-sse", tool_choice="required", tools=[WEATHER])
    assert [c.name for c in required.tool_calls] == ["get_weather"]
    unknown, _ = await run(
        server, "generic-sse", tool_choice={"type": "function", "function": {"name": "nope"}}
    )
    assert isinstance(unknown.error, sk.BadRequestError) and "nope" in unknown.error.message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_drop_mid_arguments_resumes_to_identical_calls(
    server: RunningServer, transport: str
) -> None:
    expected, ref_events = await run(server, transport)
    reference = [e for e in ref_events if isinstance(e, ToolCallDelta)]
    at = len(reference) // 2  # inside the arguments of a call
    assert not reference[at].id
    result, events = await run(
        server, transport, {"kind": "drop", "at": at, "mid_frame": True, "attempts": 1}
    )
    assert result.ok and calls(result) == calls(expected)
    got = [e for e in events if isinstance(e, ToolCallDelta)]
    strip = [(e.index, e.call_index, e.id, e.name, e.arguments_piece) for e in got]
    assert strip == [(e.index, e.call_index, e.id, e.name, e.arguments_piece) for e in reference]
    [retry] = [e for e in events if isinstance(e, StreamRetry)]
    assert retry.resume_after == at - 1


async def test_non_streamed_reply_has_the_tool_calls(server: RunningServer) -> None:
    streamed, _ = await run(server, "generic-sse")
    async with httpx2.AsyncClient() as http:
        request = {
            "model": "sim-small",
            "messages": [{"role": "user", "content": PROMPT}],
            "seed": 11,
            "tools": [WEATHER, SEARCH],
            "streamkit": SIM,
        }
        response = await http.post(server.base_url + "/chat/completions", json=request)
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in choice["message"]["tool_calls"]
    ] == [(c.id, c.name, c.arguments) for c in streamed.tool_calls]


def test_invalid_arguments_raise_a_typed_error_naming_the_call() -> None:
    result = sk.StreamResult()
    for i, (piece, call_id, name) in enumerate(
        [("", "call_1", "get_weather"), ('{"city": "Par', None, None), ("is", None, None)]
    ):
        result.apply(ToolCallDelta(0, call_id, name, piece, i, float(i)))
    [call] = result.tool_calls
    assert call == ToolCall(0, "call_1", "get_weather", '{"city": "Paris')
    with pytest.raises(ToolCallArgumentsError) as caught:
        call.parsed()
    assert isinstance(caught.value, sk.ProtocolError)
    assert "call_1" in str(caught.value) and "get_weather" in str(caught.value)
    assert caught.value.call_id == "call_1" and caught.value.name == "get_weather"
    entry = result.to_dict()["tool_calls"]
    assert isinstance(entry, list) and "parsed" not in entry[0] and "call_1" in entry[0]["error"]


def test_several_calls_fold_by_index() -> None:
    result = sk.StreamResult()
    deltas = [
        ToolCallDelta(1, "b", "search", "", 0, 0.0),
        ToolCallDelta(0, "a", "get_weather", '{"city"', 1, 0.1),
        ToolCallDelta(1, None, None, '{"q": 1}', 2, 0.2),
        ToolCallDelta(0, None, None, ': "Oslo"}', 3, 0.3),
    ]
    for delta in deltas:
        result.apply(delta)
    assert [(c.index, c.parsed()) for c in result.tool_calls] == [
        (0, {"city": "Oslo"}),
        (1, {"q": 1}),
    ]
    assert result.tool_call_chunks == 4 and result.ttft is None  # no send time known
