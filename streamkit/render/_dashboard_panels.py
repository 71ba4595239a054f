"""The dashboard's panels: their state, updated incrementally from a collector's raw log, and the
plotly figure that shows it (tokens/s, ITL histogram, TTFT per request, retries and errors)."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from ..metrics import RequestRecorder, percentile

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Log-spaced ITL bins: 12 per decade from 0.1 ms to 100 s.
ITL_EDGES: list[float] = [10 ** (-4 + i / 12) for i in range(6 * 12 + 1)]
STATUS_COLORS = {
    "completed": "#1f77b4",
    "streaming": "#9e9e9e",
    "pending": "#9e9e9e",
    "failed": "#d62728",
    "stopped": "#ff7f0e",
}


class Bins:
    """Counts per fixed-width time bin from ``origin``; the width doubles past ``max_bins``."""

    def __init__(self, width: float, max_bins: int) -> None:
        self.width = width
        self.max_bins = max_bins
        self.counts: list[int] = []

    def add(self, offset: float) -> None:
        i = int(offset / self.width) if offset > 0 else 0
        while i >= self.max_bins:
            # Merge pairs: the panel keeps its size however long the run.
            merged = [sum(self.counts[j : j + 2]) for j in range(0, len(self.counts), 2)]
            self.counts = merged
            self.width *= 2
            i = int(offset / self.width)
        if i >= len(self.counts):
            self.counts.extend([0] * (i + 1 - len(self.counts)))
        self.counts[i] += 1


class LiveState:
    """What the panels show, updated incrementally from the collector's raw log."""

    def __init__(self, bin_seconds: float, max_bins: int) -> None:
        self.origin: float | None = None
        self.cursors: dict[int, int] = {}
        self.done: set[int] = set()
        self.bins = Bins(bin_seconds, max_bins)
        self.itl_counts = [0] * (len(ITL_EDGES) + 1)
        self.itl_total = 0
        self.ttft: dict[int, float] = {}
        self.tokens = 0
        self.last_chunk: float | None = None
        self.counts = (0, 0)

    def absorb(self, requests: list[RequestRecorder]) -> bool:
        """Take in every chunk that arrived since the last call; True if anything changed."""
        started = sum(1 for r in requests if r.status != "pending" or r.finished)
        changed = (len(requests), started) != self.counts
        self.counts = (len(requests), started)
        if self.origin is None:
            if not started:
                return changed
            self.origin = min(r.send_time for r in requests if r.status != "pending" or r.finished)
        origin = self.origin
        bins, itl_counts, edges = self.bins, self.itl_counts, ITL_EDGES
        for rec in requests:
            rid = rec.id
            if rid in self.done:
                continue
            times = rec.times
            n = len(times)
            seen = self.cursors.get(rid, 0)
            if n > seen:
                changed = True
                if seen == 0:
                    self.ttft[rid] = times[0] - rec.send_time
                prev = times[seen - 1] if seen else None
                for i in range(seen, n):
                    t = times[i]
                    bins.add(t - origin)
                    if prev is not None:
                        itl_counts[bisect.bisect_right(edges, t - prev)] += 1
                        self.itl_total += 1
                    prev = t
                self.tokens += n - seen
                self.cursors[rid] = n
                if self.last_chunk is None or times[-1] > self.last_chunk:
                    self.last_chunk = times[-1]
            if rec.finished:
                self.done.add(rid)
                changed = True
        return changed


