"""``streamkit bench``: a load experiment against any OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..client import Client
from ..errors import UsageError
from ..metrics import SLO
from ..retry import RetryPolicy

__all__ = ["add_parser", "default_transport", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``bench`` subcommand to ``sub`` (an argparse subparsers object)."""
    bench = sub.add_parser(
        "bench",
        help="run a load experiment and report latencies and throughput",
        description="Send many streaming chat completions and report TTFT, TPOT, ITL and E2E "
        "(p50/p90/p99), throughput, goodput and errors by class, as vLLM's bench serve does. "
        "Without --base-url it starts the bundled simulator in a child process.",
    )
    bench.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="API root, e.g. http://127.0.0.1:8000/v1; repeat it to route across endpoints",
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
    bench.add_argument("--model", help="model id (bundled simulator default: sim-small)")
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
        "--num-requests", type=int, default=100, metavar="N", help="requests (default 100)"
    )
    bench.add_argument(
        "--request-rate",
        type=float,
        default=None,
        metavar="R",
        help="open loop: requests/s arriving at random (Poisson); 'inf' sends all at once; "
        "default: closed loop",
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
        "--max-tokens", type=int, default=128, help="completion tokens per request (default 128)"
    )
    bench.add_argument(
        "--warmup", type=int, default=0, metavar="N", help="unrecorded requests first (default 0)"
    )
    bench.add_argument("--seed", type=int, default=0, help="arrivals, prompts, request seeds")
    bench.add_argument(
        "--goodput",
        nargs="+",
        metavar="METRIC:MS",
        help="SLOs for goodput in milliseconds, e.g. --goodput ttft:500 tpot:50 (e2e too)",
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
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(run=run)


def _goodput(items: Sequence[str] | None) -> SLO | None:
    if not items:
        return None
    limits: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition(":")
        name = name.strip().lower()
        if name not in ("ttft", "tpot", "e2e") or not value:
            raise UsageError(f"--goodput {item!r} is invalid: use ttft:MS, tpot:MS or e2e:MS")
        try:
            ms = float(value)
        except ValueError:
            raise UsageError(f"--goodput {item!r}: {value!r} is not a number of ms") from None
        limits[name] = ms / 1000
    return SLO(**limits)


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


async def _bench_run(
    args: argparse.Namespace,
    urls: list[str],
    api_key: str | None,
    model: str | None,
    retry: RetryPolicy | None,
    spec: Any,
    progress: Any,
) -> Any:
    from ..balance import LoadBalancer
    from ..load import run_load

    clients = [
        Client(url, api_key, model, timeout=args.timeout, transport=args.transport, retry=retry)
        for url in urls
    ]
    if len(clients) == 1:
        async with clients[0] as client:
            return await run_load(client, spec, progress=progress)
    # Endpoints are named by host:port, the name the report and the endpoint column show.
    named = {urlsplit(url).netloc or url: client for url, client in zip(urls, clients, strict=True)}
    if len(named) < len(clients):
        raise UsageError("the same --base-url is given twice")
    async with LoadBalancer(named, strategy=args.routing) as balancer:
        try:
            result = await run_load(balancer, spec, progress=progress)
        finally:
            for client in clients:
                await client.aclose()
    per_endpoint = result.requests_df()["endpoint"].value_counts().to_dict()
    served = ", ".join(f"{name} ×{count}" for name, count in sorted(per_endpoint.items()))
    result.target = f"{len(clients)} endpoints, {args.routing} (served: {served})"
    return result


def run(args: argparse.Namespace) -> int:
    """Run the experiment and print its report; 1 when any request failed."""
    from ..load import LoadSpec, load_prompts

    if args.max_retries < 0:
        raise UsageError(f"--max-retries {args.max_retries} is invalid: must be 0 or more")
    extra_body = None
    if args.extra_body:
        try:
            extra_body = json.loads(args.extra_body)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--extra-body is not valid JSON: {exc}") from exc
        if not isinstance(extra_body, dict):
            raise UsageError("--extra-body must be a JSON object")
    concurrency = args.concurrency
    if concurrency is None and args.request_rate is None:
        concurrency = 10
    spec = LoadSpec(
        num_requests=args.num_requests,
        concurrency=concurrency,
        request_rate=args.request_rate,
        burstiness=args.burstiness,
        prompts=load_prompts(args.prompts) if args.prompts else None,
        max_tokens=args.max_tokens,
        warmup=args.warmup,
        seed=args.seed,
        model=args.model,
        extra_body=extra_body,
        slo=_goodput(args.goodput),
    )
    if args.output and not args.output.endswith((".csv", ".jsonl", ".parquet")):
        raise UsageError(f"--output {args.output}: write results as .csv, .jsonl or .parquet")
    urls: list[str] = args.base_url or []
    distributed = args.workers is not None or args.scheduler is not None
    if len(urls) > 1 and distributed:
        raise UsageError("route across several --base-url or split over --workers, not both")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers} is invalid: must be 1 or more")
    progress: Any = False if args.no_progress else "auto"
    server = None
    if not urls:
        from ..server.process import serve_in_subprocess

        # A child process: the simulator's work must not share this process's GIL and core.
        server = serve_in_subprocess()
        urls = [server.base_url]
    if args.transport is None:
        args.transport = default_transport(urls)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or ("x" if server else None)
    model = args.model or ("sim-small" if server else None)
    retry = RetryPolicy(max_attempts=args.max_retries + 1) if args.max_retries else None
    try:
        if distributed:
            from ..distributed import run_load_distributed

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
            result = asyncio.run(_bench_run(args, urls, api_key, model, retry, spec, progress))
    finally:
        if server is not None:
            server.stop()
    if server is not None:
        result.target += " (bundled simulator)"
    if args.output:
        result.save(args.output)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.table())
    return 0 if result.summary.failed == 0 else 1
