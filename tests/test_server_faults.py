"""Fault injection, SSE ids and resume, and limits: pure parts exactly, the rest as clients see it.

Served checks go over real loopback through raw ``httpx`` (to see the bytes and the exact
transport error) and the real ``openai`` SDK (to see what an ordinary client makes of it).
Timing asserts are one-sided: a busy machine can only add delay.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from _util import wait_for

from streamkit.cli import main
from streamkit.server import MODELS, RunningServer, serve_in_thread
from streamkit.server.app import (
    RequestError,
    ServerStats,
    parse_chat_request,
    plan_reply,
)
from streamkit.server.faults import (
    AttemptCounter,
    Drop,
    InvalidSetting,
    Malformed,
    NoDone,
    Stall,
    Status,
    active_faults,
    error_for_status,
    parse_faults,
    stream_faults,
)
from streamkit.server.limits import ConcurrencyLimiter, RateLimiter
from streamkit.server.produce import Ending, produce, resume_base

FAST: dict[str, Any] = {"ttft": 0, "tokens_per_second": 2000, "length": 30}


def _body(stream: bool = True, **sim: Any) -> dict[str, Any]:
    return {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "How do streams fail and resume?"}],
        "stream": stream,
        "seed": 5,
        "streamkit": {**FAST, **sim},
    }


def _key() -> str:
    """A fresh attempt key (or bearer token): every test counts its own attempts and quota."""
    return "t-" + uuid.uuid4().hex


FULL = plan_reply(parse_chat_request(json.dumps(_body()).encode(), MODELS)).pieces
"""The reply every ``_body()`` request streams, token by token."""


# ---------------------------------------------------------------------------------------------
# faults: pure


def test_parse_faults_builds_each_kind() -> None:
    faults = parse_faults(
        [
            {"kind": "drop", "at": 3, "mid_frame": True, "attempts": 1},
            {"kind": "stall", "at": 0, "seconds": 1},
            {"kind": "status", "code": 429, "retry_after": 2},
            {"kind": "malformed", "at": 7},
            {"kind": "no_done"},
        ]
    )
    assert faults == (
        Drop(index=0, attempts=1, at=3, mid_frame=True),
        Stall(index=1, at=0, seconds=1.0),
        Status(index=2, code=429, retry_after=2.0),
        Malformed(index=3, at=7),
        NoDone(index=4),
    )
    assert isinstance(faults[1], Stall) and isinstance(faults[1].seconds, float)


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        ({"kind": "drop", "at": 1}, None, None),
        ({"kind": "drop", "at": -1}, "streamkit.faults[1].at", "must be an integer >= 0"),
        ({"kind": "drop", "at": 1.5}, "streamkit.faults[1].at", "must be an integer >= 0"),
        ({"kind": "drop", "at": True}, "streamkit.faults[1].at", "must be an integer >= 0"),
        ({"kind": "drop"}, "streamkit.faults[1].at", "is required"),
        ({"kind": "drop", "at": 1, "seconds": 2}, "streamkit.faults[1].seconds", "not a field"),
        ({"kind": "drop", "at": 1, "mid_frame": 1}, "streamkit.faults[1].mid_frame", "boolean"),
        ({"kind": "explode"}, "streamkit.faults[1].kind", "'drop', 'stall'"),
        ({"at": 1}, "streamkit.faults[1].kind", "must be one of"),
        ("drop", "streamkit.faults[1]", "fault object"),
        ({"kind": "stall", "at": 1, "seconds": 0}, "streamkit.faults[1].seconds", "greater than 0"),
        ({"kind": "status", "code": 404}, "streamkit.faults[1].code", "429, 500, 503"),
        ({"kind": "status", "code": 429, "retry_after": -1}, "streamkit.faults[1].retry_after", ""),
        ({"kind": "no_done", "attempts": 0}, "streamkit.faults[1].attempts", ">= 1"),
    ],
)
def test_bad_faults_name_index_and_field(raw: object, param: str | None, words: str) -> None:
    body = _body(faults=[{"kind": "no_done"}, raw])
    if param is None:
        parse_chat_request(json.dumps(body).encode(), MODELS)
        return
    with pytest.raises(RequestError) as info:
        parse_chat_request(json.dumps(body).encode(), MODELS)
    assert info.value.status == 400 and info.value.param == param
    assert info.value.message.startswith(param) and words in info.value.message


@pytest.mark.parametrize(
    ("sim", "param"),
    [
        ({"faults": {"kind": "drop"}}, "streamkit.faults"),
        ({"faults": [{"kind": "no_done"}] * 65}, "streamkit.faults"),
        ({"attempt_key": ""}, "streamkit.attempt_key"),
        ({"attempt_key": "x" * 129}, "streamkit.attempt_key"),
        ({"attempt_key": 7}, "streamkit.attempt_key"),
    ],
)
def test_bad_fault_settings(sim: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_chat_request(json.dumps(_body(**sim)).encode(), MODELS)
    assert info.value.param == param


def test_parsed_request_carries_faults_and_key() -> None:
    req = parse_chat_request(
        json.dumps(_body(attempt_key="k1", faults=[{"kind": "drop", "at": 2}])).encode(), MODELS
    )
    assert req.attempt_key == "k1" and req.faults == (Drop(index=0, at=2),)


def test_invalid_setting_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"streamkit\.faults must be a list"):
        parse_faults("x")
    assert issubclass(InvalidSetting, ValueError)


def test_attempts_limit_a_fault() -> None:
    faults = parse_faults([{"kind": "drop", "at": 1, "attempts": 2}, {"kind": "no_done"}])
    assert active_faults(faults, 1) == faults
    assert active_faults(faults, 2) == faults
    assert active_faults(faults, 3) == (faults[1],)


def test_attempt_counter_counts_per_key_with_bounded_memory() -> None:
    counter = AttemptCounter(max_keys=2)
    assert [counter.next("a"), counter.next("a"), counter.next("b")] == [1, 2, 1]
    assert counter.next(None) == 1 and counter.next(None) == 1  # no key: its own request
    counter.next("a")  # "a" is now the most recent; "b" the least
    counter.next("c")  # evicts "b"
    assert len(counter) == 2
    assert counter.next("b") == 1  # forgotten, starts again
    assert counter.next("c") == 2


def test_stream_faults_resolve_positions_for_this_attempt() -> None:
    faults = parse_faults(
        [
            {"kind": "stall", "at": 5, "seconds": 1},
            {"kind": "status", "code": 500},
            {"kind": "malformed", "at": 2},
            {"kind": "drop", "at": 5},
            {"kind": "drop", "at": 99},  # beyond the end: never reached
            {"kind": "no_done"},
        ]
    )
    fresh = stream_faults(faults, start=0, length=10)
    assert [(type(f).__name__, f.at) for f in fresh] == [
        ("Malformed", 2),
        ("Stall", 5),
        ("Drop", 5),
        ("NoDone", 10),
    ]
    # A resume starting at token 5 still meets the faults at 5; the one at 2 is behind it.
    resumed = stream_faults(faults, start=5, length=10)
    assert [type(f).__name__ for f in resumed] == ["Stall", "Drop", "NoDone"]
    assert stream_faults(parse_faults([{"kind": "no_done", "at": 50}]), 0, 10)[0].at == 10


def test_status_errors_look_like_openai_and_say_they_were_injected() -> None:
    message, kind, code = error_for_status(Status(index=2, code=429, retry_after=1.5))
    assert message.startswith("Rate limit reached") and "streamkit.faults[2]" in message
    assert "1.5 s" in message
    assert (kind, code) == ("requests", "rate_limit_exceeded")
    assert error_for_status(Status(code=500))[1:] == ("server_error", "server_error")
    message, _, code = error_for_status(Status(code=503))
    assert message.startswith("The server is overloaded") and code == "overloaded"


# ---------------------------------------------------------------------------------------------
# produce: pure, with a fake clock and a recording wire


class _FakePacer:
    """A clock that jumps to each due time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def time(self) -> float:
        return self.now

    async def wait_until(self, t: float) -> bool:
        self.waits.append(t)
        if t <= self.now:
            return False
        self.now = t
        return True


