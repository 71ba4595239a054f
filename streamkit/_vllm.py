"""vLLM ``bench serve`` compatibility: its random dataset, its result keys and its file names.

Pure functions, no I/O. ``streamkit bench`` accepts a ``vllm bench serve`` command line and saves
the result JSON under vLLM's key names (``vllm/benchmarks/serve.py``: ``calculate_metrics``,
``benchmark`` and ``main_async``; the random dataset in ``vllm/benchmarks/datasets/random.py``),
so dashboards built for vLLM's files read streamkit's. Where vLLM's figures come from its own
client, these come from streamkit's records, under streamkit's definitions (docs/metrics.md).

vLLM's statistics, reproduced here: latencies in milliseconds; ``mean`` the arithmetic mean,
``median`` numpy's median (the linear-interpolation p50), ``std`` numpy's default population
standard deviation (``ddof=0``), ``p{NN}`` ``numpy.percentile`` (linear); an empty sample
reports 0 for each, as vLLM's ``np.mean(values or 0)`` does.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .metrics import percentile

if TYPE_CHECKING:
    from .load import LoadResult
    from .metrics import RequestMetrics

__all__ = [
    "CHAT_OVERHEAD_TOKENS",
    "DEFAULT_METRIC_PERCENTILES",
    "DEFAULT_PERCENTILE_METRICS",
    "DETAILED_KEYS",
    "PERCENTILE_METRICS",
    "RandomDataset",
    "metric_samples",
    "parse_metric_percentiles",
    "parse_percentile_metrics",
    "percentile_key",
    "random_dataset",
    "result_filename",
    "stats_ms",
    "vllm_result",
]

PERCENTILE_METRICS = ("ttft", "tpot", "itl", "e2el")
"""The metrics ``--percentile-metrics`` may name (vLLM's ``e2el`` is streamkit's ``e2e``)."""
DEFAULT_PERCENTILE_METRICS = ("ttft", "tpot", "itl")
"""vLLM's default for generative models."""
DEFAULT_METRIC_PERCENTILES = (99.0,)
"""vLLM's default ``--metric-percentiles``."""
DETAILED_KEYS = (
    "input_lens",
    "output_lens",
    "start_times",
    "ttfts",
    "itls",
    "generated_texts",
    "errors",
)
"""Per-request arrays vLLM saves only with ``--save-detailed``."""
CHAT_OVERHEAD_TOKENS = 6
"""Prompt tokens the bundled simulator counts for one user message beyond its text: 3 of
framing for the message and 3 priming the reply (OpenAI's accounting, as the simulator bills it).
The random dataset subtracts them so ``usage.prompt_tokens`` equals ``--random-input-len``."""

_MS = 1000.0


# -- flags -------------------------------------------------------------------------------------


