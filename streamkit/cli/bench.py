"""``streamkit bench``: a load experiment against any OpenAI-compatible endpoint.

It also takes a ``vllm bench serve`` command line unchanged (``--backend openai-chat``,
``--endpoint``, ``--dataset-name random``, ``--save-result``…; see docs/load.md, "Coming from
vLLM") and saves the result JSON under vLLM's key names beside streamkit's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..endpoint import resolve_endpoint
from ..errors import StreamkitError, UsageError
from ._args import ramp_up
from ._bench_vllm import (
    add_vllm_arguments,
    api_root,
    check_vllm_flags,
    endpoint_api,
    goodput_slo,
    metadata_pairs,
)

if TYPE_CHECKING:  # loaded when a run starts: `streamkit --help` needs none of it
    from ..client import Client
    from ..retry import RetryPolicy

__all__ = ["add_parser", "api_root", "default_transport", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``bench`` subcommand to ``sub`` (an argparse subparsers object)."""
    bench = sub.add_parser(
        "bench",
        help="run a load experiment and report latencies and throughput",
        description="Send many streaming chat completions and report TTFT, TPOT, ITL and E2E "
        "(p50/p90/p99), throughput, goodput and errors by class, as vLLM's bench serve does. "
        "Without --base-url (or --host/--port) it starts the bundled simulator in a child "
        "process. A `vllm bench serve --backend openai-chat` command line works unchanged.",
    )
    bench.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="API root, e.g. http://127.0.0.1:8000/v1; with --endpoint (vLLM's style) the "
        "server root, e.g. http://127.0.0.1:8000; repeat it to route across endpoints",
    )
    bench.add_argument(
        "--routing",
        choices=["round_robin", "least_outstanding"],
        default="round_robin",
        help="how several --base-url endpoints share the load (health-checked, with failover)",
    )
    bench.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="split the load over N Dask worker processes (a local cluster unless --scheduler)",
    )
    bench.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (needs streamkit[distributed])",
    )
    bench.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    bench.add_argument(
        "--model",
        help="model id (default: the first model the server lists at GET /v1/models; the "
        "bundled simulator's sim-small)",
    )
    bench.add_argument(
        "--transport",
        choices=["fast-sse", "generic-sse", "sse", "ws"],
        default=None,
        help="wire (default fast-sse, the leanest client for any SSE endpoint, or generic-sse "
        "when an HTTP(S)_PROXY applies, which fast-sse does not read; sse is the openai SDK's "
        "request path; ws the bundled server's WebSocket)",
    )
    bench.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="C",
        help="most requests in flight: the number of users of a closed loop (default 10), or "
        "a cap on an open loop (default none)",
    )
    bench.add_argument(
        "--num-requests",
        "--num-prompts",
        dest="num_requests",
        type=int,
        default=100,
        metavar="N",
        help="requests (default 100)",
    )
    bench.add_argument(
        "--request-rate",
        type=float,
        default=None,
        metavar="R",
        help="open loop: requests/s arriving at random (Poisson); 'inf' sends all at once; "
        "default: closed loop (or 'inf' with --max-concurrency, as vLLM)",
    )
    bench.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="gamma shape of inter-arrival times: 1 Poisson, <1 burstier (default 1)",
    )
    bench.add_argument(
        "--prompts", metavar="FILE", help="prompts: .txt (one per line), .jsonl or .json"
    )
    bench.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="completion tokens per request (default 128)",
    )
    bench.add_argument(
        "--warmup",
        "--num-warmups",
        dest="warmup",
        type=int,
        default=0,
        metavar="N",
        help="unrecorded requests first (default 0)",
    )
    bench.add_argument(
        "--ramp-up",
        type=ramp_up,
        default="auto",
        metavar="S",
        help="seconds over which the streams start, evenly (a closed loop's users, or an "
        "open loop sent all at once); 0: all at once; default auto: 1 ms per stream past "
        "the first 64, so a burst of opens does not queue into TTFT",
    )
    bench.add_argument("--seed", type=int, default=0, help="arrivals, prompts, request seeds")
    bench.add_argument(
        "--goodput",
        nargs="+",
        metavar="METRIC:MS",
        help="SLOs for goodput in milliseconds, e.g. --goodput ttft:500 tpot:50 (e2el or e2e)",
    )
    bench.add_argument(
        "--extra-body", metavar="JSON", help="extra JSON fields sent with every request"
    )
    bench.add_argument(
        "--max-retries", type=int, default=2, metavar="N", help="retries per request (default 2)"
    )
    bench.add_argument("--timeout", type=float, default=60.0, help="read timeout, seconds")
    bench.add_argument(
        "--output", metavar="FILE", help="per-request results: .csv, .jsonl or .parquet"
    )
    bench.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of a table"
    )
    bench.add_argument(
        "--no-progress", "--disable-tqdm", dest="no_progress", action="store_true",
        help="no progress bar",
    )  # fmt: skip
    add_vllm_arguments(bench)
    bench.set_defaults(run=run)