@dataclass
class _RecordingWire:
    log: list[tuple[str, int, float]] = field(default_factory=list)
    pacer: _FakePacer = field(default_factory=_FakePacer)

    async def token(self, seq: int, piece: str) -> None:
        self.log.append(("token", seq, self.pacer.now))

    async def malformed(self, seq: int) -> None:
        self.log.append(("malformed", seq, self.pacer.now))

    async def drop(self, seq: int, mid_frame: bool) -> None:
        self.log.append(("drop" + ("/mid" if mid_frame else ""), seq, self.pacer.now))


async def _produce(
    faults: Sequence[Any], start: int = 0, n: int = 6
) -> tuple[Ending, list[tuple[str, int, float]]]:
    wire = _RecordingWire()
    offsets = [1.0 + 0.5 * i for i in range(n)]  # ttft 1 s, 2 tokens/s
    ending = await produce(
        wire,
        [f"p{i}" for i in range(n)],
        offsets,
        start=start,
        t0=10.0,
        faults=stream_faults(parse_faults(list(faults)), start, n),
        pacer=wire.pacer,  # type: ignore[arg-type]
        stats=ServerStats(),
    )
    return ending, wire.log


@pytest.mark.anyio
async def test_produce_paces_and_fires_faults_in_place() -> None:
    ending, log = await _produce([])
    assert ending is Ending.FINISHED
    assert log == [("token", i, 11.0 + 0.5 * i) for i in range(6)]

    ending, log = await _produce(
        [{"kind": "malformed", "at": 2}, {"kind": "stall", "at": 2, "seconds": 3}]
    )
    assert ending is Ending.FINISHED
    # The malformed frame goes out before token 2; the stall then shifts the rest by 3 s.
    assert log[2] == ("malformed", 2, 11.5)
    assert [t for kind, _, t in log if kind == "token"] == [11.0, 11.5, 15.0, 15.5, 16.0, 16.5]

    ending, log = await _produce([{"kind": "drop", "at": 3, "mid_frame": True}])
    assert ending is Ending.DROPPED and [e[:2] for e in log][-2:] == [("token", 2), ("drop/mid", 3)]

    ending, log = await _produce([{"kind": "no_done", "at": 4}])
    assert ending is Ending.NO_DONE and [seq for _, seq, _ in log] == [0, 1, 2, 3]

    ending, log = await _produce([{"kind": "drop", "at": 6}])  # after the last token
    assert ending is Ending.DROPPED and log[-1][:2] == ("drop", 6) and len(log) == 7


