"""``streamkit bench`` as a user runs it: a real subprocess, the bundled server or a given one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from test_cli import ENV, cli

from streamkit.cli.bench import default_transport as _default_transport
from streamkit.server import RunningServer

FAST = json.dumps({"streamkit": {"ttft": 0.01, "tokens_per_second": 400, "jitter": 0}})


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("bench", *args), capture_output=True, text=True, env=ENV, timeout=timeout
    )


def test_embedded_default_reports_and_writes_every_request(tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    done = bench(
        "--num-requests", "12", "--concurrency", "4", "--max-tokens", "6",
        "--goodput", "ttft:5000", "--extra-body", FAST, "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = done.stdout
    for line in ("(bundled simulator)", "closed loop, concurrency 4", "12 completed, 0 failed"):
        assert line in report
    for metric in ("TTFT", "TPOT", "ITL", "E2E", "goodput", "client CPU"):
        assert metric in report
    df = pd.read_csv(out)
    assert (
        len(df) == 12 and (df["status"] == "completed").all() and (df["output_tokens"] == 6).all()
    )


def test_open_loop_json_report(server: RunningServer, tmp_path: Path) -> None:
    done = bench(
        "--base-url", server.base_url, "--model", "sim-small", "--num-requests", "20",
        "--request-rate", "50", "--max-tokens", "3", "--extra-body", FAST, "--json",
        "--output", str(tmp_path / "r.jsonl"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["completed"] == 20 and report["mode"] == "open loop, 50 req/s (Poisson)"
    assert report["scheduled_rate"] > 0 and 0 <= report["client_cpu"] <= 1.05
    assert set(report["latency_s"]) == {"ttft", "tpot", "itl", "e2e"}
    rows = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(rows) == 20 and "arrival_lag" in json.loads(rows[0])


def test_failed_requests_exit_1_with_errors_by_class(server: RunningServer, tmp_path: Path) -> None:
    # Two prompts the server refuses (an unknown role: 400) among four.
    prompts = tmp_path / "p.jsonl"
    rows = [{"prompt": "hi"}, {"messages": [{"role": "robot", "content": "beep"}]}] * 2
    prompts.write_text("\n".join(json.dumps(row) for row in rows))
    done = bench(
        "--base-url", server.base_url, "--model", "sim-small", "--num-requests", "4",
        "--max-tokens", "2", "--prompts", str(prompts), "--max-retries", "0",
        "--extra-body", FAST,
    )  # fmt: skip
    assert done.returncode == 1
    assert "errors: BadRequestError ×2" in done.stdout
    assert "warning: 2 of 4 requests failed" in done.stdout
    assert done.stderr.startswith(
        "streamkit bench: 2 of 4 requests failed; first error: BadRequestError: "
    )


def test_all_failed_is_one_line_not_a_report(server: RunningServer) -> None:
    faults = json.dumps({"streamkit": {"faults": [{"kind": "status", "code": 503}]}})
    done = bench(
        "--base-url", server.base_url, "--model", "sim-small", "--num-requests", "4",
        "--max-retries", "0", "--extra-body", faults,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("streamkit bench: all 4 requests failed; first error: ServerError: ")


def test_vllm_names_are_aliases(server: RunningServer) -> None:
    done = bench(
        "--base-url", server.base_url, "--model", "sim-small", "--num-prompts", "6",
        "--num-warmups", "2", "--disable-tqdm", "--max-concurrency", "3", "--max-tokens", "2",
        "--extra-body", FAST, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # --max-concurrency caps an open loop, at an infinite rate unless --request-rate says.
    assert (
        report["requests"] == 6
        and report["mode"] == "open loop, all 6 at once, at most 3 in flight"
    )
    assert "streamkit bench" not in done.stderr  # no progress bar, nothing to say


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--goodput", "ttft"], "--goodput 'ttft' is invalid"),
        (["--goodput", "latency:3"], "--goodput 'latency:3' is invalid"),
        (["--extra-body", "{nope"], "--extra-body is not valid JSON"),
        (["--num-requests", "0"], "num_requests=0 is invalid"),
        (["--request-rate", "-1"], "request_rate=-1.0 is invalid"),
        (["--output", "x.xlsx"], "--output x.xlsx: write results as .csv, .jsonl or .parquet"),
        (["--prompts", "missing.txt"], "cannot read prompts from missing.txt"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args: list[str], message: str) -> None:
    done = bench(*args, "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""


def test_several_base_urls_are_routed_across(server: RunningServer, tmp_path: Path) -> None:
    from streamkit import serve_in_thread

    with serve_in_thread() as second:
        out = tmp_path / "r.csv"
        done = bench(
            "--base-url", server.base_url, "--base-url", second.base_url, "--model", "sim-small",
            "--num-requests", "12", "--concurrency", "4", "--max-tokens", "4",
            "--extra-body", FAST, "--output", str(out),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 endpoints, round_robin" in done.stdout
    served = pd.read_csv(out)["endpoint"].value_counts().to_dict()
    hosts = {u.split("/")[2] for u in (server.base_url, second.base_url)}
    assert served == dict.fromkeys(hosts, 6)


@pytest.mark.slow
def test_workers_split_the_load_over_dask_processes(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    done = bench(
        "--base-url", server.base_url, "--model", "sim-small", "--workers", "2",
        "--num-requests", "10", "--concurrency", "4", "--max-tokens", "4",
        "--extra-body", FAST, "--output", str(out), "--json",
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["completed"] == 10 and report["processes"] == 2
    df = pd.read_csv(out)
    assert df["worker"].nunique() == 2 and len(df) == 10


def test_routing_and_workers_do_not_mix() -> None:
    done = bench("--base-url", "http://a:1/v1", "--base-url", "http://b:1/v1", "--workers", "2")
    assert done.returncode == 2 and "not both" in done.stderr


def test_the_default_transport_is_fast_sse_unless_a_proxy_applies() -> None:
    # The environment is the input here: proxies set as a user behind one would set them.
    proxied = {"https_proxy": "http://proxy:3128", "http_proxy": "", "no_proxy": ""}
    with mock.patch.dict(os.environ, proxied):
        assert _default_transport(["https://api.example.com/v1"]) == "generic-sse"
        assert _default_transport(["http://127.0.0.1:8000/v1"]) == "fast-sse"  # no http proxy
    with mock.patch.dict(os.environ, {**proxied, "no_proxy": "api.example.com"}):
        assert _default_transport(["https://api.example.com/v1"]) == "fast-sse"