def _dataset(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
    """``(prompts, output_lens)`` of vLLM's random dataset, or None for streamkit's prompts."""
    from .._vllm import random_dataset

    random_flags = {
        "--random-input-len": args.random_input_len,
        "--random-output-len": args.random_output_len,
        "--random-range-ratio": args.random_range_ratio,
        "--random-prefix-len": args.random_prefix_len,
        "--input-len": args.input_len,
        "--output-len": args.output_len,
    }
    name = args.dataset_name
    given = [flag for flag, value in random_flags.items() if value is not None]
    if name is None and not given:
        return None
    if name not in (None, "random"):
        raise UsageError(
            f"--dataset-name {name} is not supported: streamkit bench has random (synthetic "
            "prompts of given token lengths); for your own prompts use --prompts FILE"
        )
    # vLLM's default dataset is random, so its length flags alone select it.
    if args.prompts:
        raise UsageError(
            f"--prompts and {'--dataset-name random' if name else given[0]} both choose the "
            "prompts: give one"
        )
    if args.max_tokens is not None:
        raise UsageError(
            "--max-tokens and the random dataset both set completion lengths: use "
            "--random-output-len"
        )
    input_len = args.input_len if args.input_len is not None else args.random_input_len
    output_len = args.output_len if args.output_len is not None else args.random_output_len
    data = random_dataset(
        args.num_requests,
        input_len=1024 if input_len is None else input_len,
        output_len=128 if output_len is None else output_len,
        range_ratio=args.random_range_ratio or 0.0,
        prefix_len=args.random_prefix_len or 0,
        seed=args.seed,
    )
    return data.prompts, data.output_lens


def _extra_body(args: argparse.Namespace, random_data: bool) -> dict[str, Any] | None:
    """vLLM's request body additions: ignore_eos, sampling parameters, then --extra-body (which
    wins, as in vLLM)."""
    body: dict[str, Any] = {}
    # vLLM sets ignore_eos for the random dataset on OpenAI-compatible backends, so that every
    # reply runs to its drawn length (vllm/benchmarks/serve.py, main_async).
    if args.ignore_eos or random_data:
        body["ignore_eos"] = True
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
    ):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--extra-body is not valid JSON: {exc}") from exc
        if not isinstance(extra, dict):
            raise UsageError("--extra-body must be a JSON object")
        body.update(extra)
    return body or None


def _urls(args: argparse.Namespace) -> list[str]:
    """The API roots to bench (empty: the bundled simulator)."""
    urls: list[str] = list(args.base_url or [])
    if not urls and (args.host is not None or args.port is not None):
        host = args.host or "127.0.0.1"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        # vLLM's --host/--port name the server; its API lives under --endpoint (or /v1).
        urls = [f"http://{host}:{8000 if args.port is None else args.port}"]
        if args.endpoint is None:
            urls = [urls[0] + "/v1"]
    if args.endpoint is not None:
        roots = [api_root(url, args.endpoint) for url in urls]
        if not urls:
            api_root("", args.endpoint)  # the simulator serves /v1/chat/completions: check only
        return roots
    return urls