@pytest.mark.anyio
async def test_produce_resume_costs_one_ttft_and_keeps_the_gaps() -> None:
    ending, log = await _produce([], start=4)
    assert ending is Ending.FINISHED
    # Token 4 one ttft (1 s) after the request at t0 = 10, token 5 one gap later.
    assert log == [("token", 4, 11.0), ("token", 5, 11.5)]
    assert resume_base(10.0, [1.0, 1.5, 2.0], 0) == 10.0
    assert resume_base(10.0, [1.0, 1.5, 2.0], 2) == 9.0
    assert resume_base(10.0, [1.0, 1.5, 2.0], 3) == 10.0  # past the end: nothing to pace


# ---------------------------------------------------------------------------------------------
# limits: pure


def test_rate_limiter_sliding_window() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.acquire("a", 0.0) is None
    assert limiter.acquire("a", 10.0) is None
    assert limiter.acquire("a", 20.0) == pytest.approx(40.0)  # the request at 0 leaves at 60
    assert limiter.acquire("b", 20.0) is None  # keys are separate
    assert limiter.acquire("a", 59.0) == pytest.approx(1.0)
    assert limiter.acquire("a", 60.0) is None  # refused requests were not recorded
    assert limiter.acquire("a", 65.0) == pytest.approx(5.0)
    assert RateLimiter.retry_after_header(0.2) == 1 and RateLimiter.retry_after_header(4.01) == 5


