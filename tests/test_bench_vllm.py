"""``streamkit bench`` with a ``vllm bench serve`` command line: flags, result JSON, failures.

The command lines run as real subprocesses against the bundled server on a loopback port; the
simulator's ``ignore_eos`` is tested through real HTTP requests.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_cli import ENV, cli

from streamkit import Client
from streamkit._vllm import (
    CHAT_OVERHEAD_TOKENS,
    DETAILED_KEYS,
    _peaks,
    parse_metric_percentiles,
    parse_percentile_metrics,
    percentile_key,
    random_dataset,
    result_filename,
    stats_ms,
)
from streamkit.cli.bench import api_root
from streamkit.errors import UsageError
from streamkit.load import LoadResult, LoadSpec, _warnings, run_load
from streamkit.server import RunningServer
from streamkit.server.textgen import tokenize

FAST = json.dumps({"streamkit": {"ttft": 0.01, "tokens_per_second": 1000, "jitter": 0}})


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("bench", *args), capture_output=True, text=True, env=ENV, timeout=timeout
    )


def root(server: RunningServer) -> str:
    """vLLM's --base-url: the server root, without the API's /v1."""
    return server.base_url.removesuffix("/v1")


def acceptance(server: RunningServer, result_dir: Path, *extra: str) -> list[str]:
    """The brief's `vllm bench serve` command line, word for word, plus a faster simulator."""
    return [
        "--backend", "openai-chat", "--base-url", root(server),
        "--endpoint", "/v1/chat/completions", "--model", "sim-small",
        "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", "16",
        "--num-prompts", "20", "--max-concurrency", "4", "--request-rate", "inf", "--ignore-eos",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--save-result", "--result-dir", str(result_dir), "--disable-tqdm",
        "--goodput", "ttft:500", "e2el:3000",
        "--extra-body", FAST, *extra,
    ]  # fmt: skip


def saved(result_dir: Path) -> tuple[Path, dict[str, Any]]:
    (path,) = result_dir.iterdir()
    return path, json.loads(path.read_text())


# -- the acceptance command line -----------------------------------------------------------------


def test_a_vllm_command_line_runs_unchanged_and_saves_vllm_keys(
    server: RunningServer, tmp_path: Path
) -> None:
    done = bench(*acceptance(server, tmp_path / "D"))
    assert done.returncode == 0, done.stderr
    path, result = saved(tmp_path / "D")
    # vLLM's default name: {label}-{rate}qps-concurrency{C}-{model}-{date}.json
    assert re.fullmatch(r"openai-chat-infqps-concurrency4-sim-small-\d{8}-\d{6}\.json", path.name)
    assert result["date"] in path.name
    expected = {
        "backend": "openai-chat",
        "endpoint_type": "openai-chat",
        "label": None,
        "model_id": "sim-small",
        "tokenizer_id": None,
        "num_prompts": 20,
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": 4,
        "completed": 20,
        "failed": 0,
        # --ignore-eos runs every reply to its limit; the prompts are exactly 32 tokens.
        "total_input_tokens": 20 * 32,
        "total_output_tokens": 20 * 16,
        "max_concurrent_requests": 4,
        "rtfx": 0.0,
    }
    assert {k: result[k] for k in expected} == expected
    duration = result["duration"]
    assert result["request_throughput"] == pytest.approx(20 / duration)
    assert result["output_throughput"] == pytest.approx(320 / duration)
    assert result["total_token_throughput"] == pytest.approx(960 / duration)
    assert 0 < result["request_goodput"] <= result["request_throughput"]
    # Percentiles for exactly the chosen metrics and percentiles.
    stats = {k for k in result if re.fullmatch(r"(mean|median|std|p[\d.]+)_\w+_ms", k)}
    assert stats == {
        f"{stat}_{metric}_ms"
        for metric in ("ttft", "tpot", "itl", "e2el")
        for stat in ("mean", "median", "std", "p50", "p90", "p99")
    }
    # vLLM's statistics (numpy: population std, linear percentiles), here on the per-request
    # latencies that vLLM always saves.
    latencies = np.array(result["latencies"]) * 1000
    assert len(latencies) == 20
    assert result["mean_e2el_ms"] == pytest.approx(np.mean(latencies))
    assert result["std_e2el_ms"] == pytest.approx(np.std(latencies))
    assert result["median_e2el_ms"] == pytest.approx(np.median(latencies))
    assert result["p90_e2el_ms"] == pytest.approx(np.percentile(latencies, 90))
    assert result["median_ttft_ms"] == result["p50_ttft_ms"]
    assert len(result["queue_times"]) == 20
    # Without --save-detailed, vLLM drops the per-request arrays ("errors" is then
    # streamkit's count of errors by class).
    assert set(DETAILED_KEYS) & set(result) == {"errors"}
    # streamkit's own figures stay beside vLLM's.
    for key in ("target", "transport", "mode", "latency_s", "client_cpu", "warnings", "errors"):
        assert key in result
    assert result["mode"] == "open loop, all 20 at once, at most 4 in flight"
    assert result["errors"] == {} and result["warnings"] == []
    # The report shows the chosen metrics and percentiles, as vLLM's does.
    report = done.stdout
    assert re.search(r"mean\s+median\s+p50\s+p90\s+p99\n", report)
    for row in ("TTFT", "TPOT", "ITL", "E2EL"):
        assert re.search(rf"^{row}\s+[\d.,]+", report, re.M)
    latency = report[report.index("latency (ms)") :]
    assert "p95" not in latency and "max" not in latency
    assert "input tokens        640" in report


