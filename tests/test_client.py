"""The client against the bundled server over real loopback sockets, through the real openai SDK."""

from __future__ import annotations

import asyncio
import socket

import openai
import pytest
from _util import wait_for

import streamkit as sk
from streamkit.events import StreamEnd, StreamStart, TokenDelta

pytestmark = pytest.mark.anyio

SLOW = {"streamkit": {"ttft": 0.0, "tokens_per_second": 50, "length": 20}}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_events_arrive_in_order_and_over_time(server) -> None:  # type: ignore[no-untyped-def]
    async with sk.Client(server.base_url, model="sim-small") as client:
        events = [e async for e in client.events("Explain streaming", extra_body=SLOW)]
    assert isinstance(events[0], StreamStart)
    assert isinstance(events[-1], StreamEnd)
    tokens = [e for e in events[1:-1] if isinstance(e, TokenDelta)]
    assert len(tokens) == len(events) - 2 == 20
    assert [t.index for t in tokens] == list(range(20))
    times = [t.time for t in tokens]
    assert times == sorted(times)
    # Paced at 50 tokens/s: the last token arrives ~0.38 s after the first, not all at once.
    assert times[-1] - times[0] > 0.25
    assert len(set(times)) > 10
    end = events[-1]
    assert end.finish_reason == "stop"
    assert end.usage is not None and end.usage.completion_tokens == 20


async def test_text_matches_the_sdks_own_parse(server) -> None:  # type: ignore[no-untyped-def]
    kwargs = {"model": "sim-small", "seed": 7, "max_tokens": 60}
    async with sk.Client(server.base_url, model="sim-small") as client:
        result = await client.chat("Tell me about caching", view=None, **kwargs)
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    async with sdk:
        stream = await sdk.chat.completions.create(
            messages=[{"role": "user", "content": "Tell me about caching"}],
            stream=True,
            stream_options={"include_usage": True},
            **kwargs,
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
    assert result.ok and result.text == "".join(parts)
    assert result.usage is not None and usage is not None
    assert result.usage.completion_tokens == usage.completion_tokens
    assert result.usage.prompt_tokens == usage.prompt_tokens
    assert result.output_tokens_source == "usage"


async def test_max_tokens_cuts_with_finish_reason_length(server) -> None:  # type: ignore[no-untyped-def]
    async with sk.Client(server.base_url, model="sim-small") as client:
        result = await client.chat("hello", view=None, max_tokens=5)
    assert result.finish_reason == "length"
    assert result.output_tokens == 5 == result.chunks
    assert result.ttft is not None and result.ttfb is not None and result.ttfb <= result.ttft
    assert result.tpot is not None and len(result.itl) == 4
    assert "TTFT" in result.summary() and "finish length" in result.summary()


async def test_wrong_key_is_a_typed_auth_error(auth_server) -> None:  # type: ignore[no-untyped-def]
    async with sk.Client(auth_server.base_url, api_key="wrong", model="sim-small") as client:
        with pytest.raises(sk.AuthError) as info:
            await client.chat("hi", view=None)
    err = info.value
    assert err.status_code == 401 and not err.retryable
    assert auth_server.base_url in str(err) and "OPENAI_API_KEY" in str(err)
    assert "wrong" not in str(err)  # never echo the key
    assert err.result.status == "failed"  # type: ignore[attr-defined]


async def test_right_key_streams(auth_server) -> None:  # type: ignore[no-untyped-def]
    async with sk.Client(auth_server.base_url, api_key="test-key", model="sim-small") as client:
        result = await client.chat("hi", view=None, max_tokens=3)
    assert result.ok and result.chunks == 3


async def test_refused_connection_names_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    async with sk.Client(url, api_key="k", model="m") as client:
        with pytest.raises(sk.ConnectError) as info:
            await client.chat("hi", view=None)
    assert url in str(info.value) and info.value.retryable


async def test_unknown_model_is_not_found(server) -> None:  # type: ignore[no-untyped-def]
    async with sk.Client(server.base_url, model="gpt-nope") as client:
        with pytest.raises(sk.NotFoundError) as info:
            await client.chat("hi", view=None)
    assert "gpt-nope" in str(info.value) and info.value.status_code == 404


async def test_bad_parameter_is_a_bad_request_naming_it(server) -> None:  # type: ignore[no-untyped-def]
    async with sk.Client(server.base_url, model="sim-small") as client:
        with pytest.raises(sk.BadRequestError) as info:
            await client.chat("hi", view=None, temperature=5)
    assert "temperature" in str(info.value)


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(sk.UsageError, match="not an http"):
        sk.Client("localhost:8000/v1", model="m")
    with pytest.raises(ValueError, match="timeout=0"):
        sk.Client("http://127.0.0.1:1/v1", model="m", timeout=0)
    # No model: the server is asked (GET /v1/models), and its real failure is reported, not
    # "no model given" (the conventions tests cover discovery itself).
    client = sk.Client("http://127.0.0.1:1/v1")
    with pytest.raises(sk.ConnectError, match="cannot connect"):
        client.chat_sync("hi", view=None)
    with pytest.raises(sk.UsageError, match="max_tokens=0"):
        sk.Client("http://127.0.0.1:1/v1", model="m").chat_sync("hi", view=None, max_tokens=0)


async def test_read_timeout_keeps_the_partial_text(server) -> None:  # type: ignore[no-untyped-def]
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 2, "length": 10}}
    # retry=None: by default the client would resume after each timeout (and finish).
    async with sk.Client(server.base_url, model="sim-small", timeout=0.25, retry=None) as client:
        with pytest.raises(sk.ReadTimeout) as info:
            await client.chat("hi", view=None, extra_body=body)
    result = info.value.result  # type: ignore[attr-defined]
    assert result.status == "failed" and result.chunks >= 1
    assert info.value.partial_text == result.text != ""