def test_rate_limiter_forgets_least_recent_keys() -> None:
    limiter = RateLimiter(per_minute=1, max_keys=2)
    for key in ("a", "b", "c"):
        assert limiter.acquire(key, 0.0) is None
    assert limiter.acquire("a", 1.0) is None  # "a" was forgotten: a fresh window
    assert limiter.acquire("c", 1.0) is not None


def test_concurrency_limiter() -> None:
    limiter = ConcurrencyLimiter(2)
    assert limiter.acquire("a") and limiter.acquire("a") and not limiter.acquire("a")
    assert limiter.full("a") and not limiter.full("b") and limiter.active("a") == 2
    limiter.release("a")
    assert limiter.acquire("a")
    limiter.release("a")
    limiter.release("a")
    assert limiter.active("a") == 0
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0)


# ---------------------------------------------------------------------------------------------
# served: tools for reading responses


@dataclass
class _Seen:
    """What a raw client saw of one streamed response."""

    status: int
    headers: httpx.Headers
    raw: bytes
    error: Exception | None  # the transport error that ended the body, if any

    @property
    def frames(self) -> list[bytes]:
        """Complete frames (without their blank line); a cut-off last one is left out."""
        return self.raw.split(b"\n\n")[:-1]

    @property
    def ids(self) -> list[int]:
        return [int(f.split(b"\n", 1)[0][4:]) for f in self.frames if f.startswith(b"id: ")]

    @property
    def pieces(self) -> list[str]:
        """The text of each content frame (the frames with an id)."""
        out: list[str] = []
        for frame in self.frames:
            if frame.startswith(b"id: "):
                data = frame.split(b"\n", 1)[1]
                out.append(json.loads(data[6:])["choices"][0]["delta"]["content"])
        return out

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """Every chunk decoded (for streams without a malformed frame)."""
        out = []
        for frame in self.frames:
            data = frame.rsplit(b"\n", 1)[-1]
            if data.startswith(b"data: {"):
                out.append(json.loads(data[6:]))
        return out


async def _post(
    base_url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> _Seen:
    """POST ``body``, read the response to its end or to the error that cuts it."""
    raw = b""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST", base_url + "/chat/completions", json=body, headers=headers or {}
        ) as response,
    ):
        try:
            async for data in response.aiter_raw():
                raw += data
        except httpx.TransportError as exc:
            return _Seen(response.status_code, response.headers, raw, exc)
    return _Seen(response.status_code, response.headers, raw, None)


async def _timed_frames(base_url: str, body: dict[str, Any]) -> list[tuple[float, bytes]]:
    frames: list[tuple[float, bytes]] = []
    buffer = b""
    async with httpx.AsyncClient(timeout=30) as client:
        t0 = time.perf_counter()
        async with client.stream("POST", base_url + "/chat/completions", json=body) as response:
            async for data in response.aiter_raw():
                now = time.perf_counter() - t0
                *complete, buffer = (buffer + data).split(b"\n\n")
                frames.extend((now, f) for f in complete)
    return frames


# ---------------------------------------------------------------------------------------------
# served: SSE ids and resume


@pytest.mark.anyio
async def test_content_frames_carry_numbered_ids(server: RunningServer) -> None:
    seen = await _post(server.base_url, _body())
    assert seen.error is None and seen.raw.endswith(b"data: [DONE]\n\n")
    assert seen.ids == list(range(len(FULL))) and seen.pieces == FULL
    # Only content frames have ids: role, finish and [DONE] do not.
    assert sum(f.startswith(b"id: ") for f in seen.frames) == len(FULL)
    assert not seen.frames[0].startswith(b"id: ") and seen.frames[-1] == b"data: [DONE]"