def test_save_detailed_adds_per_request_arrays(server: RunningServer, tmp_path: Path) -> None:
    done = bench(
        *acceptance(server, tmp_path / "D"),
        "--num-prompts", "6", "--random-range-ratio", "0.5", "--random-prefix-len", "4",
        "--seed", "7", "--save-detailed", "--label", "mine", "--metadata", "gpu=none", "tp=1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path, result = saved(tmp_path / "D")
    assert path.name.startswith("mine-infqps-concurrency4-sim-small-")
    assert (result["label"], result["gpu"], result["tp"]) == ("mine", "none", "1")
    drawn = random_dataset(6, input_len=32, output_len=16, range_ratio=0.5, prefix_len=4, seed=7)
    # The server's usage counts each prompt exactly as drawn; ignore_eos gives each drawn length.
    assert result["input_lens"] == list(drawn.prompt_lens)
    assert result["output_lens"] == list(drawn.output_lens)
    assert len(set(drawn.prompt_lens)) > 1  # the range ratio varied them
    assert result["total_output_tokens"] == sum(drawn.output_lens)
    assert all(text for text in result["generated_texts"])
    assert result["errors"] == [""] * 6 and result["errors_by_class"] == {}
    assert [len(itl) for itl in result["itls"]] == [n - 1 for n in drawn.output_lens]
    assert result["start_times"][0] == 0 and all(t > 0 for t in result["ttfts"])


def test_without_model_the_server_is_asked_and_ignored_flags_are_named(
    server: RunningServer,
) -> None:
    done = bench(
        "--base-url", server.base_url, "--num-prompts", "3", "--max-tokens", "2",
        "--tokenizer", "meta-llama/Llama-3.1-8B", "--trust-remote-code", "--extra-body", FAST,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the bundled server lists several models: the client's one line says which it took
    line = next(x for x in done.stderr.splitlines() if f"{server.base_url} serves" in x)
    assert "(sim-small, sim-large" in line and ": using sim-small" in line
    assert done.stderr.count("using sim-small") == 1
    ignoring = [line for line in done.stderr.splitlines() if "ignoring" in line]
    assert ignoring == [
        "streamkit bench: ignoring --tokenizer, --trust-remote-code: streamkit loads no "
        "tokenizer: it counts tokens from the server's usage"
    ]
    assert "3 completed, 0 failed" in done.stdout


# -- failures ------------------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


def test_all_failed_is_one_line_exit_1_and_no_warnings() -> None:
    port = _closed_port()
    done = bench(
        "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "sim-small",
        "--num-requests", "12", "--concurrency", "12", "--max-retries", "0",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"streamkit bench: all 12 requests failed; first error: ConnectError: cannot connect "
        f"to http://127.0.0.1:{port}/v1"
    )
    assert "warning" not in done.stderr.lower()


def test_without_model_a_dead_endpoint_is_one_line_before_any_request() -> None:
    port = _closed_port()
    done = bench(
        "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/chat/completions",
        "--num-prompts", "50",
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"streamkit bench: cannot ask http://127.0.0.1:{port}/v1 which model it serves "
        "(GET /models): ConnectError: "
    )


async def _failed_run() -> LoadResult:
    async with Client(
        f"http://127.0.0.1:{_closed_port()}/v1", "x", "m", transport="fast-sse", retry=None
    ) as client:
        return await run_load(client, LoadSpec(num_requests=3, concurrency=3), progress=False)


@pytest.mark.anyio
async def test_client_saturation_is_not_warned_when_nothing_completed(
    server: RunningServer,
) -> None:
    failed = await _failed_run()
    async with Client(server.base_url, model="sim-small", transport="fast-sse") as client:
        spec = LoadSpec(num_requests=2, max_tokens=2, extra_body=json.loads(FAST))
        ok = await run_load(client, spec, progress=False)

    def busy(result: LoadResult) -> list[str]:
        # The same records, as if the loop had been 96% busy and late.
        return _warnings(
            LoadResult(
                spec=result.spec,
                collector=result.collector,
                wall_seconds=1.0,
                client_cpu_seconds=0.96,
                loop_lag={"p99": 0.2},
            )
        )

    assert busy(ok) and busy(ok)[0].startswith("the client used 96% of a core")
    assert busy(failed) == ["3 of 3 requests failed (ConnectError ×3); see requests_df()"]
    assert failed.first_error is not None and failed.first_error.startswith("ConnectError: ")
    assert "ConnectError ×3; first: ConnectError: cannot connect" in failed._repr_html_()


# -- bad flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--backend", "openai"],
            "--backend openai is the completions API; streamkit bench benches streaming chat "
            "completions: use --backend openai-chat --endpoint /v1/chat/completions",
        ),
        (["--backend", "vllm"], "--backend vllm is the completions API"),
        (["--backend", "openai-embeddings"], "the openai-embeddings backend"),
        (["--endpoint", "/v1/completions"], "--endpoint /v1/completions: streamkit bench"),
        (["--endpoint", "/v1/completions"], "or --endpoint /v1/responses"),
        (["--dataset-name", "sharegpt"], "--dataset-name sharegpt is not supported"),
        (["--percentile-metrics", "ttft,goodput"], "--percentile-metrics 'goodput'"),
        (["--metric-percentiles", "50,101"], "--metric-percentiles '101' is invalid"),
        (["--goodput", "e2el"], "--goodput 'e2el' is invalid"),
        (["--header", "x-team=a"], "--header is not supported by streamkit bench"),
        (["--profile"], "--profile is not supported by streamkit bench"),
        (["--ramp-up-strategy", "linear"], "--ramp-up-strategy needs --ramp-up-start-rps"),
        (["--ramp-up-end-rps", "5"], "--ramp-up-start-rps/--ramp-up-end-rps need"),
        (
            [
                "--ramp-up-strategy",
                "exponential",
                "--ramp-up-start-rps",
                "0",
                *["--ramp-up-end-rps", "5"],
            ],
            "ramp start_rps=0.0 is invalid",
        ),
        (["--metadata", "novalue"], "--metadata 'novalue' is invalid: use KEY=VALUE"),
        (["--random-input-len", "4"], "--random-input-len 4 is too small"),
        (["--random-range-ratio", "1"], "--random-range-ratio 1 is invalid"),
        (["--dataset-name", "random", "--prompts", "p.txt"], "--prompts and --dataset-name"),
        (["--random-output-len", "8", "--max-tokens", "8"], "--max-tokens and the random"),
        (["--concurrency", "3", "--max-concurrency", "4"], "--concurrency and --max-concurrency"),
    ],
)
def test_bad_vllm_flags_are_one_line_exit_2(args: list[str], message: str) -> None:
    done = bench("--base-url", "http://127.0.0.1:9", "--model", "m", *args)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("streamkit: error: ") and message in line


