"""``streamkit chat`` as a user runs it: a real subprocess, real pipes, the bundled server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("OPENAI_API_KEY", None)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamkit.cli", *args]


def test_output_is_progressive(server) -> None:  # type: ignore[no-untyped-def]
    # sim-large is the slow model (25 tokens/s): 30 tokens take over a second to arrive.
    with subprocess.Popen(
        cli(
            "chat",
            "Explain server-sent events",
            "--base-url",
            server.base_url,
            "--model",
            "sim-large",
            "--max-tokens",
            "30",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        arrivals: list[tuple[float, int]] = []
        while chunk := os.read(proc.stdout.fileno(), 65536):
            arrivals.append((time.perf_counter(), len(chunk)))
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=30)
    assert proc.returncode == 0, stderr
    # Many separate writes, and the first bytes came long before the last.
    assert len(arrivals) >= 10
    assert arrivals[-1][0] - arrivals[0][0] > 0.6
    assert "completed" in stderr


def test_embedded_default_and_metrics_json(tmp_path: Path) -> None:
    metrics = tmp_path / "m.json"
    out = subprocess.run(
        cli(
            "chat",
            "Explain caching",
            "--max-tokens",
            "12",
            "--seed",
            "3",
            "--metrics-json",
            str(metrics),
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()  # only the reply on stdout
    data = json.loads(metrics.read_text())
    assert data["status"] == "completed" and data["finish_reason"] == "length"
    assert data["output_tokens"] == 12 and data["output_tokens_source"] == "usage"
    assert len(data["itl"]) == 11 and data["ttft"] > 0 and data["e2e"] >= data["ttft"]
    assert data["retries"] == 0
    # Deterministic for a seed and prompt: the same command prints the same text.
    again = subprocess.run(
        cli("chat", "Explain caching", "--max-tokens", "12", "--seed", "3"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert again.stdout == out.stdout


def test_refused_connection_exits_nonzero_with_one_named_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = subprocess.run(
        cli(
            "chat",
            "hi",
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--model",
            "m",
            "--max-retries",
            "0",
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and "ConnectError" in errors[0] and str(port) in errors[0]
    assert out.stdout.strip() == ""


def test_wrong_key_exits_nonzero(auth_server) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        cli(
            "chat",
            "hi",
            "--base-url",
            auth_server.base_url,
            "--api-key",
            "nope",
            "--model",
            "sim-small",
        ),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 1 and "AuthError" in out.stderr and "nope" not in out.stderr


def test_usage_errors_exit_2() -> None:
    out = subprocess.run(
        cli("chat", "hi", "--base-url", "localhost:1"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 2 and "not an http(s) URL" in out.stderr


def test_chat_over_websocket_prints_the_same_reply(server) -> None:  # type: ignore[no-untyped-def]
    base = ("chat", "Explain caching", "--base-url", server.base_url, "--model", "sim-small")
    outs = [
        subprocess.run(
            cli(*base, "--max-tokens", "12", "--seed", "3", "--transport", transport),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
        for transport in ("sse", "ws")
    ]
    assert [o.returncode for o in outs] == [0, 0], outs[1].stderr
    assert outs[0].stdout == outs[1].stdout != ""


def test_max_retries_retries_and_says_so_on_stderr() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    out = subprocess.run(
        cli("chat", "hi", "--base-url", url, "--model", "m", "--max-retries", "1"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 1 and out.stdout.strip() == ""
    retries = [line for line in out.stderr.splitlines() if line.startswith("[retry]")]
    assert len(retries) == 1 and "cannot connect — retrying in" in retries[0]
    assert retries[0].endswith("(2/2)")
    bad = subprocess.run(
        cli("chat", "hi", "--base-url", url, "--max-retries", "-1"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert bad.returncode == 2 and "--max-retries: -1 is invalid" in bad.stderr