@pytest.mark.anyio
@pytest.mark.parametrize("after", [0, 1, 12, len(FULL) - 2, len(FULL) - 1])
async def test_resume_sends_exactly_the_missing_suffix(server: RunningServer, after: int) -> None:
    body = _body()
    body["stream_options"] = {"include_usage": True}
    seen = await _post(server.base_url, body, {"Last-Event-ID": str(after)})
    assert seen.status == 200 and seen.error is None
    assert seen.ids == list(range(after + 1, len(FULL)))
    assert "".join(FULL[: after + 1]) + "".join(seen.pieces) == "".join(FULL)
    chunks = seen.chunks
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # usage counts the whole logical stream, not just the resumed part.
    assert chunks[-1]["usage"]["completion_tokens"] == len(FULL)


@pytest.mark.anyio
async def test_sdk_reads_a_resumed_stream(server: RunningServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="sim-small",
            messages=_body()["messages"],
            seed=5,
            stream=True,
            extra_body={"streamkit": FAST},
            extra_headers={"Last-Event-ID": "9"},
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == "".join(FULL[10:])


@pytest.mark.anyio
async def test_resume_waits_one_time_to_first_token(server: RunningServer) -> None:
    # A reconnect costs a time to first token, as on a real server: token 21 is not sent at
    # once, as if it were 21 tokens into the schedule, but one ttft after the request.
    body = _body(ttft=0.3, tokens_per_second=1000)
    raw = b""
    first_id_at = None
    async with httpx.AsyncClient(timeout=30) as client:
        t0 = time.perf_counter()
        async with client.stream(
            "POST",
            server.base_url + "/chat/completions",
            json=body,
            headers={"Last-Event-ID": "20"},
        ) as response:
            async for data in response.aiter_raw():
                raw += data
                if first_id_at is None and b"id: 21\n" in raw:
                    first_id_at = time.perf_counter() - t0
    assert first_id_at is not None and first_id_at >= 0.29


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "stream", "words"),
    [
        ("abc", True, "Invalid Last-Event-ID"),
        ("-1", True, "Invalid Last-Event-ID"),
        (str(len(FULL)), True, f"has {len(FULL)} content tokens"),
        ("3", False, "resumes a stream"),
    ],
)
async def test_bad_resumes_are_400(
    server: RunningServer, value: str, stream: bool, words: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            server.base_url + "/chat/completions",
            json=_body(stream=stream),
            headers={"Last-Event-ID": value},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert words in error["message"] and error["param"] == "Last-Event-ID"


# ---------------------------------------------------------------------------------------------
# served: each fault as the client sees it


@pytest.mark.anyio
async def test_drop_is_a_broken_connection_not_a_clean_end(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    stats = server.app.stats
    dropped = stats.streams_dropped
    seen = await _post(server.base_url, _body(faults=[{"kind": "drop", "at": 7}]))
    assert isinstance(seen.error, httpx.RemoteProtocolError)
    assert "incomplete chunked read" in str(seen.error)
    # Exactly the tokens before the fault arrived, whole; then nothing, not even [DONE].
    assert seen.pieces == FULL[:7] and seen.raw.endswith(b"\n\n")
    assert b"[DONE]" not in seen.raw and b'finish_reason":"stop' not in seen.raw
    await wait_for(lambda: stats.streams_dropped == dropped + 1)
    # A fault asked for is not a server error: nothing is logged as one.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
async def test_drop_mid_frame_leaves_half_a_frame(server: RunningServer) -> None:
    seen = await _post(
        server.base_url, _body(faults=[{"kind": "drop", "at": 4, "mid_frame": True}])
    )
    assert isinstance(seen.error, httpx.RemoteProtocolError)
    assert seen.pieces == FULL[:4]
    tail = seen.raw.rsplit(b"\n\n", 1)[1]
    assert tail.startswith(b"id: 4\ndata: {") and len(tail) > 20
    with pytest.raises(ValueError):
        json.loads(tail.split(b"data: ", 1)[1])


@pytest.mark.anyio
async def test_drop_through_the_sdk_is_a_connection_error(server: RunningServer) -> None:
    pieces: list[str] = []
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="sim-small",
            messages=_body()["messages"],
            seed=5,
            stream=True,
            extra_body={"streamkit": {**FAST, "faults": [{"kind": "drop", "at": 5}]}},
        )
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
        await stream.close()
        # Without streaming, a drop closes the connection before any response.
        with pytest.raises(openai.APIConnectionError):
            await sdk.chat.completions.create(
                model="sim-small",
                messages=_body()["messages"],
                extra_body={"streamkit": {**FAST, "faults": [{"kind": "drop", "at": 0}]}},
            )
    assert pieces == FULL[:5]


@pytest.mark.anyio
async def test_stall_pauses_then_continues(server: RunningServer) -> None:
    body = _body(
        faults=[{"kind": "stall", "at": 10, "seconds": 0.4}], tokens_per_second=500, jitter=0
    )
    frames = await _timed_frames(server.base_url, body)
    at = {int(f.split(b"\n", 1)[0][4:]): t for t, f in frames if f.startswith(b"id: ")}
    assert sorted(at) == list(range(len(FULL)))
    # Token 10 cannot leave before the stall has passed (timed from before the request, so a
    # busy machine can only add); the gap shows where the stall was, generously.
    assert at[10] >= 0.4
    assert at[10] - at[9] >= 0.2
    assert frames[-1][1] == b"data: [DONE]"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "sdk_error", "kind", "err_code"),
    [
        (429, openai.RateLimitError, "requests", "rate_limit_exceeded"),
        (500, openai.InternalServerError, "server_error", "server_error"),
        (503, openai.InternalServerError, "server_error", "overloaded"),
    ],
)
async def test_status_faults(
    server: RunningServer, code: int, sdk_error: type[Exception], kind: str, err_code: str
) -> None:
    fault = {"kind": "status", "code": code, "retry_after": 2}
    seen = await _post(server.base_url, _body(faults=[fault]))
    assert seen.status == code and seen.error is None
    assert seen.headers["retry-after"] == "2" and seen.headers["retry-after-ms"] == "2000"
    assert seen.headers["content-type"] == "application/json"
    error = json.loads(seen.raw)["error"]
    assert error["type"] == kind and error["code"] == err_code
    assert "streamkit.faults[0]" in error["message"]
    if code == 503:
        assert error["message"].startswith("The server is overloaded")

    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as sdk:
        with pytest.raises(sdk_error) as info:
            await sdk.chat.completions.create(
                model="sim-small",
                messages=_body()["messages"],
                stream=True,
                extra_body={"streamkit": {**FAST, "faults": [fault]}},
            )
    assert getattr(info.value, "status_code", None) == code