def test_an_unknown_backend_is_an_argparse_error() -> None:
    done = bench("--backend", "tgi")
    assert done.returncode == 2
    assert "argument --backend: invalid choice: 'tgi'" in done.stderr


# -- the simulator honours ignore_eos -------------------------------------------------------------


def _post(server: RunningServer, **body: Any) -> httpx.Response:
    payload = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "Explain caching"}],
        "streamkit": {"ttft": 0, "tokens_per_second": 100_000, "length": 5},
        **body,
    }
    return httpx.post(f"{server.base_url}/chat/completions", json=payload, timeout=10)


def test_ignore_eos_runs_the_reply_to_max_tokens(server: RunningServer) -> None:
    natural = _post(server, max_tokens=40).json()
    assert natural["usage"]["completion_tokens"] == 5
    assert natural["choices"][0]["finish_reason"] == "stop"
    for limit in ("max_tokens", "max_completion_tokens"):
        reply = _post(server, ignore_eos=True, **{limit: 40}).json()
        assert reply["usage"]["completion_tokens"] == 40
        assert reply["choices"][0]["finish_reason"] == "length"
        # The first tokens are the natural reply's: only its end is passed over.
        assert reply["choices"][0]["message"]["content"].startswith(
            natural["choices"][0]["message"]["content"]
        )
    assert _post(server, ignore_eos=False, max_tokens=40).json()["usage"] == natural["usage"]


