"""The bundled simulator: pure parts exactly, the served API over real loopback sockets.

Wire checks go through raw ``httpx`` (to see the bytes) and through the real ``openai`` SDK (to
prove a real client accepts them). Timing asserts are one-sided or generous on purpose: they
check that pacing exists, not how precise a loaded CI machine is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import streamkit as sk
from streamkit.errors import UsageError
from streamkit.server import (
    MODELS,
    RunningServer,
    default_server,
    run_server,
    serve_in_thread,
)
from streamkit.server.app import RequestError, parse_chat_request, plan_reply
from streamkit.server.pacer import DueQueue, Pacer
from streamkit.server.textgen import THEMES, generate, schedule, tokenize

SMALL = MODELS["sim-small"]
FAST: dict[str, Any] = {"ttft": 0, "tokens_per_second": 5000}


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "How does streaming latency behave?"}],
        "streamkit": dict(FAST),
    }
    body.update(overrides)
    return body


async def _raw_stream(
    base_url: str, body: dict[str, Any]
) -> tuple[httpx.Response, bytes, list[tuple[float, bytes]]]:
    """POST a streaming request; the response, its whole body, and each frame (without its
    blank line) with its arrival time in seconds after the request was sent."""
    frames: list[tuple[float, bytes]] = []
    body_bytes = b""
    buffer = b""
    async with httpx.AsyncClient(timeout=30) as client:
        t0 = time.perf_counter()
        async with client.stream("POST", base_url + "/chat/completions", json=body) as response:
            async for data in response.aiter_raw():
                now = time.perf_counter() - t0
                body_bytes += data
                *complete, buffer = (buffer + data).split(b"\n\n")
                frames.extend((now, f) for f in complete)
    return response, body_bytes, frames


# ---------------------------------------------------------------------------------------------
# textgen: pure


def test_tokenize_pieces_look_like_bpe() -> None:
    assert tokenize("Hello, world!\n\nNext") == ["Hello", ",", " world", "!", "\n\n", "Next"]
    assert tokenize("It's 12345") == ["It", "'s", " 123", "45"]
    assert tokenize(" interactive") == [" intera", "ctive"]  # long words split, as BPE does


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "  two  spaces ",
        "tabs\tand\nnewlines\n\n\n",
        "naïve café — ok?",
        "x_y 3.14 'quoted'",
    ],
)
def test_tokenize_round_trips(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_generate_is_deterministic_per_seed_and_prompt() -> None:
    a = generate("Tell me about caching", 7, None, SMALL)
    assert a == generate("Tell me about caching", 7, None, SMALL)
    assert a != generate("Tell me about caching", 8, None, SMALL)
    assert a != generate("Tell me about notebooks", 7, None, SMALL)


def test_generate_reads_like_prose() -> None:
    for seed in range(20):
        pieces = generate(f"prompt {seed}", seed, None, SMALL)
        text = "".join(pieces)
        assert text.endswith(".") and " " in text and text[0].isupper()
        assert "lorem" not in text.lower() and "ipsum" not in text.lower()
        lo, _ = SMALL.length_range
        assert len(pieces) >= lo
        # Every sentence comes from the bundled set.
        sentences = {s for theme in THEMES.values() for s in theme}
        for paragraph in text.split("\n\n"):
            for sentence in paragraph.replace(". ", ".\x00").split("\x00"):
                assert sentence in sentences


def test_generate_follows_prompt_keywords() -> None:
    text = "".join(generate("What does prompt caching cost?", 0, None, SMALL))
    assert "cache" in text.lower() or "cost" in text.lower()


def test_generate_exact_length() -> None:
    for n in (1, 5, 333):
        assert len(generate("x", 0, n, SMALL)) == n


def test_generate_is_the_same_in_another_process() -> None:
    # Python's hash() is salted per process; the reply must not depend on it.
    code = (
        "from streamkit.server.textgen import generate;"
        "from streamkit.server.models import MODELS;"
        "print(repr(''.join(generate('cross-process', 3, None, MODELS['sim-small']))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == repr("".join(generate("cross-process", 3, None, SMALL)))


def test_schedule_paces_with_bounded_jitter() -> None:
    offsets = schedule("p", 1, 50, ttft=0.2, tokens_per_second=10, jitter=0.3)
    assert offsets[0] == 0.2
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert all(0.07 - 1e-9 <= g <= 0.13 + 1e-9 for g in gaps)
    assert len(set(gaps)) > 40  # jittered, not constant
    assert offsets == schedule("p", 1, 50, ttft=0.2, tokens_per_second=10, jitter=0.3)
    flat = schedule("p", 1, 5, ttft=0.0, tokens_per_second=4, jitter=0)
    assert flat == [0.0, 0.25, 0.5, 0.75, 1.0]


# ---------------------------------------------------------------------------------------------
# pacer: the pure queue, then the real loop


def test_due_queue_orders_and_keeps_ties_fifo() -> None:
    q: DueQueue[str] = DueQueue()
    for due, item in [(3.0, "c"), (1.0, "a1"), (2.0, "b"), (1.0, "a2")]:
        q.push(due, item)
    assert q.next_due() == 1.0
    assert q.pop_due(0.5) == []
    assert q.pop_due(1.0) == ["a1", "a2"]
    assert q.pop_due(1.5, slack=0.5) == ["b"]
    assert q.next_due(dead=lambda item: item == "c") is None
    assert len(q) == 0


@pytest.mark.anyio
async def test_pacer_releases_waiters_in_order_near_their_times() -> None:
    pacer = Pacer()
    t0 = pacer.time() + 0.1  # far enough ahead that every waiter suspends, even on a busy CI
    delays = [0.05, 0.01, 0.03, 0.07, 0.02, 0.04]
    released: list[tuple[float, float]] = []

    async def waiter(d: float) -> None:
        assert await pacer.wait_until(t0 + d)
        released.append((d, pacer.time() - t0))

    await asyncio.gather(*(waiter(d) for d in delays))
    assert [d for d, _ in released] == sorted(delays)
    for due, at in released:
        # Never early by more than the slack; late only by scheduling noise.
        assert due - pacer.slack - 1e-6 <= at <= due + 0.2, (due, at)


@pytest.mark.anyio
async def test_pacer_shares_one_wakeup_and_skips_cancelled() -> None:
    pacer = Pacer()
    t = pacer.time() + 0.1
    cancelled = asyncio.ensure_future(pacer.wait_until(t - 0.05))
    await asyncio.sleep(0)
    cancelled.cancel()
    results = await asyncio.gather(*(pacer.wait_until(t) for _ in range(200)))
    assert all(results)
    # 200 waiters due together cost one wake-up; the cancelled one cost none of its own.
    assert pacer.wakeups == 1
    assert cancelled.cancelled()
    assert not await pacer.wait_until(pacer.time() - 1)  # already due: no suspension


# ---------------------------------------------------------------------------------------------
# validation and planning: pure


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "model"),
        (_body(messages=[]), "messages", "non-empty"),
        (_body(messages="hi"), "messages", "non-empty"),
        (_body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "'user'"),
        (_body(messages=[{"role": "user", "content": 5}]), "messages[0].content", "string"),
        (
            _body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages[0].content[0].type",
            "'text'",
        ),
        (_body(temperature=3), "temperature", "0 to 2"),
        (_body(n=2), "n", "n=1"),
        (_body(stream_options={"include_usage": True}), "stream_options", "'stream' is true"),
        (
            _body(stream=True, stream_options={"usage": True}),
            "stream_options.usage",
            "include_usage",
        ),
        (_body(max_tokens=0), "max_tokens", "at least 1"),
        (_body(seed="x"), "seed", "integer"),
        (_body(stream="yes"), "stream", "boolean"),
        (_body(streamkit={"ttft": -1}), "streamkit.ttft", "0 to 600"),
        (
            _body(streamkit={"tokens_per_second": 0}),
            "streamkit.tokens_per_second",
            "greater than 0",
        ),
        (_body(streamkit={"jitter": 2}), "streamkit.jitter", "0 to 1"),
        (_body(streamkit={"length": 2.5}), "streamkit.length", "integer"),
        (_body(streamkit={"drop_at": 3}), "streamkit.drop_at", "Allowed keys"),
        (_body(streamkit=[1]), "streamkit", "object"),
        (_body(max_token=5), "max_token", "Unrecognized"),
        (_body(logprobs=True), "logprobs", "logprobs"),
        (_body(response_format={"type": "json_object"}), "response_format.type", "plain text"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_chat_request(json.dumps(body).encode(), MODELS)
    assert info.value.status == 400
    assert info.value.param == param
    assert words in info.value.message
    assert json.loads(info.value.body())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'{"model": NaN}', b"\xff"])
def test_unparseable_bodies_are_400(raw: bytes) -> None:
    with pytest.raises(RequestError) as info:
        parse_chat_request(raw, MODELS)
    assert info.value.status == 400


def test_plan_finish_reasons_and_lengths() -> None:
    def plan(**kw: Any) -> Any:
        return plan_reply(parse_chat_request(json.dumps(_body(**kw)).encode(), MODELS))

    natural = plan()
    assert natural.finish_reason == "stop" and "".join(natural.pieces).endswith(".")
    cut = plan(max_tokens=7)
    assert cut.finish_reason == "length" and cut.pieces == natural.pieces[:7]
    exact = plan(streamkit={"length": 300})
    assert exact.finish_reason == "stop" and exact.completion_tokens == 300
    both = plan(streamkit={"length": 300}, max_completion_tokens=10)
    assert both.finish_reason == "length" and both.completion_tokens == 10
    assert len(natural.offsets) == len(natural.pieces)


# ---------------------------------------------------------------------------------------------
# served: the wire format


@pytest.mark.anyio
@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_frames_are_shaped_like_openai(
    server: RunningServer, include_usage: bool
) -> None:
    body = _body(stream=True, max_tokens=12)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response, whole, frames = await _raw_stream(server.base_url, body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-request-id"].startswith("req_")
    assert whole.endswith(b"data: [DONE]\n\n")
    payloads = [f for _, f in frames]
    # Content frames start with an SSE id line (docs/protocol.md); the data line is OpenAI's.
    ids = [p.split(b"\n", 1)[0] for p in payloads if p.startswith(b"id: ")]
    assert ids == [b"id: %d" % i for i in range(12)]
    payloads = [p.split(b"\n", 1)[1] if p.startswith(b"id: ") else p for p in payloads]
    assert all(p.startswith(b"data: ") and b"\n" not in p for p in payloads)
    assert payloads[-1] == b"data: [DONE]"

    chunks = [json.loads(p[6:]) for p in payloads[:-1]]
    for p in payloads[:-1]:
        ChatCompletionChunk.model_validate_json(p[6:])
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "sim-small" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}

    if include_usage:
        *choice_chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"]["completion_tokens"] == 12
        assert usage_chunk["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
        assert all("usage" in c and c["usage"] is None for c in choice_chunks)
    else:
        choice_chunks = chunks
        assert all("usage" not in c for c in chunks)

    finish = choice_chunks[-1]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "length"
    content = choice_chunks[1:-1]
    assert len(content) == 12
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in content)
    assert all(c["choices"][0]["finish_reason"] is None for c in choice_chunks[:-1])


@pytest.mark.anyio
async def test_sdk_stream_and_usage_match_the_pieces(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="unused", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="sim-small",
            messages=[{"role": "user", "content": "Explain prompt caching costs"}],
            stream=True,
            stream_options={"include_usage": True},
            seed=11,
            extra_body={"streamkit": FAST},
        )
        pieces: list[str] = []
        usage = None
        finish = None
        async for chunk in stream:
            assert isinstance(chunk, ChatCompletionChunk)
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
        assert finish == "stop"
        assert usage is not None and usage.completion_tokens == len(pieces)
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert pieces == generate(
            "user: Explain prompt caching costs", 11, None, SMALL
        )  # the prompt the server derives from the messages

        completion = await client.chat.completions.create(
            model="sim-small",
            messages=[{"role": "user", "content": "Explain prompt caching costs"}],
            seed=11,
            extra_body={"streamkit": FAST},
        )
        assert isinstance(completion, ChatCompletion)
        assert completion.choices[0].message.content == "".join(pieces)
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == len(pieces)


@pytest.mark.anyio
async def test_non_stream_body_validates(server: RunningServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            server.base_url + "/chat/completions", json=_body(max_completion_tokens=9)
        )
    assert response.status_code == 200
    completion = ChatCompletion.model_validate_json(response.content)
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 9
    assert completion.system_fingerprint == "fp_streamkit"


@pytest.mark.anyio
async def test_seed_and_prompt_determine_the_text(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="unused", max_retries=0
    ) as client:

        async def text(seed: int | None, prompt: str = "Why measure tail latency?") -> str:
            kwargs: dict[str, Any] = {} if seed is None else {"seed": seed}
            reply = await client.chat.completions.create(
                model="sim-small",
                messages=[{"role": "user", "content": prompt}],
                extra_body={"streamkit": FAST},
                **kwargs,
            )
            return reply.choices[0].message.content or ""

        assert await text(1) == await text(1)
        assert await text(1) != await text(2)
        assert await text(None) == await text(0)  # no seed means seed 0
        assert await text(1) != await text(1, "Why cache prompts?")


@pytest.mark.anyio
async def test_max_tokens_gives_length_and_exact_usage(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="unused", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="sim-large",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"streamkit": FAST},
        )
        contents: list[str] = []
        reasons: list[str] = []
        tokens = -1
        async for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    contents.append(choice.delta.content)
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
    assert reasons == ["length"] and len(contents) == 5 and tokens == 5


@pytest.mark.anyio
async def test_models_are_listed(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="unused", max_retries=0
    ) as client:
        ids = [m.id async for m in client.models.list()]
        assert {"sim-small", "sim-large"} <= set(ids)
        large = await client.models.retrieve("sim-large")
        assert large.owned_by == "streamkit"
    async with httpx.AsyncClient() as raw:
        card = (await raw.get(server.base_url + "/models/sim-small")).json()
        assert card["streamkit"]["ttft"] == 0.08
        assert card["streamkit"]["pricing"]["output"] == 0.60
        missing = await raw.get(server.base_url + "/models/gpt-x")
        assert missing.status_code == 404
        assert (await raw.get(server.url + "/health")).json() == {"status": "ok"}


# ---------------------------------------------------------------------------------------------
# served: timing


async def _first_content_at(server: RunningServer, model: str) -> float:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 2,
    }
    _, _, frames = await _raw_stream(server.base_url, body)
    return next(t for t, f in frames if b'"content":' in f and b'"content":""' not in f)


@pytest.mark.anyio
async def test_large_model_has_slower_first_token(server: RunningServer) -> None:
    # The best of two each: a busy machine can only add delay.
    small = min([await _first_content_at(server, "sim-small") for _ in range(2)])
    large = min([await _first_content_at(server, "sim-large") for _ in range(2)])
    assert small >= 0.07  # configured 0.08 s
    assert large >= 0.38  # configured 0.40 s
    assert large > small + 0.15


@pytest.mark.anyio
async def test_tokens_are_paced(server: RunningServer) -> None:
    body = _body(
        stream=True, streamkit={"ttft": 0, "tokens_per_second": 100, "jitter": 0, "length": 20}
    )
    _, _, frames = await _raw_stream(server.base_url, body)
    content_times = [t for t, f in frames if b'"delta":{"content":' in f]
    assert len(content_times) == 20
    # 19 gaps of 10 ms after the first token; allow 1 ms of early release per token.
    assert content_times[-1] - content_times[0] >= 0.17
    assert content_times[-1] < 5.0


# ---------------------------------------------------------------------------------------------
# served: errors


@pytest.mark.anyio
async def test_auth(auth_server: RunningServer) -> None:
    url = auth_server.base_url + "/chat/completions"
    async with httpx.AsyncClient(timeout=30) as client:
        missing = await client.post(url, json=_body(max_tokens=1))
        wrong = await client.post(
            url, json=_body(max_tokens=1), headers={"Authorization": "Bearer nope-nope"}
        )
        right = await client.post(
            url, json=_body(max_tokens=1), headers={"Authorization": "Bearer test-key"}
        )
        models = await client.get(auth_server.base_url + "/models")
        health = await client.get(auth_server.url + "/health")
    for response in (missing, wrong, models):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert "test-key" not in response.text and "nope-nope" not in response.text
    assert wrong.json()["error"]["message"].startswith("Incorrect API key provided:")
    assert right.status_code == 200 and health.status_code == 200
    assert "test-key" not in repr(auth_server)

    async with openai.AsyncOpenAI(
        base_url=auth_server.base_url, api_key="wrong", max_retries=0
    ) as sdk:
        with pytest.raises(openai.AuthenticationError):
            await sdk.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "x"}]
            )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "param"),
    [
        (_body(messages=None), "messages"),
        (_body(temperature="hot"), "temperature"),
        (_body(streamkit={"ttft": -0.5}), "streamkit.ttft"),
        (_body(streamkit={"bogus": 1}), "streamkit.bogus"),
        (_body(max_tokens=-3), "max_tokens"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    server: RunningServer, body: dict[str, Any], param: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(server.base_url + "/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and param.split(".")[-1] in error["message"]
    assert error["code"] is None


@pytest.mark.anyio
async def test_not_found_and_wrong_method(server: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        bad_json = await client.post(
            server.base_url + "/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        unknown_model = await client.post(
            server.base_url + "/chat/completions", json=_body(model="gpt-9")
        )
        unknown_path = await client.get(server.base_url + "/completions")
        wrong_method = await client.get(server.base_url + "/chat/completions")
    assert bad_json.status_code == 400
    assert unknown_model.status_code == 404
    error = unknown_model.json()["error"]
    assert error["code"] == "model_not_found"
    assert (
        "`gpt-9` does not exist" in error["message"] and "sim-small, sim-large" in error["message"]
    )
    assert unknown_path.status_code == 404 and "error" in unknown_path.json()
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"

    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.BadRequestError):
            await sdk.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": "x"}], n=3
            )


# ---------------------------------------------------------------------------------------------
# served: disconnects


@pytest.mark.anyio
async def test_client_disconnect_stops_the_stream(server: RunningServer) -> None:
    stats = server.app.stats
    before = stats.streams_disconnected
    body = json.dumps(
        _body(stream=True, streamkit={"ttft": 0, "tokens_per_second": 200, "length": 2000})
    ).encode()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        received = b""
        while received.count(b"data: ") < 4:  # the role chunk and three pieces
            received += await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()

    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if stats.streams_disconnected > before and stats.active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert stats.streams_disconnected == before + 1
    assert stats.active_streams == 0
    # Generation stopped: nothing more is produced for the departed client.
    sent = stats.tokens_sent
    await asyncio.sleep(0.2)
    assert stats.tokens_sent == sent


# ---------------------------------------------------------------------------------------------
# runner


def test_running_server_lifecycle() -> None:
    with serve_in_thread(api_key="secret-value") as running:
        assert running.port > 0 and running.url == f"http://127.0.0.1:{running.port}"
        assert running.base_url == running.url + "/v1"
        assert "secret-value" not in repr(running) and "running" in repr(running)
        assert httpx.get(running.url + "/health").status_code == 200
    assert not running.running
    running.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/health")


@pytest.mark.anyio
async def test_stop_ends_open_streams_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    running = serve_in_thread()
    try:
        body = json.dumps(
            _body(stream=True, streamkit={"ttft": 0, "tokens_per_second": 20, "length": 1000})
        ).encode()
        reader, writer = await asyncio.open_connection(running.host, running.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = await reader.read(65536)
        t0 = time.monotonic()
        stopping = asyncio.ensure_future(asyncio.to_thread(running.stop))
        while chunk := await reader.read(65536):
            received += chunk
        await stopping
        writer.close()
        await writer.wait_closed()
    finally:
        running.stop()
    assert time.monotonic() - t0 < 3.0
    # The HTTP response was ended properly (last chunk), and without [DONE]: cut short.
    assert received.endswith(b"\r\n0\r\n\r\n") and b"[DONE]" not in received
    assert running.app.stats.streams_aborted == 1 and running.app.stats.active_streams == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_set_failing_answers_the_status_until_switched_back() -> None:
    with serve_in_thread(models={"sim-small": SMALL}) as running:
        models = httpx.get(running.base_url + "/models").json()["data"]
        assert [m["id"] for m in models] == ["sim-small"]  # not the default two
        running.set_failing(503, retry_after=2)
        assert running.failing == 503
        listing = httpx.get(running.base_url + "/models")
        assert listing.status_code == 503 and listing.headers["retry-after"] == "2"
        assert listing.json()["error"]["code"] == "overloaded"
        chat = httpx.post(running.base_url + "/chat/completions", json=_body(stream=True))
        error = chat.json()["error"]
        assert chat.status_code == 503 and error["type"] == "server_error"
        assert "set_failing" in error["message"]
        assert httpx.get(running.url + "/health").status_code == 200  # the process is up
        # WebSocket streams are refused the same way.
        ws = sk.Client(running.base_url, model="sim-small", transport="ws", retry=None)
        with pytest.raises(sk.ServerError) as info:
            ws.chat_sync("hello", view=None)
        assert info.value.status_code == 503
        running.set_failing(429)
        assert httpx.get(running.base_url + "/models").status_code == 429
        running.set_failing(None)
        assert running.failing is None
        assert httpx.post(running.base_url + "/chat/completions", json=_body()).status_code == 200
        with pytest.raises(UsageError, match="429 or 500-599"):
            running.set_failing(404)


def test_default_server_is_one_lazy_singleton() -> None:
    first = default_server()
    assert default_server() is first and first.running and first.api_key is None
    assert httpx.get(first.url + "/health").status_code == 200


def test_run_server_refuses_public_host_without_key() -> None:
    with pytest.raises(UsageError, match="--api-key"):
        run_server(host="0.0.0.0", port=0)


def test_listening_socket_gives_accepted_connections_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP, which they
    # inherit from the listener. With proto 0, a keep-alive client waited ~40 ms for each
    # stream's first chunk (Nagle's algorithm against the client's delayed ACK).
    import socket

    from streamkit.server.runner import _bind

    listener = _bind("127.0.0.1", 0)
    try:
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