@pytest.mark.anyio
async def test_status_without_retry_after_sends_no_header(server: RunningServer) -> None:
    seen = await _post(server.base_url, _body(faults=[{"kind": "status", "code": 429}]))
    assert seen.status == 429 and "retry-after" not in seen.headers


@pytest.mark.anyio
async def test_malformed_frame_then_the_stream_goes_on(server: RunningServer) -> None:
    seen = await _post(server.base_url, _body(faults=[{"kind": "malformed", "at": 6}]))
    assert seen.error is None and seen.raw.endswith(b"data: [DONE]\n\n")
    bad = []
    for frame in seen.frames:
        data = frame.rsplit(b"\n", 1)[-1]
        if data != b"data: [DONE]":
            try:
                json.loads(data[6:])
            except ValueError:
                bad.append(frame)
    assert len(bad) == 1 and not bad[0].startswith(b"id: ")
    assert seen.pieces == FULL  # every token still arrives
    assert seen.frames.index(bad[0]) == 1 + 6  # after the role frame and six tokens

    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="sim-small",
            messages=_body()["messages"],
            stream=True,
            extra_body={"streamkit": {**FAST, "faults": [{"kind": "malformed", "at": 0}]}},
        )
        with pytest.raises(ValueError):  # the SDK's JSON decoding fails on the frame
            async for _ in stream:
                pass
        await stream.close()