def parse_percentile_metrics(text: str) -> tuple[str, ...]:
    """``"ttft,tpot,itl,e2el"`` → the metric names, checked (vLLM's ``--percentile-metrics``).

    Raises:
        UsageError: an empty list or a name streamkit does not report.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise UsageError("--percentile-metrics is empty: name some of ttft,tpot,itl,e2el")
    for name in names:
        if name not in PERCENTILE_METRICS:
            raise UsageError(
                f"--percentile-metrics {name!r} is not supported: use some of "
                + ",".join(PERCENTILE_METRICS)
                + (" (per-request queue times are saved as queue_times)" if "queue" in name else "")
            )
    return tuple(dict.fromkeys(names))


def parse_metric_percentiles(text: str) -> tuple[float, ...]:
    """``"50,90,99"`` → the percentiles, checked (vLLM's ``--metric-percentiles``).

    Raises:
        UsageError: an empty list, or a value that is not a number from 0 to 100.
    """
    out: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"--metric-percentiles {item!r} is not a number") from None
        if not 0 <= value <= 100:
            raise UsageError(f"--metric-percentiles {item!r} is invalid: must be from 0 to 100")
        out.append(value)
    if not out:
        raise UsageError("--metric-percentiles is empty: give e.g. 50,90,99")
    return tuple(dict.fromkeys(out))


def percentile_key(p: float) -> str:
    """vLLM's name for a percentile in result keys: ``99`` → ``p99``, ``99.9`` → ``p99.9``."""
    return f"p{int(p)}" if int(p) == p else f"p{p}"


def result_filename(
    *,
    label: str,
    request_rate: float,
    max_concurrency: int | None,
    model_id: str,
    date: str,
) -> str:
    """vLLM's default result file name:
    ``{label}-{rate}qps[-concurrency{C}]-{model's last path part}-{date}.json``.

    The rate is written as Python writes a float (``inf``, ``10.0``), as vLLM does.
    """
    concurrency = f"-concurrency{max_concurrency}" if max_concurrency is not None else ""
    base_model = model_id.split("/")[-1]
    return f"{label}-{float(request_rate)}qps{concurrency}-{base_model}-{date}.json"


# -- the random dataset ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RandomDataset:
    """What :func:`random_dataset` drew, one entry per request.

    Attributes:
        prompts: the prompt texts.
        prompt_lens: each prompt's ``usage.prompt_tokens`` on the bundled simulator.
        output_lens: each request's completion limit (``max_tokens``).
    """

    prompts: tuple[str, ...]
    prompt_lens: tuple[int, ...]
    output_lens: tuple[int, ...]


_VOCABULARY: tuple[str, ...] | None = None


def _vocabulary() -> tuple[str, ...]:
    """Lower-case words of the simulator's prose that its tokenizer keeps whole (one piece
    each, also after a space), sorted: the random dataset's "token ids"."""
    global _VOCABULARY
    if _VOCABULARY is None:
        from .server.textgen import THEMES, tokenize

        text = " ".join(s for sentences in THEMES.values() for s in sentences).lower()
        words = set(re.findall("[a-z]+", text))
        _VOCABULARY = tuple(
            sorted(w for w in words if len(w) >= 2 and len(tokenize(f"{w} {w}")) == 2)
        )
    return _VOCABULARY


def random_dataset(
    n: int,
    *,
    input_len: int = 1024,
    output_len: int = 128,
    range_ratio: float = 0.0,
    prefix_len: int = 0,
    seed: int = 0,
    overhead: int = CHAT_OVERHEAD_TOKENS,
) -> RandomDataset:
    """vLLM's random dataset, for a server without a client-side tokenizer.

    As vLLM's ``RandomDataset``: each request's input length is drawn uniformly from the integers
    in ``[floor(L·(1−r)), ceil(L·(1+r))]`` (``L = input_len − overhead``, as vLLM subtracts the
    tokenizer's special tokens), its output length likewise around ``output_len`` (at least 1),
    a fixed random prefix of ``prefix_len`` tokens comes first, and the rest is a run of
    consecutive vocabulary entries from a random offset. The "tokens" are words the bundled
    simulator's tokenizer counts as one each, so there ``usage.prompt_tokens`` is exactly
    ``prefix_len + input_len`` for ``range_ratio=0`` (``overhead`` is its chat framing).
    Other servers' tokenizers split words their own way: the count is then near, not exact.

    Args:
        n: how many requests.
        input_len: ``--random-input-len``: prompt tokens per request, framing included.
        output_len: ``--random-output-len``: completion tokens per request.
        range_ratio: ``--random-range-ratio``, in ``[0, 1)``.
        prefix_len: ``--random-prefix-len``: tokens of one prefix shared by every prompt.
        seed: seeds every draw.
        overhead: prompt tokens the server adds to a one-message conversation.

    Raises:
        UsageError: a length out of range (naming the flag).
    """
    if not 0 <= range_ratio < 1:
        raise UsageError(f"--random-range-ratio {range_ratio:g} is invalid: must be in [0, 1)")
    for flag, value, low in (
        ("--random-input-len", input_len, 1),
        ("--random-output-len", output_len, 1),
        ("--random-prefix-len", prefix_len, 0),
    ):
        if value < low:
            raise UsageError(f"{flag} {value} is invalid: must be {low} or more")
    real_input = max(0, input_len - overhead)
    input_low = math.floor(real_input * (1 - range_ratio))
    input_high = math.ceil(real_input * (1 + range_ratio))
    if prefix_len + input_low < 1:
        raise UsageError(
            f"--random-input-len {input_len} is too small: a chat message's framing alone counts "
            f"{overhead} prompt tokens on the bundled server, so ask for at least {overhead + 1} "
            "(or add --random-prefix-len)"
        )
    output_low = max(math.floor(output_len * (1 - range_ratio)), 1)
    output_high = max(math.ceil(output_len * (1 + range_ratio)), 1)
    rng = random.Random(seed)
    vocab = _vocabulary()
    input_lens = [rng.randint(input_low, input_high) for _ in range(n)]
    output_lens = tuple(rng.randint(output_low, output_high) for _ in range(n))
    offsets = [rng.randrange(len(vocab)) for _ in range(n)]
    prefix = [vocab[rng.randrange(len(vocab))] for _ in range(prefix_len)]
    prompts = []
    for i in range(n):
        words = prefix + [vocab[(offsets[i] + i + j) % len(vocab)] for j in range(input_lens[i])]
        prompts.append(" ".join(words))
    prompt_lens = tuple(overhead + prefix_len + length for length in input_lens)
    return RandomDataset(tuple(prompts), prompt_lens, output_lens)


# -- the result --------------------------------------------------------------------------------


def stats_ms(
    values: Sequence[float], percentiles: Iterable[float]
) -> tuple[float, float, float, list[tuple[float, float]]]:
    """Mean, median, population std and percentiles of ``values`` (seconds), in ms, as vLLM
    computes them; 0 for each when there are no values."""
    if not values:
        return 0.0, 0.0, 0.0, [(p, 0.0) for p in percentiles]
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    median = percentile(values, 50) or 0.0
    return (
        mean * _MS,
        median * _MS,
        std * _MS,
        [(p, (percentile(values, p) or 0.0) * _MS) for p in percentiles],
    )


def _peaks(
    starts: Sequence[float], ends: Sequence[float], tokens: Sequence[float]
) -> tuple[float, int]:
    """vLLM's peak output tokens in any whole second from the first start, and the peak number
    of requests in flight (half-open intervals: an end before a start at the same instant)."""
    if not starts:
        return 0.0, 0
    first = min(starts)
    buckets = [0] * (math.ceil(max(ends) - first) + 1)
    for t in tokens:
        second = int(t - first)
        if 0 <= second < len(buckets):
            buckets[second] += 1
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends])
    flight = peak = 0
    for _, delta in events:
        flight += delta
        peak = max(peak, flight)
    return float(max(buckets)), peak