def new_figure() -> go.Figure:
    """The four empty panels and the title line, as a static figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            "output tokens/s",
            "inter-token latency (all gaps)",
            "time to first token per request",
            "retries and errors",
        ),
        horizontal_spacing=0.1,
        vertical_spacing=0.18,
    )
    fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line={"shape": "hv"}, name="tokens/s"), 1, 1)
    fig.add_trace(
        go.Scatter(x=[], y=[], mode="lines", line={"shape": "hv"}, fill="tozeroy", name="ITL"),
        1,
        2,
    )
    fig.add_trace(go.Scatter(x=[], y=[], mode="markers", marker={"size": 6}, name="TTFT"), 2, 1)
    fig.add_trace(go.Bar(x=[], y=[], name="retries / errors"), 2, 2)
    fig.update_xaxes(title_text="seconds since the first send", row=1, col=1)
    fig.update_xaxes(title_text="ms (log scale)", type="log", row=1, col=2)
    fig.update_xaxes(title_text="request", row=2, col=1)
    fig.update_yaxes(title_text="tokens/s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="gaps", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="count", rangemode="tozero", row=2, col=2)
    fig.update_layout(
        height=520,
        showlegend=False,
        margin={"t": 70, "b": 40, "l": 50, "r": 20},
        title={"text": "waiting for streams…", "font": {"size": 14}},
    )
    return fig


def panel_values(
    live: LiveState, recs: list[RequestRecorder], active_requests: int, now: float
) -> dict[str, Any]:
    """What each panel shows now: trace data by panel, and the title line."""
    bins = live.bins
    width = bins.width
    rate_x = [i * width for i in range(len(bins.counts))]
    rate_y = [c / width for c in bins.counts]
    active = active_requests > 0
    if rate_y and live.origin is not None:
        # The last bin is partial (still filling, or the run ended inside it): divide by the
        # time it covers, and leave it out while that is too short to say anything.
        end = now if active else (live.last_chunk if live.last_chunk is not None else now)
        span = min(width, end - live.origin - rate_x[-1])
        if span >= width / 2:
            rate_y[-1] = bins.counts[-1] / span
        else:
            del rate_x[-1], rate_y[-1]
    # Display bins 1..len(edges)-1; gaps under 0.1 ms (chunks read together) join the
    # first, gaps over 100 s the last, so a log axis can show every gap.
    counts = live.itl_counts[1:-1]
    counts[0] += live.itl_counts[0]
    counts[-1] += live.itl_counts[-1]
    used = [i for i, c in enumerate(counts) if c]
    itl_x: list[float] = []
    itl_y: list[int] = []
    if used:
        lo, hi = used[0], used[-1]
        itl_x = [ITL_EDGES[i] * 1000 for i in range(lo, hi + 2)]
        itl_y = [*counts[lo : hi + 1], counts[hi]]
    ttft_ids = sorted(live.ttft)
    colors = [STATUS_COLORS.get(recs[i].status, "#9e9e9e") for i in ttft_ids]
    causes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for rec in recs:
        for r in rec.retries:
            causes[r.cause] = causes.get(r.cause, 0) + 1
        if rec.error is not None and rec.status in ("failed", "stopped"):
            errors[rec.error.kind] = errors.get(rec.error.kind, 0) + 1
    bar_x = [f"retry: {k}" for k in sorted(causes)] + [f"error: {k}" for k in sorted(errors)]
    bar_y = [causes[k] for k in sorted(causes)] + [errors[k] for k in sorted(errors)]
    bar_c = ["#ff7f0e"] * len(causes) + ["#d62728"] * len(errors)
    if not bar_x:
        bar_x, bar_y, bar_c = ["retries", "errors"], [0, 0], ["#ff7f0e", "#d62728"]
    done = len(live.done)
    failed = sum(1 for r in recs if r.status == "failed")
    ttfts = list(live.ttft.values())
    p50 = percentile(ttfts, 50)
    now_rate = rate_y[-1] if rate_y and active else None
    title = (
        f"{len(recs)} requests · {done} done · {active_requests} active · "
        f"{failed} failed · {live.tokens} chunks"
        + (f" · now {now_rate:.0f} tok/s" if now_rate is not None else "")
        + (f" · TTFT p50 {p50 * 1000:.0f} ms" if p50 is not None else "")
    )
    return {
        "rate": (rate_x, rate_y),
        "itl": (itl_x, itl_y),
        "ttft": (ttft_ids, [live.ttft[i] * 1000 for i in ttft_ids], colors),
        "bars": (bar_x, bar_y, bar_c),
        "title": title,
    }


def apply_values(fig: Any, values: dict[str, Any], last: dict[str, Any] | None) -> None:
    """Put ``values`` into ``fig``; with ``last`` (the values put before), only what changed."""

    def fresh(key: str) -> bool:
        if last is not None:
            if last.get(key) == values[key]:
                return False
            last[key] = values[key]
        return True

    if fresh("rate"):
        fig.data[0].x, fig.data[0].y = values["rate"]
    if fresh("itl"):
        fig.data[1].x, fig.data[1].y = values["itl"]
    if fresh("ttft"):
        x, y, colors = values["ttft"]
        fig.data[2].x, fig.data[2].y = x, y
        fig.data[2].marker.color = colors
    if fresh("bars"):
        x, y, colors = values["bars"]
        fig.data[3].x, fig.data[3].y = x, y
        fig.data[3].marker.color = colors
    if fresh("title"):
        fig.layout.title.text = values["title"]