@pytest.mark.anyio
@pytest.mark.parametrize("at", [None, 9])
async def test_no_done_ends_cleanly_without_finish(server: RunningServer, at: int | None) -> None:
    fault: dict[str, Any] = {"kind": "no_done"} if at is None else {"kind": "no_done", "at": at}
    seen = await _post(server.base_url, _body(faults=[fault]))
    assert seen.error is None and seen.status == 200  # a clean end of the HTTP body…
    assert b"[DONE]" not in seen.raw and b'"finish_reason":"stop"' not in seen.raw  # …too early
    assert seen.pieces == (FULL if at is None else FULL[:at])


@pytest.mark.anyio
async def test_attempts_one_lets_the_retry_through(server: RunningServer) -> None:
    key = _key()
    body = _body(attempt_key=key, faults=[{"kind": "status", "code": 503, "attempts": 1}])
    first = await _post(server.base_url, body)
    second = await _post(server.base_url, body)
    assert first.status == 503
    assert second.status == 200 and second.pieces == FULL
    # Another key counts its own attempts.
    other = await _post(
        server.base_url, body | {"streamkit": {**body["streamkit"], "attempt_key": _key()}}
    )
    assert other.status == 503


@pytest.mark.anyio
async def test_drop_then_resume_with_the_same_key_completes_the_text(
    server: RunningServer,
) -> None:
    key = _key()
    body = _body(attempt_key=key, faults=[{"kind": "drop", "at": 8, "attempts": 1}])
    first = await _post(server.base_url, body)
    assert first.error is not None and first.ids == list(range(8))
    resumed = await _post(server.base_url, body, {"Last-Event-ID": str(first.ids[-1])})
    assert resumed.error is None and resumed.ids == list(range(8, len(FULL)))
    assert "".join(first.pieces + resumed.pieces) == "".join(FULL)


@pytest.mark.anyio
async def test_fault_positions_count_the_whole_logical_stream(server: RunningServer) -> None:
    # Resuming after token 4 (five tokens received), a drop at 7 comes after two more tokens.
    seen = await _post(
        server.base_url, _body(faults=[{"kind": "drop", "at": 7}]), {"Last-Event-ID": "4"}
    )
    assert seen.error is not None and seen.ids == [5, 6]


@pytest.mark.anyio
async def test_non_stream_faults(server: RunningServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        url = server.base_url + "/chat/completions"
        t0 = time.perf_counter()
        stalled = await client.post(
            url, json=_body(stream=False, faults=[{"kind": "stall", "at": 3, "seconds": 0.3}])
        )
        assert time.perf_counter() - t0 >= 0.29 and stalled.status_code == 200
        assert stalled.json()["choices"][0]["message"]["content"] == "".join(FULL)
        malformed = await client.post(
            url, json=_body(stream=False, faults=[{"kind": "malformed", "at": 0}])
        )
        with pytest.raises(ValueError):
            malformed.json()
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(url, json=_body(stream=False, faults=[{"kind": "drop", "at": 0}]))


@pytest.mark.anyio
async def test_bad_fault_is_400_over_http(server: RunningServer) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            server.base_url + "/chat/completions",
            json=_body(
                faults=[{"kind": "stall", "at": 1, "seconds": 1}, {"kind": "drop", "at": -2}]
            ),
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "streamkit.faults[1].at"
    assert error["message"].startswith("streamkit.faults[1].at must be an integer >= 0")


# ---------------------------------------------------------------------------------------------
# served: limits


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.anyio
async def test_concurrency_limit_is_per_key(limited_server: RunningServer) -> None:
    key = _key()
    url = limited_server.base_url + "/chat/completions"
    slow = _body(tokens_per_second=20, length=40)
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url, json=slow, headers=_auth(key)) as first,
    ):
        assert first.status_code == 200
        second = await client.post(url, json=_body(), headers=_auth(key))
        other = await client.post(url, json=_body(), headers=_auth(_key()))
        await first.aclose()
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    error = second.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "--max-concurrent-streams" in error["message"]
    assert other.status_code == 200