def test_ignore_eos_streams_exactly_max_tokens(server: RunningServer) -> None:
    payload = {"stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    with httpx.stream(
        "POST",
        f"{server.base_url}/chat/completions",
        json={
            "model": "sim-small",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 25,
            "streamkit": {"ttft": 0, "tokens_per_second": 100_000, "length": 3},
            **payload,
        },
        timeout=10,
    ) as response:
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert len(content) == 25 and finish[-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 25


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ignore_eos": True}, "'ignore_eos' generates until the token limit"),
        ({"ignore_eos": "yes", "max_tokens": 3}, "Invalid value for 'ignore_eos'"),
    ],
)
def test_ignore_eos_needs_a_limit_and_a_boolean(
    server: RunningServer, body: dict[str, Any], message: str
) -> None:
    response = _post(server, **body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "ignore_eos"


# -- pure parts ------------------------------------------------------------------------------------


def test_random_prompts_count_exactly_as_the_simulator_bills_them() -> None:
    data = random_dataset(50, input_len=40, output_len=10, range_ratio=0.9, prefix_len=3, seed=1)
    assert len(data.prompts) == len(data.prompt_lens) == len(data.output_lens) == 50
    for prompt, expected in zip(data.prompts, data.prompt_lens, strict=True):
        assert len(tokenize(prompt)) + CHAT_OVERHEAD_TOKENS == expected
    # vLLM's ranges: [floor(L(1-r)), ceil(L(1+r))] around L = 40 - overhead, plus the prefix.
    assert all(3 + 3 <= n - CHAT_OVERHEAD_TOKENS <= 3 + 65 for n in data.prompt_lens)
    assert all(1 <= n <= 19 for n in data.output_lens)
    prefixes = {" ".join(p.split()[:3]) for p in data.prompts}
    assert len(prefixes) == 1  # one shared prefix
    assert data == random_dataset(
        50, input_len=40, output_len=10, range_ratio=0.9, prefix_len=3, seed=1
    )
    assert data != random_dataset(
        50, input_len=40, output_len=10, range_ratio=0.9, prefix_len=3, seed=2
    )
    fixed = random_dataset(4, input_len=7, output_len=5)
    assert fixed.prompt_lens == (7,) * 4 and fixed.output_lens == (5,) * 4


def test_vllm_names_and_statistics() -> None:
    assert [percentile_key(p) for p in (50.0, 99.0, 99.9, 0.5)] == ["p50", "p99", "p99.9", "p0.5"]
    assert (
        result_filename(
            label="openai-chat",
            request_rate=10,
            max_concurrency=None,
            model_id="meta-llama/Llama-3.1-8B",
            date="20250101-000000",
        )
        == "openai-chat-10.0qps-Llama-3.1-8B-20250101-000000.json"
    )
    values = [0.010, 0.013, 0.011, 0.030, 0.012]
    mean, median, std, points = stats_ms(values, (50, 90, 99.9))
    ms = np.array(values) * 1000
    assert mean == pytest.approx(np.mean(ms)) and median == pytest.approx(np.median(ms))
    assert std == pytest.approx(np.std(ms))  # population (ddof=0), numpy's default
    assert [p for p, _ in points] == [50, 90, 99.9]
    assert [v for _, v in points] == pytest.approx([np.percentile(ms, q) for q in (50, 90, 99.9)])
    assert stats_ms([], (99,)) == (0.0, 0.0, 0.0, [(99, 0.0)])  # vLLM's np.mean(x or 0)
    # Peak tokens in a whole second from the first start; peak overlap, an end before a start.
    assert _peaks([0.0, 1.0, 2.0], [1.0, 2.0, 2.5], [0.1, 0.2, 1.1, 2.1, 2.2, 2.3]) == (3.0, 1)
    assert _peaks([0.0, 0.5], [1.0, 1.5], [0.1]) == (1.0, 2)
    assert parse_percentile_metrics("e2el,ttft,ttft") == ("e2el", "ttft")
    assert parse_metric_percentiles("99, 50") == (99.0, 50.0)
    with pytest.raises(UsageError, match="queue_times"):
        parse_percentile_metrics("client_queue_time")


@pytest.mark.parametrize(
    ("base", "endpoint", "expected"),
    [
        ("http://h:8000", "/v1/chat/completions", "http://h:8000/v1"),
        ("http://h:8000/", "v1/chat/completions", "http://h:8000/v1"),
        ("https://h/openai", "/v1/chat/completions/", "https://h/openai/v1"),
        ("http://h:8000/v1", "/chat/completions", "http://h:8000/v1"),
    ],
)
def test_the_api_root_comes_from_vllm_base_url_and_endpoint(
    base: str, endpoint: str, expected: str
) -> None:
    assert api_root(base, endpoint) == expected


@pytest.mark.anyio
async def test_result_table_html_and_vllm_dict_follow_the_selection(
    server: RunningServer,
) -> None:
    async with Client(server.base_url, model="sim-small", transport="fast-sse") as client:
        spec = LoadSpec(
            num_requests=4,
            concurrency=2,
            output_lens=(3, 5),
            extra_body={**json.loads(FAST), "ignore_eos": True},
        )
        result = await run_load(client, spec, progress=False)
    assert list(result.requests_df()["output_tokens"]) == [3, 5, 3, 5]
    table = result.table(percentiles=[50, 99.9], metrics=["ttft", "e2el"])
    assert re.search(r"mean\s+median\s+p50\s+p99\.9\n", table)
    assert re.search(r"^TTFT\s", table, re.M) and re.search(r"^E2EL\s", table, re.M)
    assert not re.search(r"^(TPOT|ITL)\s", table, re.M)
    assert re.search(r"^TPOT\s", result.table(), re.M)  # the default table: every metric
    vllm = result.to_vllm_dict(percentiles=[99.9], metrics=["itl"])
    assert {k for k in vllm if k.endswith("_ms")} == {
        "mean_itl_ms",
        "median_itl_ms",
        "std_itl_ms",
        "p99.9_itl_ms",
    }
    # A closed loop of 2 users is vLLM's infinite rate capped at 2 in flight.
    assert (vllm["request_rate"], vllm["max_concurrency"], vllm["num_prompts"]) == ("inf", 2, 4)
    assert vllm["total_output_tokens"] == 16 and vllm["model_id"] == "sim-small"
    result.target = "<script>alert(1)</script>"
    html = result._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "4 completed, 0 failed of 4" in html
    assert len(repr(result)) < 120 and math.isfinite(result.wall_seconds)
