"""Stream metrics: a collector that keeps every chunk's arrival, and the metric definitions.

A :class:`MetricsCollector` watches any number of chats at once (``observers=[collector]``, or
``observers=[collector.track("label")]`` to name a request). Every event reaches it: nothing is
throttled away. Per request it keeps a compact raw log (each content chunk's arrival time, index
and text length in ``array`` columns, ~16 bytes a chunk), the attempts and retries with their
causes, the end (finish reason, usage) or the error, and render lags that a view reports. All
metrics are computed from that log on demand, so one run can be read under several conventions.
This module does no I/O except the explicit exports (``to_csv``, ``to_parquet``) and takes an
injectable clock.

Definitions (vLLM ``bench serve``, ``vllm/benchmarks/serve.py`` ``calculate_metrics``), all in
seconds from the request's send time (the first attempt's ``StreamStart.sent_at``):

- **TTFB** time to first byte: the response headers of the first accepted attempt.
- **TTFT** time to first token: the first chunk *with a piece* of any kind (reasoning, content or
  a tool-call piece), as vLLM counts it. Role-only chunks, empty deltas and the usage chunk never
  count. **TTFT (answer)** (``ttft_answer``) is the first *content* chunk: after the thinking.
  Without reasoning or tool calls the two are the same.
- **E2E** end-to-end latency: the last piece.
- **N_out** output tokens: ``usage.completion_tokens`` when the server sent usage, else the content
  chunks counted (``output_tokens_source`` says which). vLLM re-tokenizes the text when usage is
  missing; without a tokenizer, a chunk count is the honest fallback (one chunk is one token on
  most servers). Usage stands after a retry: a resumed stream's usage covers the whole logical
  stream (the bundled server's protocol), a restarted one's the kept reply. One rule for this and
  :class:`~streamkit.StreamResult`: :func:`streamkit.result.output_tokens_from`.
- **TPOT** time per output token after the first: ``(E2E − TTFT) / (N_out − 1)``, defined only for
  ``N_out > 1``; undefined requests are *excluded* from TPOT statistics, never counted as 0.
- **ITL** inter-token latency: every gap between consecutive pieces (any kind), pooled across
  requests before percentiles (so long replies weigh more). A chunk carrying several tokens is
  one gap. A gap spanning a retry includes the backoff: it is what a reader waited. After a
  retry that starts over (``StreamRetry.discarded``), metrics follow the kept reply only.
- **tokens/s** of one request: ``(N_out − 1) / (last − first content chunk)``, the decode speed
  (as :attr:`StreamResult.tokens_per_second <streamkit.result.StreamResult.tokens_per_second>`).
- **Run aggregates** over completed requests (vLLM counts only successful ones; failed and
  stopped requests are counted apart, with their error classes): percentiles p50/p90/p95/p99 by
  linear interpolation (numpy's default ``'linear'``, Hyndman & Fan type 7), arithmetic means;
  output throughput ``ΣN_out / duration``; request throughput ``completed / duration``; goodput
  ``requests meeting every given SLO / duration``, where, as in vLLM, a request whose TPOT is
  undefined meets a TPOT SLO. The duration is the run's wall time: first send to last end.

genai-perf and GuideLLM define some of these differently; :func:`genai_perf_metrics`,
:func:`guidellm_metrics` and :func:`compare_conventions` derive their numbers from the same raw
log (see ``docs/metrics.md`` for the sources).

The result objects (:class:`RunSummary`, :class:`ConventionMetrics`, :class:`RequestMetrics`)
have a one-line text repr and, as a notebook cell's value, a compact HTML table.

The package, by concern: :mod:`~streamkit.metrics.recorder` (the raw log),
:mod:`~streamkit.metrics.distributions` (percentiles), :mod:`~streamkit.metrics.summary`
(per-request metrics, run summary, SLOs), :mod:`~streamkit.metrics.conventions`,
:mod:`~streamkit.metrics.tables` (DataFrames and CSV) and :mod:`~streamkit.metrics.collector`.
"""

from __future__ import annotations

from .collector import MetricsCollector
from .conventions import (
    ConventionMetrics,
    compare_conventions,
    genai_perf_metrics,
    guidellm_metrics,
    vllm_metrics,
)
from .distributions import PERCENTILES, Distribution, distribution, percentile, weighted_percentile
from .recorder import RequestRecorder, RetryRecord
from .recorder import RequestStatus as RequestStatus  # a type alias, importable as before
from .summary import SLO, RequestMetrics, RunSummary, request_metrics, summarize
from .tables import Table as Table  # a type alias, importable as before
from .tables import read_csv

__all__ = [
    "PERCENTILES",
    "SLO",
    "ConventionMetrics",
    "Distribution",
    "MetricsCollector",
    "RequestMetrics",
    "RequestRecorder",
    "RetryRecord",
    "RunSummary",
    "compare_conventions",
    "distribution",
    "genai_perf_metrics",
    "guidellm_metrics",
    "percentile",
    "read_csv",
    "request_metrics",
    "summarize",
    "vllm_metrics",
    "weighted_percentile",
]