@pytest.mark.anyio
async def test_a_finished_reply_frees_its_slot_at_once() -> None:
    # The slot is given back before the reply's last bytes go out, not when the handler has
    # unwound: back-to-back requests of one caller never meet their own previous one.
    key = _key()
    with serve_in_thread(max_concurrent_streams=1) as running:
        async with openai.AsyncOpenAI(base_url=running.base_url, api_key=key, max_retries=0) as sdk:
            for i in range(15):
                body = _body(stream=i % 2 == 0)
                if i % 6 == 0:  # a dropped stream frees its slot too
                    body["streamkit"]["faults"] = [{"kind": "drop", "at": 3}]
                seen = await _post(running.base_url, body, _auth(key))
                assert seen.status == 200, seen.raw
                await sdk.chat.completions.create(
                    model="sim-small", messages=_body()["messages"], extra_body={"streamkit": FAST}
                )


@pytest.mark.anyio
async def test_requests_per_minute_with_retry_after(limited_server: RunningServer) -> None:
    key = _key()
    before = limited_server.app.stats.rate_limited
    async with openai.AsyncOpenAI(
        base_url=limited_server.base_url, api_key=key, max_retries=0
    ) as sdk:
        for _ in range(3):
            await sdk.chat.completions.create(
                model="sim-small", messages=_body()["messages"], extra_body={"streamkit": FAST}
            )
        with pytest.raises(openai.RateLimitError) as info:
            await sdk.chat.completions.create(
                model="sim-small", messages=_body()["messages"], extra_body={"streamkit": FAST}
            )
    response = info.value.response
    assert 55 <= int(response.headers["retry-after"]) <= 60
    assert "--requests-per-minute" in response.json()["error"]["message"]
    assert limited_server.app.stats.rate_limited == before + 1


@pytest.mark.anyio
async def test_body_limit_is_413(limited_server: RunningServer) -> None:
    big = _body()
    # Far over the limit, so the refusal comes while the client is still sending.
    big["messages"] = [{"role": "user", "content": "x" * 200_000}]
    url = limited_server.base_url + "/chat/completions"
    async with httpx.AsyncClient(timeout=30) as client:
        declared = await client.post(url, json=big, headers=_auth(_key()))

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
            data = json.dumps(big).encode()
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        streamed = await client.post(url, content=chunks(), headers=_auth(_key()))
        small = await client.post(url, json=_body(), headers=_auth(_key()))
    for response in (declared, streamed):
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["code"] == "request_too_large" and "4096 bytes" in error["message"]
    assert small.status_code == 200


def test_serve_passes_limits_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamkit.server

    seen: dict[str, Any] = {}
    monkeypatch.setattr(streamkit.server, "run_server", lambda **kw: seen.update(kw))
    argv = ["serve", "--max-concurrent-streams", "4", "--requests-per-minute", "60"]
    assert main([*argv, "--max-body-bytes", "2048"]) == 0
    assert seen["max_concurrent_streams"] == 4 and seen["requests_per_minute"] == 60
    assert seen["max_body_bytes"] == 2048
    assert main(["serve"]) == 0
    assert seen["max_concurrent_streams"] is None and seen["max_body_bytes"] == 1 << 20


def test_bad_limits_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--max-body-bytes", "0"]) == 2
    assert "max_body_bytes must be an integer >= 1" in capsys.readouterr().err
