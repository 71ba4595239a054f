"""The metrics as DataFrames (requests, chunks, summary) and their CSV column types.

pandas and numpy are imported inside the functions: only asking for a table loads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .recorder import RequestRecorder
from .summary import SLO, RunSummary, request_metrics

if TYPE_CHECKING:
    import pandas as pd

Table = Literal["requests", "chunks", "summary"]

_REQUEST_DTYPES: dict[str, str] = {
    "request": "int64",
    "label": "str",
    "model": "str",
    "status": "str",
    "finish_reason": "str",
    "error": "str",
    "error_message": "str",
    "sent_at": "float64",
    "first_byte_at": "float64",
    "first_token_at": "float64",
    "last_token_at": "float64",
    "ended_at": "float64",
    "ttfb": "float64",
    "ttft": "float64",
    "ttft_answer": "float64",
    "tpot": "float64",
    "e2e": "float64",
    "itl_mean": "float64",
    "itl_max": "float64",
    "output_tokens": "int64",
    "output_tokens_source": "str",
    "prompt_tokens": "Int64",
    "chunks": "int64",
    "reasoning_chunks": "int64",
    "tool_call_chunks": "int64",
    "chars": "int64",
    "tokens_per_second": "float64",
    "retries": "int64",
    "retry_causes": "str",
    "render_lag_mean": "float64",
    "render_lag_max": "float64",
    "endpoint": "str",
}
_CHUNK_DTYPES: dict[str, str] = {
    "request": "int64",
    "attempt": "int64",
    "index": "int64",
    "time": "float64",
    "since_send": "float64",
    "gap": "float64",
    "chars": "int64",
    "kept": "bool",
}
_SUMMARY_COLUMNS = ("count", "mean", "p50", "p90", "p95", "p99", "max")


def requests_frame(
    recs: Sequence[RequestRecorder], origin: float, slo: SLO | None = None
) -> pd.DataFrame:
    """One row per request, times relative to ``origin``:
    :meth:`MetricsCollector.requests_df <streamkit.metrics.MetricsCollector.requests_df>`."""
    import pandas as pd

    rows = []
    for rec in recs:
        m = request_metrics(rec)
        row: dict[str, object] = {
            "request": m.id,
            "label": m.label,
            "model": m.model,
            "status": m.status,
            "finish_reason": m.finish_reason,
            "error": m.error_kind,
            "error_message": m.error_message,
            "sent_at": m.sent_at - origin,
            "first_byte_at": _rel(m.first_byte_at, origin),
            "first_token_at": _rel(m.first_token_at, origin),
            "last_token_at": _rel(m.last_token_at, origin),
            "ended_at": _rel(m.ended_at, origin),
            "ttfb": m.ttfb,
            "ttft": m.ttft,
            "ttft_answer": m.ttft_answer,
            "tpot": m.tpot,
            "e2e": m.e2e,
            "itl_mean": math.fsum(m.itl) / len(m.itl) if m.itl else None,
            "itl_max": max(m.itl) if m.itl else None,
            "output_tokens": m.output_tokens,
            "output_tokens_source": m.output_tokens_source,
            "prompt_tokens": m.prompt_tokens,
            "chunks": m.chunks,
            "reasoning_chunks": m.reasoning_chunks,
            "tool_call_chunks": m.tool_call_chunks,
            "chars": m.chars,
            "tokens_per_second": m.tokens_per_second,
            "retries": m.retries,
            "retry_causes": ";".join(m.retry_causes) or None,
            "render_lag_mean": m.render_lag_mean,
            "render_lag_max": m.render_lag_max,
            "endpoint": rec.endpoint,
        }
        for key, value in m.tags.items():
            row.setdefault(key, value)
        if slo is not None:
            row["good"] = slo.met_by(m)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else list(_REQUEST_DTYPES))
    return frame.astype(_dtypes(_REQUEST_DTYPES))


def chunks_frame(recs: Sequence[RequestRecorder], origin: float) -> pd.DataFrame:
    """One row per content chunk, times relative to ``origin``:
    :meth:`MetricsCollector.chunks_df <streamkit.metrics.MetricsCollector.chunks_df>`."""
    import numpy as np
    import pandas as pd

    parts: dict[str, list[Any]] = {name: [] for name in _CHUNK_DTYPES}
    for rec in recs:
        n = len(rec.times)
        if not n:
            continue
        times = np.frombuffer(rec.times, dtype=np.float64) if n else np.empty(0)
        gaps = np.empty(n)
        gaps[0] = np.nan
        np.subtract(times[1:], times[:-1], out=gaps[1:])
        kept = np.ones(n, dtype=bool)
        if rec.kept_from:
            kept[: rec.kept_from] = False
            if rec.kept_from < n:
                gaps[rec.kept_from] = np.nan  # the kept reply starts again: no gap to before
        parts["request"].append(np.full(n, rec.id, dtype=np.int64))
        parts["attempt"].append(np.asarray(rec.attempt_of_chunks(), dtype=np.int64))
        parts["index"].append(np.frombuffer(rec.indices, dtype=np.uint32).astype(np.int64))
        parts["time"].append(times - origin)
        parts["since_send"].append(times - rec.send_time)
        parts["gap"].append(gaps)
        parts["chars"].append(np.frombuffer(rec.chars, dtype=np.uint32).astype(np.int64))
        parts["kept"].append(kept)
    columns = {
        name: (np.concatenate(chunks) if chunks else np.empty(0)) for name, chunks in parts.items()
    }
    return pd.DataFrame(columns).astype(_dtypes(_CHUNK_DTYPES))


def summary_frame(s: RunSummary) -> pd.DataFrame:
    """One row per distribution of ``s``, run-level figures in ``attrs``:
    :meth:`MetricsCollector.summary_df <streamkit.metrics.MetricsCollector.summary_df>`."""
    import pandas as pd

    frame = pd.DataFrame(
        [
            {"metric": name, **{k: _nan(v) for k, v in d.to_dict().items()}}
            for name, d in s.distributions().items()
        ]
    ).set_index("metric")
    frame = frame.astype({c: "float64" for c in _SUMMARY_COLUMNS if c != "count"})
    frame["count"] = frame["count"].astype("int64")
    frame.attrs.update(
        {
            "requests": s.requests,
            "completed": s.completed,
            "failed": s.failed,
            "stopped": s.stopped,
            "duration": s.duration,
            "output_tokens": s.output_tokens,
            "output_throughput": s.output_throughput,
            "request_throughput": s.request_throughput,
            "goodput": s.goodput,
        }
    )
    return frame


def read_csv(path: str | Path, table: Literal["requests", "chunks"] = "requests") -> pd.DataFrame:
    """Read a table written by :meth:`MetricsCollector.to_csv`, with its column types restored."""
    import pandas as pd

    frame = pd.read_csv(path)
    dtypes = _REQUEST_DTYPES if table == "requests" else _CHUNK_DTYPES
    known = {k: v for k, v in _dtypes(dtypes).items() if k in frame.columns}
    return frame.astype(known)


def _dtypes(dtypes: Mapping[str, str]) -> dict[str, str]:
    """The column types for this pandas: text is ``str`` on pandas 3 (missing stays NaN), and
    ``object`` before it (where ``astype("str")`` would turn None into the text "None")."""
    import pandas as pd

    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return dict(dtypes)
    return {k: ("object" if v == "str" else v) for k, v in dtypes.items()}


def _rel(value: float | None, origin: float) -> float | None:
    return None if value is None else value - origin


def _nan(value: float | int | None) -> float | int:
    return math.nan if value is None else value
