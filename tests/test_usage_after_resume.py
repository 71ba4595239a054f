"""Usage after a retry: what the bundled server reports, and one answer from StreamResult and the
metrics. A real stream, dropped by an injected fault and resumed (or restarted) over loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import streamkit as sk
from streamkit.events import Usage
from streamkit.result import output_tokens_from
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

TRANSPORTS = ["sse", "generic-sse", "fast-sse", "ws"]
SIM = {"ttft": 0.0, "tokens_per_second": 400, "length": 30, "jitter": 0.0}
FAST = sk.RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
DROP_AT_12 = {"kind": "drop", "at": 12, "attempts": 1}


def raw_stream(server: RunningServer, **headers: str) -> tuple[int, dict[str, Any]]:
    """One streamed request as bytes on the wire: (content frames, the usage object)."""
    body = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "Explain resumes"}],
        "stream": True,
        "seed": 5,
        "stream_options": {"include_usage": True},
        "streamkit": SIM,
    }
    content = 0
    usage: dict[str, Any] | None = None
    with httpx.stream(
        "POST", server.base_url + "/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif any(choice["delta"].get("content") for choice in chunk["choices"]):
                content += 1
    assert usage is not None
    return content, usage


def test_the_server_reports_the_whole_logical_stream_on_a_resume(server: RunningServer) -> None:
    whole, usage = raw_stream(server)
    resumed, resumed_usage = raw_stream(server, **{"Last-Event-ID": "11"})
    assert (whole, resumed) == (30, 18)
    assert usage["completion_tokens"] == resumed_usage["completion_tokens"] == 30
    assert resumed_usage == usage  # prompt tokens once, not per attempt


async def stream(
    server: RunningServer, transport: str, *, resume: bool = True
) -> tuple[sk.StreamResult, sk.MetricsCollector]:
    collector = sk.MetricsCollector()
    async with sk.Client(
        server.base_url,
        model="sim-small",
        transport=transport,
        retry=FAST,
        # With ids the client resumes; resume=False ignores them (as for a server that sends
        # none), and then on_interrupt="restart" starts the stream over.
        resume=resume,
        on_interrupt="restart",
    ) as client:
        result = await client.chat(
            "Explain resumes",
            view=None,
            seed=5,
            observers=[collector],
            extra_body={"streamkit": {**SIM, "faults": [DROP_AT_12]}},
        )
    return result, collector


def assert_one_answer(result: sk.StreamResult, collector: sk.MetricsCollector) -> None:
    row = collector.requests_df().iloc[0]
    [metrics] = collector.request_metrics()
    assert result.usage is not None and result.usage.completion_tokens == 30
    assert (result.output_tokens, result.output_tokens_source) == (30, "usage")
    assert (int(row["output_tokens"]), row["output_tokens_source"]) == (30, "usage")
    assert (metrics.output_tokens, metrics.output_tokens_source) == (30, "usage")
    assert result.to_dict()["output_tokens_source"] == "usage"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_resumed_request_reports_usage_in_the_result_and_the_metrics_alike(
    server: RunningServer, transport: str
) -> None:
    result, collector = await stream(server, transport)
    assert result.ok and result.retries == 1 and result.discarded_tokens == 0
    assert result.chunks == 30  # 12 before the drop, 18 after the resume
    assert_one_answer(result, collector)


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_restarted_request_reports_the_kept_replys_usage_alike(
    server: RunningServer, transport: str
) -> None:
    result, collector = await stream(server, transport, resume=False)
    assert result.ok and result.retries == 1 and result.discarded_tokens == 12
    assert result.chunks == 30
    assert_one_answer(result, collector)


def test_the_rule_is_usage_when_sent_else_the_chunks_counted() -> None:
    assert output_tokens_from(Usage(7, 30, 37), 18) == (30, "usage")
    assert output_tokens_from(None, 18) == (18, "counted")
