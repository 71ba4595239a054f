"""The ``vllm bench serve`` surface of ``streamkit bench``: its flags (taken, ignored with a
reason, or refused), ``--goodput``, ``--metadata`` and the API root from ``--endpoint``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ..metrics import SLO
    from ..transports._responses import Api

# vLLM's --backend names (vllm/benchmarks/lib/endpoint_request_func.py, ASYNC_REQUEST_FUNCS).
VLLM_BACKENDS = (
    "openai-chat",
    "openai",
    "vllm",
    "openai-audio",
    "openai-embeddings",
    "openai-embeddings-chat",
    "openai-embeddings-clip",
    "openai-embeddings-vlm2vec",
    "infinity-embeddings",
    "infinity-embeddings-clip",
    "vllm-pooling",
    "vllm-rerank",
)
CHAT_PATH = "/chat/completions"
RESPONSES_PATH = "/responses"

# vLLM flags accepted and ignored, by the reason given once on stderr.
IGNORED: dict[str, tuple[str, ...]] = {
    "streamkit loads no tokenizer: it counts tokens from the server's usage": (
        "tokenizer",
        "tokenizer_mode",
        "trust_remote_code",
        "skip_tokenizer_init",
    ),
    "they shape how vLLM loads dataset files; the random dataset reads none": (
        "disable_shuffle",
        "no_oversample",
        "skip_chat_template",
        "no_stream",
    ),
    "requests carry no request ids": ("request_id_prefix",),
    "a server that is not ready fails the run at once, in one line naming the cause": (
        "ready_check_timeout_sec",
    ),
}
IGNORED_TAKES_VALUE = {
    "tokenizer",
    "tokenizer_mode",
    "request_id_prefix",
    "ready_check_timeout_sec",
}

# vLLM flags that would change what is measured and that streamkit cannot honour: each is a
# one-line usage error naming it.
REJECTED: dict[str, str] = {
    "header": "extra HTTP headers are not sent (the API key goes in --api-key)",
    "profile": "it drives vLLM's own profiler",
    "logprobs": "streamkit does not read logprobs from the stream",
    "use_beam_search": "beam search is not a streaming chat option",
    "lora_modules": "requests go to one model per endpoint",
    "lora_assignment": "requests go to one model per endpoint",
    "insecure": "TLS certificates are always verified",
    "plot_timeline": "plot the per-request table (--output) or use the Dashboard",
    "timeline_itl_thresholds": "plot the per-request table (--output) or use the Dashboard",
    "plot_dataset_stats": "plot the per-request table (--output)",
    "self_timed": "trace replay is not supported",
    "dataset_path": "only --dataset-name random is built in (your prompts: --prompts FILE)",
    "probe_request_rate": "probe requests are not supported",
    "chat_template_kwargs": "prompts are sent as chat messages; pass fields with --extra-body",
}


def add_vllm_arguments(bench: argparse.ArgumentParser) -> None:
    vllm = bench.add_argument_group(
        "vllm bench serve flags", "accepted as `vllm bench serve` takes them (docs/load.md)"
    )
    vllm.add_argument(
        "--backend",
        choices=VLLM_BACKENDS,
        default=None,
        metavar="NAME",
        help="openai-chat (streamkit benches streaming chat completions)",
    )
    vllm.add_argument(
        "--endpoint",
        metavar="PATH",
        help="the chat completions path joined to --base-url, e.g. /v1/chat/completions",
    )
    vllm.add_argument("--host", help="server host when no --base-url (default 127.0.0.1)")
    vllm.add_argument("--port", type=int, help="server port when no --base-url (default 8000)")
    vllm.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        metavar="C",
        help="cap on requests in flight of an open loop (with no --request-rate: all at once)",
    )
    vllm.add_argument(
        "--dataset-name", metavar="NAME", help="random (synthetic prompts of given lengths)"
    )
    vllm.add_argument(
        "--random-input-len", type=int, metavar="N", help="prompt tokens (default 1024)"
    )
    vllm.add_argument(
        "--random-output-len", type=int, metavar="N", help="completion tokens (default 128)"
    )
    vllm.add_argument(
        "--random-range-ratio",
        type=float,
        metavar="R",
        help="lengths drawn from [L(1-R), L(1+R)] (default 0)",
    )
    vllm.add_argument(
        "--random-prefix-len", type=int, metavar="N", help="shared prefix tokens (default 0)"
    )
    vllm.add_argument("--input-len", type=int, metavar="N", help="= --random-input-len")
    vllm.add_argument("--output-len", type=int, metavar="N", help="= --random-output-len")
    vllm.add_argument(
        "--ignore-eos",
        action="store_true",
        help="send ignore_eos: true (vLLM's extension): every reply runs to its token limit",
    )
    vllm.add_argument(
        "--percentile-metrics",
        metavar="LIST",
        help="metrics with percentiles: some of ttft,tpot,itl,e2el (default ttft,tpot,itl)",
    )
    vllm.add_argument(
        "--metric-percentiles", metavar="LIST", help="percentiles shown, e.g. 50,90,99"
    )
    vllm.add_argument(
        "--ramp-up-strategy",
        choices=("linear", "exponential"),
        help="an open loop whose rate climbs from --ramp-up-start-rps to --ramp-up-end-rps "
        "over the run's requests",
    )
    vllm.add_argument("--ramp-up-start-rps", type=float, metavar="R", help="the ramp's first rate")
    vllm.add_argument("--ramp-up-end-rps", type=float, metavar="R", help="the ramp's last rate")
    vllm.add_argument(
        "--save-result", action="store_true", help="save the result JSON (vLLM's keys too)"
    )
    vllm.add_argument(
        "--save-detailed", action="store_true", help="add per-request arrays to the JSON"
    )
    vllm.add_argument(
        "--append-result", action="store_true", help="append the JSON as a line to the file"
    )
    vllm.add_argument("--result-dir", metavar="DIR", help="where to save (default: here)")
    vllm.add_argument(
        "--result-filename",
        metavar="NAME",
        help="file name (default {label}-{rate}qps[-concurrency{C}]-{model}-{date}.json)",
    )
    vllm.add_argument(
        "--metadata", nargs="*", metavar="KEY=VALUE", help="extra keys saved in the JSON"
    )
    vllm.add_argument("--label", help="the result's label (default: the backend)")
    vllm.add_argument("--served-model-name", metavar="NAME", help="the model name sent in requests")
    for flag, kind in (
        ("--temperature", float),
        ("--top-p", float),
        ("--top-k", int),
        ("--min-p", float),
        ("--frequency-penalty", float),
        ("--presence-penalty", float),
        ("--repetition-penalty", float),
    ):
        vllm.add_argument(flag, type=kind, metavar="X", help="sampling parameter, sent as is")
    # Accepted and ignored (said once on stderr), or refused with a one-line error: hidden.
    for reasons in IGNORED.values():
        for dest in reasons:
            flag = "--" + dest.replace("_", "-")
            if dest in IGNORED_TAKES_VALUE:
                vllm.add_argument(flag, dest=dest, help=argparse.SUPPRESS)
            else:
                vllm.add_argument(flag, dest=dest, action="store_true", help=argparse.SUPPRESS)
    for dest in REJECTED:
        vllm.add_argument(
            "--" + dest.replace("_", "-"),
            dest=dest,
            nargs="*",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
    vllm.add_argument(
        "--no-self-timed", dest="self_timed", nargs="*", default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip


# -- flags → experiment ------------------------------------------------------------------------


def goodput_slo(items: Sequence[str] | None) -> SLO | None:
    from ..metrics import SLO

    if not items:
        return None
    limits: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition(":")
        name = name.strip().lower()
        name = "e2e" if name == "e2el" else name  # vLLM's name for E2E
        if name not in ("ttft", "tpot", "e2e") or not value:
            raise UsageError(
                f"--goodput {item!r} is invalid: use ttft:MS, tpot:MS or e2el:MS (or e2e:MS)"
            )
        try:
            ms = float(value)
        except ValueError:
            raise UsageError(f"--goodput {item!r}: {value!r} is not a number of ms") from None
        limits[name] = ms / 1000
    return SLO(**limits)


def endpoint_api(endpoint: str | None) -> Api:
    """The request dialect an ``--endpoint`` path names: ``"responses"`` for a Responses API
    path (``/v1/responses``), else ``"chat"``."""
    if endpoint is None:
        return "chat"
    path = "/" + endpoint.strip().strip("/")
    return "responses" if path.endswith(RESPONSES_PATH) else "chat"


def api_root(base_url: str, endpoint: str) -> str:
    """The API root clients want (``…/v1``) from vLLM's ``--base-url`` + ``--endpoint``.

    vLLM posts to ``base_url + endpoint``; streamkit's clients append ``/chat/completions`` or
    ``/responses`` (OpenAI's Responses API, see :func:`endpoint_api`) to an API root, so the
    endpoint must be one of those paths.

    Raises:
        UsageError: another endpoint (the completions API…), naming it.
    """
    path = "/" + endpoint.strip().lstrip("/")
    for known in (CHAT_PATH, RESPONSES_PATH):
        if path.rstrip("/").endswith(known):
            return base_url.rstrip("/") + path.rstrip("/")[: -len(known)]
    raise UsageError(
        f"--endpoint {endpoint}: streamkit bench streams chat completions or responses; use "
        "--endpoint /v1/chat/completions (--backend openai-chat) or --endpoint /v1/responses"
    )


def check_vllm_flags(args: argparse.Namespace) -> None:
    """Refuse what cannot be honoured (one line naming the flag); say once what is ignored."""
    for dest, why in REJECTED.items():
        if hasattr(args, dest):
            flag = "--" + dest.replace("_", "-")
            raise UsageError(f"{flag} is not supported by streamkit bench: {why}")
    if args.backend not in (None, "openai-chat"):
        what = (
            "the completions API"
            if args.backend in ("openai", "vllm")
            else f"the {args.backend} backend"
        )
        raise UsageError(
            f"--backend {args.backend} is {what}; streamkit bench benches streaming chat "
            "completions: use --backend openai-chat --endpoint /v1/chat/completions"
        )
    for reason, dests in IGNORED.items():
        given = [d for d in dests if getattr(args, d) not in (None, False)]
        if given:
            flags = ", ".join("--" + d.replace("_", "-") for d in given)
            print(f"streamkit bench: ignoring {flags}: {reason}", file=sys.stderr)


def metadata_pairs(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata {item!r} is invalid: use KEY=VALUE")
        out[key.strip()] = value.strip()
    return out
