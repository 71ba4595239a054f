"""OpenAI's Responses API as a transport dialect, on real loopback servers.

The bundled simulator's ``POST /v1/responses`` against its own ``/v1/chat/completions`` (the
same seed gives the same pieces, usage and finish on every SSE transport), a drop resumed with
``starting_after``, the non-streamed response object, and a small server of our own that speaks
the format differently (no ``event:`` lines, CRLF, unknown event types, ``response.failed`` and
``error`` events). Then the CLI: ``chat --api responses`` and ``bench --endpoint /v1/responses``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from _events import FAST
from test_cli import ENV, cli
from test_cli_bench import bench

import streamkit as sk
from streamkit.events import (
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamRetry,
    TokenDelta,
    ToolCallDelta,
)
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

TRANSPORTS = ["sse", "generic-sse", "fast-sse"]
SIM = {"ttft": 0.0, "tokens_per_second": 2000, "jitter": 0.0}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


async def stream(
    base_url: str,
    transport: str,
    api: str,
    *faults: dict[str, Any],
    model: str = "sim-small",
    **request: Any,
) -> list[Event]:
    """Every event of one request (the resume loop's output), errors included."""
    events: list[Event] = []
    async with sk.Client(
        base_url,
        model=model,
        transport=transport,
        api=api,
        retry=FAST,  # type: ignore[arg-type]
    ) as client:
        extra = {"streamkit": {**SIM, "faults": list(faults)}}
        async for event in client.events(
            request.pop("prompt", "Explain server-sent events"),
            seed=request.pop("seed", 5),
            extra_body=extra,
            **request,
        ):
            events.append(event)
    return events


def pieces(events: list[Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, TokenDelta):
            out.append(("text", e.index, e.text))
        elif isinstance(e, ReasoningDelta):
            out.append(("reasoning", e.index, e.text))
        elif isinstance(e, ToolCallDelta):
            out.append(("call", e.index, e.call_index, e.id, e.name, e.arguments_piece))
    return out


def end(events: list[Event]) -> StreamEnd:
    last = events[-1]
    assert isinstance(last, StreamEnd), last
    return last


@pytest.mark.parametrize(
    ("model", "request_fields"),
    [
        ("sim-small", {"max_tokens": 40}),
        ("sim-small", {}),
        ("sim-reasoner", {"max_tokens": 60}),
        ("sim-small", {"tools": [WEATHER], "tool_choice": "required"}),
        ("sim-reasoner", {"tools": [WEATHER]}),
    ],
    ids=["text-length", "text-stop", "reasoning", "tool-call", "reason-then-call"],
)
async def test_every_sse_transport_matches_chat_completions(
    server: RunningServer, model: str, request_fields: dict[str, Any]
) -> None:
    reference = await stream(server.base_url, "sse", "chat", model=model, **request_fields)
    want = pieces(reference)
    assert want and end(reference).usage is not None
    for transport in TRANSPORTS:
        got = await stream(server.base_url, transport, "responses", model=model, **request_fields)
        assert pieces(got) == want, transport
        assert end(got).finish_reason == end(reference).finish_reason, transport
        assert end(got).usage == end(reference).usage, transport
        ids = [e.event_id for e in got if isinstance(e, TokenDelta | ReasoningDelta)]
        assert all(i is not None and i.startswith("resp_") for i in ids), transport
    kinds = {p[0] for p in want}
    if "tools" in request_fields:
        assert "call" in kinds and end(reference).finish_reason == "tool_calls"
    if model == "sim-reasoner":
        assert "reasoning" in kinds and end(reference).usage.reasoning_tokens > 0  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mid_frame", [False, True])
async def test_a_drop_resumes_with_starting_after_to_identical_pieces(
    server: RunningServer, transport: str, mid_frame: bool
) -> None:
    whole = await stream(server.base_url, transport, "responses", model="sim-reasoner")
    drop = {"kind": "drop", "at": 23, "mid_frame": mid_frame, "attempts": 1}
    broken = await stream(server.base_url, transport, "responses", drop, model="sim-reasoner")
    retries = [e for e in broken if isinstance(e, StreamRetry)]
    assert len(retries) == 1 and retries[0].resume_after == 22  # resumed, not restarted
    assert pieces(broken) == pieces(whole)
    assert end(broken).usage == end(whole).usage


async def test_a_resume_is_a_get_after_the_last_sequence_number(server: RunningServer) -> None:
    """The wire itself: the events after N are the stored stream's events after N."""
    body = {"model": "sim-small", "input": "hi", "stream": True, "max_output_tokens": 8}
    body["streamkit"] = SIM
    async with httpx2.AsyncClient(base_url=server.base_url, timeout=10) as http:
        first = await http.post("/responses", json=body)
        frames = [json.loads(line[6:]) for line in first.text.splitlines() if line[:6] == "data: "]
        assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
        assert frames[0]["type"] == "response.created"
        assert frames[-1]["type"] == "response.incomplete"
        rid = frames[0]["response"]["id"]
        again = await http.get(f"/responses/{rid}", params={"stream": "true", "starting_after": 6})
        rest = [json.loads(line[6:]) for line in again.text.splitlines() if line[:6] == "data: "]
        assert rest == frames[7:]
        whole = (await http.get(f"/responses/{rid}")).json()
        assert whole["status"] == "incomplete" and whole["usage"]["output_tokens"] == 8
        missing = await http.get("/responses/resp_nope", params={"stream": "true"})
        assert missing.status_code == 404


async def test_the_non_streamed_response_object(server: RunningServer) -> None:
    chat = await stream(server.base_url, "sse", "chat", max_tokens=30)
    text = "".join(e.text for e in chat if isinstance(e, TokenDelta))
    body = {
        "model": "sim-small",
        "input": [{"role": "user", "content": "Explain server-sent events"}],
        "max_output_tokens": 30,
        "seed": 5,
        "streamkit": SIM,
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        reply = (await http.post(server.base_url + "/responses", json=body)).json()
    assert reply["object"] == "response" and reply["status"] == "incomplete"
    assert reply["output"][0]["content"][0]["text"] == text
    assert reply["usage"]["output_tokens"] == 30


async def test_responses_is_not_spoken_over_the_websocket(server: RunningServer) -> None:
    with pytest.raises(sk.UsageError, match="transport='ws'"):
        sk.Client(server.base_url, transport="ws", api="responses")
    with pytest.raises(sk.UsageError, match="api='graphql' is invalid"):
        sk.Client(server.base_url, api="graphql")  # type: ignore[arg-type]


async def test_api_can_be_chosen_per_call(server: RunningServer) -> None:
    ask = {"view": None, "seed": 1, "max_tokens": 10}
    async with sk.Client(server.base_url, model="sim-small", transport="generic-sse") as client:
        before = len(server.app.responses.stored)
        chat = await client.chat("Explain caching", **ask)
        assert len(server.app.responses.stored) == before  # the client's default: chat
        resp = await client.chat("Explain caching", **ask, api="responses")
        assert len(server.app.responses.stored) == before + 1  # this one went to /v1/responses
    assert resp.text == chat.text and resp.ok and resp.usage == chat.usage


# -- a server we did not write -----------------------------------------------------------------

WORDS = ["Hello", " from", " elsewhere", "."]


def _foreign_events(model: str) -> list[dict[str, Any]]:
    """What the foreign server sends: ``response.created``, an unknown event, the text, then the
    model's ending (completed with usage, failed, or an ``error`` event)."""
    rid = "resp_foreign1"
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": rid, "status": "in_progress"}},
        {"type": "response.future_thing", "detail": {"x": 1}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message"}},
    ]
    events += [
        {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": w}
        for w in WORDS
    ]
    events.append({"type": "keepalive"})
    if model == "fails":
        error = {"code": "server_error", "message": "the model fell over"}
        events.append({"type": "response.failed", "response": {"id": rid, "error": error}})
    elif model == "limited":
        events.append({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"})
    else:
        usage = {
            "input_tokens": 11,
            "output_tokens": 4,
            "input_tokens_details": {"cached_tokens": 3},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        events.append({"type": "response.completed", "response": {"id": rid, "usage": usage}})
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


@pytest.fixture(scope="module")
def foreign() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # a close-delimited body

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            assert self.path == "/v1/responses" and body["stream"] is True
            assert isinstance(body["input"], list) and "messages" not in body
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for event in _foreign_events(body["model"]):
                # No event: lines, CRLF line endings, data: without the space.
                self.wfile.write(b"data:" + json.dumps(event).encode() + b"\r\n\r\n")
                self.wfile.flush()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_foreign_server_in_its_own_style(foreign: str, transport: str) -> None:
    async with sk.Client(
        foreign,
        "k",
        "plain",
        transport=transport,
        api="responses",
        retry=None,  # type: ignore[arg-type]
    ) as client:
        result = await client.chat("hi", view=None)
    assert result.ok and result.text == "".join(WORDS) and result.finish_reason == "stop"
    assert result.usage == sk.Usage(11, 4, 15, cached_tokens=3)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_failed_and_error_events_are_typed_errors_with_the_partial_text(
    foreign: str, transport: str
) -> None:
    for model, cls, status in (("fails", sk.ServerError, 500), ("limited", sk.RateLimitError, 429)):
        async with sk.Client(
            foreign,
            "k",
            model,
            transport=transport,
            api="responses",
            retry=None,  # type: ignore[arg-type]
        ) as client:
            result = await client.chat("hi", view=None, raise_on_error=False)
        error = result.error
        assert isinstance(error, cls), (model, error)
        assert error.status_code == status and error.partial_text == "".join(WORDS)
        assert result.text == "".join(WORDS)


# -- the command line --------------------------------------------------------------------------


def test_cli_chat_api_responses_prints_the_same_answer() -> None:
    import subprocess

    args = ("Explain caching", "--max-tokens", "12", "--seed", "3")
    outs = [
        subprocess.run(
            cli("chat", *args, *extra), capture_output=True, text=True, env=ENV, timeout=60
        )
        for extra in ((), ("--api", "responses"), ("--api", "responses", "--transport", "fast-sse"))
    ]
    for out in outs:
        assert out.returncode == 0, out.stderr
        assert "finish length" in out.stderr
    assert outs[0].stdout.strip() and outs[1].stdout == outs[0].stdout == outs[2].stdout


def test_bench_endpoint_responses_completes(server: RunningServer) -> None:
    before = len(server.app.responses.stored)
    extra = json.dumps({"streamkit": {"ttft": 0.01, "tokens_per_second": 400, "jitter": 0}})
    root = server.base_url.removesuffix("/v1")
    done = bench(
        "--base-url", root, "--endpoint", "/v1/responses", "--model", "sim-small",
        "--num-requests", "6", "--concurrency", "3", "--max-tokens", "5", "--extra-body", extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "6 completed, 0 failed" in done.stdout
    assert len(server.app.responses.stored) - before == 6  # they went to /v1/responses