async def test_stop_closes_the_connection_and_keeps_text(server) -> None:  # type: ignore[no-untyped-def]
    stats = server.app.stats
    disconnected = stats.streams_disconnected
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 40, "length": 400}}
    async with sk.Client(server.base_url, model="sim-small") as client:
        task = client.start_chat("a long one", view=None, extra_body=body)
        await wait_for(lambda: task.result.chunks >= 5)
        task.stop()
        result = await task
    assert result.status == "stopped" and isinstance(result.error, sk.StreamCancelled)
    assert 5 <= result.chunks < 400 and result.text
    # The server saw the disconnect and stopped generating.
    await wait_for(lambda: stats.streams_disconnected == disconnected + 1)
    await wait_for(lambda: stats.active_streams == 0)


async def test_leaving_async_with_closes_the_stream(server) -> None:  # type: ignore[no-untyped-def]
    stats = server.app.stats
    disconnected = stats.streams_disconnected
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 100, "length": 500}}
    async with sk.Client(server.base_url, model="sim-small") as client:
        async with client.stream("long", extra_body=body) as events:
            async for event in events:
                if isinstance(event, TokenDelta) and event.index == 3:
                    break
        # Closed on leaving the block, not at garbage collection: the server sees it promptly.
        await wait_for(lambda: stats.streams_disconnected == disconnected + 1, within=1.0)


async def test_cancelling_the_task_marks_stopped_and_propagates(server) -> None:  # type: ignore[no-untyped-def]
    body = {"streamkit": {"ttft": 0.0, "tokens_per_second": 50, "length": 300}}
    async with sk.Client(server.base_url, model="sim-small") as client:
        state = sk.ChatState()
        task = asyncio.ensure_future(client.chat("x", view=None, state=state, extra_body=body))
        await wait_for(lambda: len(state.current_text) > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert state.last_result is not None and state.last_result.status == "stopped"
    assert not state.is_streaming and state.history[-1].content == state.last_result.text


async def test_state_is_multi_turn_and_observable(server) -> None:  # type: ignore[no-untyped-def]
    state = sk.ChatState(system="Be brief.")
    seen: list[str] = []
    state.subscribe(lambda s, change: seen.append(change))
    async with sk.Client(server.base_url, model="sim-small") as client:
        first = await client.chat("first question", view=None, state=state, max_tokens=8)
        second = await client.chat("second question", view=None, state=state, max_tokens=8)
    assert [m.role for m in state.history] == ["user", "assistant", "user", "assistant"]
    assert state.history[1].content == first.text and state.current_text == second.text
    assert seen[0] == "start" and seen.count("end") == 2 and seen.count("token") == 16
    # The second request carried the whole conversation: more prompt tokens than the first.
    assert second.usage and first.usage
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


async def test_failed_stream_updates_state(auth_server) -> None:  # type: ignore[no-untyped-def]
    state = sk.ChatState()
    async with sk.Client(auth_server.base_url, api_key="bad", model="sim-small") as client:
        result = await client.chat("q", view=None, state=state, raise_on_error=False)
    assert result.status == "failed" and isinstance(state.last_error, sk.AuthError)
    assert not state.is_streaming


def test_chat_sync_from_plain_code(server) -> None:  # type: ignore[no-untyped-def]
    result = sk.Client(server.base_url, model="sim-small").chat_sync(
        "sync please", view=None, max_tokens=4
    )
    assert result.ok and result.chunks == 4


async def test_chat_sync_inside_a_running_loop(server) -> None:  # type: ignore[no-untyped-def]
    # As in a notebook cell: a loop is running, and the blocking twin must still work.
    result = sk.Client(server.base_url, model="sim-small").chat_sync(
        "inside", view=None, max_tokens=3
    )
    assert result.ok and result.text


async def test_embedded_default_needs_no_configuration() -> None:
    result = await sk.chat("Explain server-sent events", view=None, max_tokens=6)
    assert result.ok and result.model == "sim-small" and result.chunks == 6
    assert sk.default_client().base_url == sk.default_server().base_url


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.finished: list[sk.StreamResult] = []

    def on_event(self, event: object) -> None:
        self.events.append(event)

    def finish(self, result: sk.StreamResult) -> None:
        self.finished.append(result)


async def test_observers_see_every_event_and_the_end(server) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    assert isinstance(recorder, sk.Observer)
    async with sk.Client(server.base_url, model="sim-small") as client:
        result = await client.chat("observe me", view=None, observers=[recorder], max_tokens=7)
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds == ["StreamStart"] + ["TokenDelta"] * 7 + ["StreamEnd"]
    assert recorder.finished == [result]