def metric_samples(completed: Iterable[RequestMetrics]) -> dict[str, list[float]]:
    """Each metric's values in seconds over completed requests, by vLLM's metric names (ITL
    pooled over requests; TPOT only where defined, as vLLM's ``tpots``)."""
    done = list(completed)
    return {
        "ttft": [m.ttft for m in done if m.ttft is not None],
        "tpot": [m.tpot for m in done if m.tpot is not None],
        "itl": [gap for m in done for gap in m.itl],
        "e2el": [m.e2e for m in done if m.e2e is not None],
    }


def vllm_result(
    result: LoadResult,
    *,
    percentiles: Sequence[float],
    metrics: Sequence[str],
    detailed: bool,
    backend: str,
    label: str | None,
    model_id: str | None,
    tokenizer_id: str | None,
    date: str,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The run as ``vllm bench serve --save-result`` writes it (see :meth:`LoadResult.to_vllm_dict
    <streamkit.load.LoadResult.to_vllm_dict>` for the arguments; their defaults live there, in
    the one public signature)."""
    for name in metrics:
        if name not in PERCENTILE_METRICS:
            raise UsageError(f"metric {name!r} is invalid: use some of {PERCENTILE_METRICS}")
    spec = result.spec
    summary = result.summary
    records = result.collector.requests
    per_request = result.collector.request_metrics()
    completed = [m for m in per_request if m.status == "completed"]
    duration = summary.duration
    origin = min((r.send_time for r in records), default=0.0)

    def per_second(count: float) -> float:
        return count / duration if duration > 0 else 0.0

    total_input = sum(m.prompt_tokens or 0 for m in completed)
    total_output = sum(m.output_tokens for m in completed)
    closed = spec.request_rate is None
    rate = math.inf if closed else spec.request_rate
    assert rate is not None
    if model_id is None:
        model_id = spec.model or next((m.model for m in per_request if m.model), "")
    out: dict[str, Any] = {
        "date": date,
        "endpoint_type": backend,
        "backend": backend,
        "label": label,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id,
        "num_prompts": spec.num_requests,
    }
    out.update(metadata or {})
    out.update(
        {
            # A closed loop of C users is vLLM's infinite rate capped at C in flight.
            "request_rate": "inf" if math.isinf(rate) else rate,
            "burstiness": spec.burstiness,
            "max_concurrency": spec.concurrency,
            "duration": duration,
            "completed": len(completed),
            "failed": len(per_request) - len(completed),
            "total_input_tokens": total_input,
            "total_output_tokens": total_output,
            "request_throughput": per_second(len(completed)),
            "request_goodput": (
                per_second(summary.good_requests or 0) if spec.slo is not None else None
            ),
            "output_throughput": per_second(total_output),
            "total_token_throughput": per_second(total_input + total_output),
        }
    )
    if detailed:

        def error_line(kind: str | None, message: str | None) -> str:
            return "" if kind is None else f"{kind}: {message}"

        out.update(
            {
                "input_lens": [m.prompt_tokens or 0 for m in per_request],
                "output_lens": [m.output_tokens if m.ok else 0 for m in per_request],
                "ttfts": [m.ttft or 0.0 for m in per_request],
                "itls": [list(m.itl) for m in per_request],
                "start_times": [m.sent_at - origin for m in per_request],
                "generated_texts": [str(m.tags.get("text", "")) for m in per_request],
                "errors": [
                    "" if m.ok else error_line(m.error_kind, m.error_message) for m in per_request
                ],
            }
        )

    def queue_time(m: Any) -> float:
        wait = m.tags.get("queue_wait")
        if isinstance(wait, int | float):
            return float(wait)
        # A closed loop's request i waits, as at an infinite rate under the cap, from the
        # start until a user is free: its send time.
        return m.sent_at - origin if closed else 0.0

    ends = [m.sent_at + (m.e2e or 0.0) for m in completed]
    tokens = [t for m, r in zip(per_request, records, strict=True) if m.ok for t in r.kept_times()]
    peak_tokens, peak_flight = _peaks([m.sent_at for m in completed], ends, tokens)
    out.update(
        {
            "latencies": [(m.e2e or 0.0) if m.ok else 0.0 for m in per_request],
            "queue_times": [queue_time(m) for m in per_request],
            "max_output_tokens_per_s": peak_tokens,
            "max_concurrent_requests": peak_flight,
            "rtfx": 0.0,
        }
    )
    samples = metric_samples(completed)
    for name in metrics:
        mean, median, std, points = stats_ms(samples[name], percentiles)
        out[f"mean_{name}_ms"] = mean
        out[f"median_{name}_ms"] = median
        out[f"std_{name}_ms"] = std
        for p, value in points:
            out[f"{percentile_key(p)}_{name}_ms"] = value
    return out