def default_transport(urls: Sequence[str]) -> str:
    """fast-sse, unless a proxy from the environment applies to an endpoint (it reads none)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or ""):
            print(
                f"streamkit bench: {parts.scheme} proxy set for {parts.hostname}: using "
                "--transport generic-sse (fast-sse does not use proxies)",
                file=sys.stderr,
            )
            return "generic-sse"
    return "fast-sse"


# -- running -----------------------------------------------------------------------------------


class _DiscoveryFailed(Exception):
    """The endpoint could not say which model it serves: one line, exit 1."""


async def _resolve_models(clients: Sequence[Client]) -> str | None:
    """Ask each client's endpoint for its model once, before the run (``GET /v1/models``), so a
    dead endpoint is one line, not a run of failed requests. Returns the first model."""
    first = None
    for client in clients:
        asked = client.model is None
        try:
            model = await client.resolve_model()
        except UsageError:
            raise
        except StreamkitError as exc:
            raise _DiscoveryFailed(
                f"cannot ask {client.base_url} which model it serves (GET /models): "
                f"{exc.kind}: {' '.join(str(exc).split())}"
            ) from exc
        if asked and len(client.served_models or ()) <= 1:  # several: the client logs its choice
            print(
                f"streamkit bench: no --model given: using {model}, served by {client.base_url}",
                file=sys.stderr,
            )
        first = first or model
    return first


async def _bench_run(
    args: argparse.Namespace,
    urls: list[str],
    api_key: str | None,
    model: str | None,
    retry: RetryPolicy | None,
    spec: Any,
    progress: Any,
) -> tuple[Any, str | None]:
    from ..balance import LoadBalancer
    from ..client import Client
    from ..load import run_load

    clients = [
        Client(
            url,
            api_key,
            model,
            timeout=args.timeout,
            transport=args.transport,
            retry=retry,
            api=endpoint_api(args.endpoint),
        )
        for url in urls
    ]
    try:
        served = await _resolve_models(clients)
    except BaseException:
        for client in clients:
            await client.aclose()
        raise
    if len(clients) == 1:
        async with clients[0] as client:
            return await run_load(client, spec, progress=progress), served
    # Endpoints are named by host:port, the name the report and the endpoint column show.
    named = {urlsplit(url).netloc or url: client for url, client in zip(urls, clients, strict=True)}
    if len(named) < len(clients):
        for client in clients:
            await client.aclose()
        raise UsageError("the same --base-url is given twice")
    async with LoadBalancer(named, strategy=args.routing) as balancer:
        try:
            result = await run_load(balancer, spec, progress=progress)
        finally:
            for client in clients:
                await client.aclose()
    per_endpoint = result.requests_df()["endpoint"].value_counts().to_dict()
    counts = ", ".join(f"{name} ×{count}" for name, count in sorted(per_endpoint.items()))
    result.target = f"{len(clients)} endpoints, {args.routing} (served: {counts})"
    return result, served


async def _discover_one(url: str, api_key: str | None, read_timeout: float) -> str | None:
    from ..client import Client

    async with Client(url, api_key, None, timeout=read_timeout, transport="generic-sse") as client:
        return await _resolve_models([client])


def _save_result(
    args: argparse.Namespace,
    result: Any,
    *,
    model_id: str,
    percentiles: Sequence[float] | None,
    metrics: Sequence[str] | None,
    metadata: dict[str, str],
) -> Path:
    """Write the result JSON as ``vllm bench serve --save-result`` names and shapes it, with
    streamkit's own figures beside vLLM's keys."""
    from .._vllm import (
        DEFAULT_METRIC_PERCENTILES,
        DEFAULT_PERCENTILE_METRICS,
        result_filename,
    )

    date = datetime.now().strftime("%Y%m%d-%H%M%S")
    backend = args.backend or "openai-chat"
    vllm = result.to_vllm_dict(
        percentiles=percentiles or DEFAULT_METRIC_PERCENTILES,
        metrics=metrics or DEFAULT_PERCENTILE_METRICS,
        detailed=args.save_detailed,
        backend=backend,
        label=args.label,
        model_id=model_id,
        tokenizer_id=args.tokenizer,
        date=date,
        metadata=metadata,
    )
    out = dict(vllm)
    for key, value in result.to_dict().items():
        if key == "errors" and "errors" in vllm:
            key = "errors_by_class"  # vLLM's per-request list keeps the name
        out.setdefault(key, value)
    spec = result.spec
    rate = math.inf if spec.request_rate is None else spec.request_rate
    name = args.result_filename or result_filename(
        label=args.label or backend,
        request_rate=rate,
        max_concurrency=spec.concurrency,
        model_id=model_id,
        date=date,
    )
    path = Path(args.result_dir or ".") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+" if args.append_result else "w", encoding="utf-8") as file:
        if args.append_result and file.tell() != 0:
            file.write("\n")
        json.dump(out, file)
    return path


def run(args: argparse.Namespace) -> int:
    """Run the experiment and print its report; 1 when any request failed."""
    from .._vllm import parse_metric_percentiles, parse_percentile_metrics
    from ..load import LoadSpec, Ramp, load_prompts

    check_vllm_flags(args)
    if args.max_retries < 0:
        raise UsageError(f"--max-retries {args.max_retries} is invalid: must be 0 or more")
    metrics = parse_percentile_metrics(args.percentile_metrics) if args.percentile_metrics else None
    percentiles = (
        parse_metric_percentiles(args.metric_percentiles) if args.metric_percentiles else None
    )
    metadata = metadata_pairs(args.metadata)
    dataset = _dataset(args)
    extra_body = _extra_body(args, dataset is not None)
    concurrency = args.concurrency
    request_rate = args.request_rate
    if args.max_concurrency is not None:
        if concurrency is not None and concurrency != args.max_concurrency:
            raise UsageError(
                "--concurrency and --max-concurrency differ: give one (--max-concurrency caps "
                "an open loop, at --request-rate or all at once)"
            )
        # vLLM: a cap on requests in flight of an open loop whose rate defaults to infinite.
        concurrency = args.max_concurrency
        if request_rate is None:
            request_rate = math.inf
    if concurrency is None and request_rate is None:
        concurrency = 10
    prompts: tuple[Any, ...] | None = load_prompts(args.prompts) if args.prompts else None
    output_lens = None
    if dataset is not None:
        prompts, output_lens = dataset
    ramp = None
    if args.ramp_up_strategy is not None:
        if args.ramp_up_start_rps is None or args.ramp_up_end_rps is None:
            raise UsageError("--ramp-up-strategy needs --ramp-up-start-rps and --ramp-up-end-rps")
        ramp = Ramp(args.ramp_up_strategy, args.ramp_up_start_rps, args.ramp_up_end_rps)
        if request_rate is None:
            request_rate = math.inf
    elif args.ramp_up_start_rps is not None or args.ramp_up_end_rps is not None:
        raise UsageError("--ramp-up-start-rps/--ramp-up-end-rps need --ramp-up-strategy")
    spec = LoadSpec(
        num_requests=args.num_requests,
        concurrency=concurrency,
        request_rate=request_rate,
        burstiness=args.burstiness,
        prompts=prompts,
        max_tokens=128 if args.max_tokens is None else args.max_tokens,
        output_lens=output_lens,
        warmup=args.warmup,
        seed=args.seed,
        model=args.served_model_name,
        extra_body=extra_body,
        slo=goodput_slo(args.goodput),
        keep_text=args.save_detailed,
        ramp_up=args.ramp_up,
        ramp=ramp,
    )
    if args.output and not args.output.endswith((".csv", ".jsonl", ".parquet")):
        raise UsageError(f"--output {args.output}: write results as .csv, .jsonl or .parquet")
    urls = _urls(args)
    distributed = args.workers is not None or args.scheduler is not None
    if distributed and endpoint_api(args.endpoint) == "responses":
        raise UsageError("--endpoint /v1/responses is benched in one process: drop --workers")
    if len(urls) > 1 and distributed:
        raise UsageError("route across several --base-url or split over --workers, not both")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers} is invalid: must be 1 or more")
    progress: Any = False if args.no_progress else "auto"
    server = None
    if not urls and (configured := resolve_endpoint()).base_url is not None:
        # No endpoint on the command line: the environment's, as the openai SDK would use.
        urls = [configured.base_url]
        print(
            f"streamkit bench: endpoint from ${configured.base_url_from}: {urls[0]}",
            file=sys.stderr,
        )
    if not urls:
        from ..server.process import serve_in_subprocess

        # A child process: the simulator's work must not share this process's GIL and core.
        server = serve_in_subprocess()
        urls = [server.base_url]
    if args.transport is None:
        args.transport = default_transport(urls)
    # The key and model follow the one precedence (argument > STREAMKIT_* > OPENAI_*); the
    # bundled simulator gets no key from the environment.
    env = resolve_endpoint(None if server else urls[0], args.api_key, args.model)
    api_key = args.api_key or "x" if server else env.api_key
    model = env.model or ("sim-small" if server else None)
    from ..retry import RetryPolicy

    retry = RetryPolicy(max_attempts=args.max_retries + 1) if args.max_retries else None
    try:
        if distributed:
            from ..distributed import run_load_distributed

            if model is None:
                model = asyncio.run(_discover_one(urls[0], api_key, args.timeout))
            result = run_load_distributed(
                spec,
                base_url=urls[0],
                api_key=api_key,
                model=model,
                transport=args.transport,
                dask_client=args.scheduler,
                workers=args.workers or 2,
                progress=progress,
            )
        else:
            result, served = asyncio.run(
                _bench_run(args, urls, api_key, model, retry, spec, progress)
            )
            model = model or served
    except _DiscoveryFailed as exc:
        print(f"streamkit bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    if server is not None:
        result.target += " (bundled simulator)"
    if args.output:
        result.save(args.output)
    if args.save_result or args.append_result:
        path = _save_result(
            args,
            result,
            model_id=args.model or model or "",
            percentiles=percentiles,
            metrics=metrics,
            metadata=metadata,
        )
        print(f"streamkit bench: result saved to {path}", file=sys.stderr)
    s = result.summary
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif s.completed or not s.failed:
        print(result.table(percentiles, metrics))
    if s.failed:
        which = "all" if s.completed == 0 else f"{s.failed} of"
        print(
            f"streamkit bench: {which} {s.requests} requests failed; first error: "
            f"{result.first_error}",
            file=sys.stderr,
        )
        return 1
    return 0
