"""The conventions users bring: environment variables, model discovery, and ``llm``-style CLI.

Against a server we did not write (:mod:`_foreign`) as well as the bundled one, through the real
command line and the real transports.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _foreign import REPLY, foreign_server

import streamkit as sk
from streamkit.endpoint import Endpoint, resolve_endpoint
from streamkit.server import RunningServer

TRANSPORTS = ["sse", "generic-sse", "fast-sse"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKIT_", "OPENAI_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamkit.cli", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
    )


# -- precedence --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "environ", "expected"),
    [
        ((None, None, None), {}, Endpoint(None, None, None, "bundled")),
        # OPENAI_API_KEY alone never sends a notebook to a paid API, nor its key to the simulator
        ((None, None, None), {"OPENAI_API_KEY": "k"}, Endpoint(None, None, None, "bundled")),
        (
            (None, None, None),
            {"OPENAI_BASE_URL": "http://o/v1", "OPENAI_API_KEY": "ok"},
            Endpoint("http://o/v1", "ok", None, "OPENAI_BASE_URL"),
        ),
        (
            (None, None, None),
            {
                "OPENAI_BASE_URL": "http://o/v1",
                "STREAMKIT_BASE_URL": "http://s/v1",
                "OPENAI_API_KEY": "ok",
                "STREAMKIT_API_KEY": "sk",
                "STREAMKIT_MODEL": "m",
            },
            Endpoint("http://s/v1", "sk", "m", "STREAMKIT_BASE_URL"),
        ),
        (
            ("http://a/v1", "ak", "am"),
            {
                "STREAMKIT_BASE_URL": "http://s/v1",
                "STREAMKIT_API_KEY": "sk",
                "STREAMKIT_MODEL": "m",
            },
            Endpoint("http://a/v1", "ak", "am", "argument"),
        ),
        # an empty variable is unset, as in a shell's VAR= prefix
        ((None, None, None), {"STREAMKIT_BASE_URL": " "}, Endpoint(None, None, None, "bundled")),
    ],
)
def test_precedence(
    args: tuple[str | None, str | None, str | None], environ: dict[str, str], expected: Endpoint
) -> None:
    assert resolve_endpoint(*args, environ=environ) == expected


def test_client_reads_the_sdk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with foreign_server(api_key="k") as foreign:
        monkeypatch.setenv("OPENAI_BASE_URL", foreign.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "k")
        client = sk.Client()
        assert client.base_url == foreign.base_url
        result = client.chat_sync("hi", view=None)
    assert result.ok and result.text == "".join(REPLY)
    assert result.model == "foreign-1"
    assert foreign.headers[-1]["authorization"] == "Bearer k"


def test_api_key_alone_stays_on_the_bundled_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-key-must-not-leak")
    client = sk.Client()
    assert client.base_url_from == "bundled"
    assert client.api_key != "sk-real-key-must-not-leak"
    assert client.model == "sim-small"


def test_a_bad_base_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKIT_BASE_URL", "localhost:8000/v1")
    with pytest.raises(sk.UsageError, match=r"from \$STREAMKIT_BASE_URL"):
        sk.Client()


# -- model discovery -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_discovers_the_only_model(transport: str) -> None:
    with foreign_server() as foreign:
        client = sk.Client(foreign.base_url, transport=transport, retry=None)  # type: ignore[arg-type]
        result = client.chat_sync("hi", view=None)
    assert result.ok, result.error
    assert result.text == "".join(REPLY)
    assert [r["model"] for r in foreign.requests] == ["foreign-1"]
    assert client.model == "foreign-1"


def test_discovery_is_asked_once_for_concurrent_streams() -> None:
    async def main(base_url: str) -> list[sk.StreamResult]:
        async with sk.Client(base_url, transport="generic-sse") as client:
            return await asyncio.gather(*(client.chat("hi", view=None) for _ in range(8)))

    with foreign_server() as foreign:
        results = asyncio.run(main(foreign.base_url))
        assert foreign.model_lists == 1
    assert all(r.ok and r.model == "foreign-1" for r in results)


def test_several_models_uses_the_first_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with foreign_server(models=["alpha", "beta"]) as foreign:
        result = sk.Client(foreign.base_url).chat_sync("hi", view=None)
    assert result.model == "alpha"
    assert "serves 2 models (alpha, beta): using alpha" in caplog.text


def test_the_bundled_server_lists_priced_models(server: RunningServer) -> None:
    models = asyncio.run(sk.Client(server.base_url).models())
    by_id = {m.id: m for m in models}
    assert set(by_id) >= {"sim-small", "sim-large"}
    assert by_id["sim-small"].pricing == {"input": 0.15, "cached_input": 0.075, "output": 0.6}


@pytest.mark.parametrize(
    ("setup", "error", "words"),
    [
        ("closed", sk.ConnectError, "cannot connect to"),
        ("wrong-key", sk.AuthError, "401 from"),
        ("no-v1", sk.NotFoundError, "ends in /v1"),
    ],
)
def test_discovery_errors_name_the_real_cause(
    setup: str, error: type[sk.StreamkitError], words: str
) -> None:
    with foreign_server(api_key="right") as foreign:
        base = {
            "closed": f"http://127.0.0.1:{closed_port()}/v1",
            "wrong-key": foreign.base_url,
            "no-v1": foreign.base_url.removesuffix("/v1"),
        }[setup]
        client = sk.Client(base, api_key="wrong", retry=None)
        with pytest.raises(error, match=words) as caught:
            client.chat_sync("hi", view=None)
    assert "no model" not in str(caught.value)


# -- the command line ----------------------------------------------------------------------------


def test_cli_streams_from_the_sdk_variables_with_no_flag() -> None:
    with foreign_server(api_key="k") as foreign:
        out = cli("chat", "hi", env={"OPENAI_BASE_URL": foreign.base_url, "OPENAI_API_KEY": "k"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "".join(REPLY) + "\n"
    assert "unpriced" in out.stderr  # a model nobody prices: said, not shown as $0


def test_cli_closed_port_is_one_line_and_non_zero() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    out = cli("chat", "hi", env={"OPENAI_BASE_URL": url})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "ConnectError" in lines[0] and url in lines[0], out.stderr
    assert out.stdout == ""


def test_cli_wrong_key_is_an_auth_error() -> None:
    with foreign_server(api_key="right") as foreign:
        out = cli("chat", "hi", "--base-url", foreign.base_url, "--api-key", "wrong")
    assert out.returncode == 1
    assert "AuthError: 401 from" in out.stderr and "no model" not in out.stderr


def test_cli_stdin_system_and_temperature_reach_the_server() -> None:
    with foreign_server() as foreign:
        out = cli(
            "chat",
            "-s",
            "be brief",
            "--temperature",
            "0.3",
            "--top-p",
            "0.9",
            "prefix",
            "--base-url",
            foreign.base_url,
            stdin="text",
        )
        assert out.returncode == 0, out.stderr
        sent = foreign.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "text prefix"},  # stdin, a space, the argument (as llm)
    ]
    assert sent["temperature"] == 0.3 and sent["top_p"] == 0.9


def test_cli_stdin_alone_keeps_indentation(server: RunningServer) -> None:
    with foreign_server() as foreign:
        out = cli("chat", "--base-url", foreign.base_url, stdin="  def f():\n      pass\n")
        assert out.returncode == 0, out.stderr
        assert foreign.requests[-1]["messages"][-1]["content"] == "  def f():\n      pass"


@pytest.mark.parametrize("transport", ["sse", "generic-sse", "fast-sse", "ws"])
def test_cli_every_transport_and_cost(transport: str, tmp_path: Path) -> None:
    metrics = tmp_path / "m.json"
    out = cli(
        "chat", "hi", "--transport", transport, "--max-tokens", "5", "--metrics-json", str(metrics)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n") and out.stdout.strip()
    report = json.loads(metrics.read_text())
    # sim-small: $0.15 / $0.60 per 1M tokens, from the usage the server reported
    usage_cost = (report["prompt_tokens"] * 0.15 + report["output_tokens"] * 0.60) / 1e6
    assert report["cost_usd"] == pytest.approx(usage_cost)
    assert f"${usage_cost:.6f}" in out.stderr


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--max-tokens", "0", "must be 1 or more"),
        ("--max-tokens", "x", "is not an integer"),
        ("--temperature", "3", "between 0 and 2"),
        ("--timeout", "0", "must be a number > 0"),
        ("--transport", "carrier-pigeon", "invalid choice"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(flag: str, value: str, words: str) -> None:
    out = cli("chat", "hi", flag, value)
    assert out.returncode == 2
    assert words in out.stderr.strip().splitlines()[-1]


def test_cli_no_prompt_is_a_usage_error() -> None:
    out = cli("chat", stdin="")
    assert out.returncode == 2 and "no prompt" in out.stderr


def test_the_balancer_discovers_each_endpoints_model() -> None:
    async def main(urls: list[str]) -> list[sk.StreamResult]:
        async with sk.LoadBalancer(urls, transport="generic-sse") as balancer:
            return [await balancer.chat("hi", view=None) for _ in range(4)]

    with foreign_server(models=["left"]) as left, foreign_server(models=["right"]) as right:
        results = asyncio.run(main([left.base_url, right.base_url]))
        assert {r["model"] for r in left.requests} == {"left"}
        assert {r["model"] for r in right.requests} == {"right"}
    assert all(r.ok for r in results)
    assert {r.model for r in results} == {"left", "right"}


def test_bench_reads_the_sdk_variables() -> None:
    with foreign_server(api_key="k") as foreign:
        out = cli(
            "bench",
            "--num-requests",
            "3",
            "--concurrency",
            "1",
            "--max-tokens",
            "4",
            "--no-progress",
            "--json",
            env={"OPENAI_BASE_URL": foreign.base_url, "OPENAI_API_KEY": "k"},
        )
        assert out.returncode == 0, out.stderr
        assert f"endpoint from $OPENAI_BASE_URL: {foreign.base_url}" in out.stderr
        assert [r["model"] for r in foreign.requests] == ["foreign-1"] * 3
        assert {h["authorization"] for h in foreign.headers} == {"Bearer k"}
    assert json.loads(out.stdout)["completed"] == 3
