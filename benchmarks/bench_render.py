"""What rendering a stream costs in a real Jupyter kernel: messages, bytes, CPU and render lag.

A kernel is started with ``jupyter_client.KernelManager``; this process plays the frontend. It
counts and sizes every IOPub message the kernel sends while a stream runs (the JSON of header,
parent header, metadata and content: about what the Jupyter server forwards to a browser), and it
acknowledges DeltaView flushes the way the browser does (each delta noted as shown on arrival, the
first of a stream acknowledged at once and the rest at most every 500 ms, over the kernel's shell
channel), so the kernel records render lags. Nothing is rendered here: those lags are the kernel
and transport share of the arrival-to-screen lag, a lower bound of what a browser sees
(``tests/browser/test_lab_batching.py`` measures a real one). Streams run as ``start_chat``
background tasks (the cell returns at once and the kernel is idle while they run, as in a
notebook); each view is made and displayed in a cell of its own first, so its widgets' creation is
not counted. With two cores, the bundled server (its own process) is pinned to core 0 and the
kernel to core 1.

Sections:

1. **live streams** at 50, 500 and 5,000 tokens/s into ``MarkdownView`` (the default view),
   ``DeltaView`` (adaptive),
   ``DeltaView`` fixed at ``medium`` (4 tokens / 50 ms), ``WidgetView`` (HTML, 4 / 50 ms) and no
   view: frontend messages/s (the view's widget messages; the status messages the kernel
   publishes for each acknowledgement are counted apart), bytes per token, the kernel's main-thread
   time inside the view (as % of one core), the kernel process's CPU (``/proc/<pid>/stat``) and
   its excess over the no-view run, and the render lag p50/p99 (DeltaView only);
2. **bytes per token** at 1k, 10k and 100k tokens, one flush per 200 tokens, fed in the kernel
   without a server: linear for DeltaView (each flush carries its new text only), growing with the
   length for the HTML view (each flush carries everything so far);
3. **blocking cells**: a stream run with ``start_chat``, ``await chat`` and ``chat_sync``: how late
   the kernel processed the acknowledgements (it hears them only when its main thread is free),
   and the render lag it computed all the same from the screen times they carry.

Medians of ``--runs`` runs. The machine's load average is printed before and after: on a busy
machine the CPU figures are upper bounds.

    python benchmarks/bench_render.py [--runs 3] [--seconds 4] [--rates 50,500,5000]
        [--sections 1,2,3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import time
from collections.abc import Callable
from typing import Any

from _harness import cpu_seconds, free_port, start_server  # benchmarks/ is on sys.path when run
from jupyter_client import KernelManager
from jupyter_client.blocking.client import BlockingKernelClient

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ACK_EVERY = 0.5  # the browser acknowledges a stream's first delta at once, then <= 2/s
FRONTEND_TYPES = {"comm_open", "comm_msg", "comm_close", "display_data", "update_display_data"}

KERNEL_SETUP = r"""
import asyncio, json, time
import streamkit as sk
from streamkit.batching import PRESETS
from streamkit.events import StreamEnd, StreamStart, TokenDelta
from streamkit.render import DeltaView, MarkdownView, WidgetView
from streamkit.result import StreamResult

client = sk.Client(BASE_URL, model="sim-small")


def timed(view):
    # Wall time of the kernel's main thread inside the view: its three entry points (tokens,
    # the flush timer, the end). perf_counter, not thread_time: ~0.1 us a call, not ~1 us.
    spent = [0.0]
    clock = time.perf_counter
    for name in ("on_event", "_on_timer", "finish"):
        inner = getattr(view, name)

        def wrapper(*args, _inner=inner):
            t0 = clock()
            try:
                return _inner(*args)
            finally:
                spent[0] += clock() - t0

        setattr(view, name, wrapper)
    return spent


def make_view(kind):
    if kind == "markdown":
        return MarkdownView()
    if kind == "delta":
        return DeltaView()
    if kind == "delta-medium":
        return DeltaView(max_tokens=4, max_delay=0.05, adaptive=False)
    if kind == "html":
        return WidgetView(max_tokens=4, max_delay=0.05)
    return None


def report(**fields):
    print("BENCH " + json.dumps(fields), flush=True)


bench_view = None


def prepare(kind):
    global bench_view
    bench_view = make_view(kind)
    if bench_view is not None:
        display(bench_view)


async def live(rate, seconds, mode):
    view = bench_view
    spent = timed(view) if view is not None else [0.0]
    tokens = max(10, round(rate * seconds))
    body = {"streamkit": {"tokens_per_second": rate, "jitter": 0.1, "length": tokens, "ttft": 0.05}}
    if mode == "sync":
        result = client.chat_sync("Explain batching", view=view, extra_body=body)
    elif mode == "await":
        result = await client.chat("Explain batching", view=view, extra_body=body)
    else:
        result = await client.start_chat("Explain batching", view=view, extra_body=body)
    await asyncio.sleep(0.7)  # the last (batched) acknowledgements
    span = result.token_times[-1] - result.token_times[0]
    is_delta = isinstance(view, DeltaView)
    report(tokens=result.output_tokens, span=span, view_s=spent[0], ok=result.ok,
           flushes=len(view.flush_log) if view is not None else 0,
           lags=view.render_lags if is_delta else [], ack_lags=view.ack_lags if is_delta else [])
    if view is not None:
        view.close()


def start_live(rate, seconds, mode="task"):
    # The stream as a notebook runs it: the cell returns, the kernel is idle while it streams.
    asyncio.ensure_future(live(rate, seconds, mode))


def fed(kind, n_tokens, per_flush=200):
    view = DeltaView(max_tokens=per_flush, max_delay=10.0, adaptive=False) if kind == "delta" \
        else WidgetView(max_tokens=per_flush, max_delay=10.0)
    display(view)
    result = StreamResult(model="sim-small")
    view.start(model="sim-small")
    now = time.perf_counter()
    for event in [StreamStart(now, now, "sim-small")] + [
        TokenDelta(f"w{i % 100} ", i, now) for i in range(n_tokens)
    ] + [StreamEnd("stop", None, now)]:
        result.apply(event)
        view.on_event(event)
    view.finish(result)
    report(tokens=n_tokens, flushes=len(view.flush_log))
    view.close()
"""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def msg_bytes(msg: dict[str, Any]) -> int:
    """About what the Jupyter server forwards to a browser for this message (JSON, no buffers)."""
    parts = (msg["header"], msg["parent_header"], msg["metadata"], msg["content"])
    return sum(len(json.dumps(part, default=str)) for part in parts) + sum(
        len(b) for b in msg.get("buffers", [])
    )


class Frontend:
    """A kernel and a stand-in for the browser: counts IOPub traffic, acknowledges deltas."""

    def __init__(self, base_url: str) -> None:
        env = {**os.environ, "STREAMKIT_VIEW": "widget"}
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc: BlockingKernelClient = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        pid = self.km.provisioner.pid if self.km.provisioner is not None else None
        if pid is None:
            raise RuntimeError("no kernel pid")
        self.pid: int = pid
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(self.pid, {1})
        self.delta_comms: set[str] = set()
        self.run(KERNEL_SETUP.replace("BASE_URL", repr(base_url)))

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def _ack(self, comm_id: str, stream: int, shown: list[list[float]]) -> None:
        # The browser's message: what it showed, and when it sent this (its clock: monotonic ms).
        content = {
            "kind": "ack",
            "stream": stream,
            "seq": int(shown[-1][0]),
            "shown": shown,
            "t": time.monotonic() * 1000,
        }
        msg = self.kc.session.msg(
            "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": content}}
        )
        self.kc.shell_channel.send(msg)

    def run(self, code: str, *, wait_report: bool = False, timeout: float = 600) -> dict[str, Any]:
        """Execute ``code``; return the traffic it caused, the kernel CPU, and its BENCH lines.

        Waits for the cell to go idle, or (``wait_report``) for the BENCH line of a stream the
        cell started in the background.
        """
        cpu0 = cpu_seconds(self.pid)
        msg_id = self.kc.execute(code)
        messages = size = statuses = 0
        reports: list[dict[str, Any]] = []
        errors: list[str] = []
        noted: dict[tuple[str, int], list[list[float]]] = {}  # (comm, stream) -> [[seq, t]]
        last_ack: dict[tuple[str, int], float] = {}
        idle = False
        deadline = time.monotonic() + timeout
        while not (reports if wait_report else idle):
            now = time.monotonic()
            for key, shown in list(noted.items()):
                # A stream's first delta at once, then at most every 500 ms: as the browser does.
                if key not in last_ack or now - last_ack[key] >= ACK_EVERY:
                    self._ack(key[0], key[1], shown)
                    last_ack[key] = now
                    del noted[key]
            if now > deadline:
                raise TimeoutError(f"no result in {timeout} s")
            if errors:
                break
            try:
                msg = self.kc.get_iopub_msg(timeout=0.005)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind in FRONTEND_TYPES:
                messages += 1
                size += msg_bytes(msg)
            if kind == "comm_open":
                state = content.get("data", {}).get("state", {})
                if str(state.get("_anywidget_id", "")).endswith(("DeltaText", "MarkdownText")):
                    self.delta_comms.add(content["comm_id"])
            elif kind == "comm_msg" and content["comm_id"] in self.delta_comms:
                data = content["data"]
                delta = data["content"] if data.get("method") == "custom" else {}
                if delta.get("kind") == "delta":
                    key = (content["comm_id"], delta["stream"])
                    noted.setdefault(key, []).append([delta["seq"], time.monotonic() * 1000])
            elif kind == "stream" and content["name"] == "stdout":
                for line in content["text"].splitlines():
                    if line.startswith("BENCH "):
                        reports.append(json.loads(line[6:]))
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))
            elif kind == "status":
                statuses += 1
                if (
                    content["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id
                ):
                    idle = True
        if errors:
            raise RuntimeError("kernel error:\n" + "\n".join(errors))
        return {
            "messages": messages,
            "bytes": size,
            "statuses": statuses,
            "cpu_s": cpu_seconds(self.pid) - cpu0,
            "reports": reports,
        }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def section_live(fe: Frontend, rates: list[int], seconds: float, runs: int) -> dict[str, Any]:
    kinds = ["none", "markdown", "delta", "delta-medium", "html"]
    table: dict[str, Any] = {}
    print(f"\n1. live streams (medians of {runs} runs; lag: synthetic frontend, no rendering)")
    print(
        f"{'rate':>6} {'view':>13} {'flushes/s':>9} {'msgs/s':>7} {'+status/s':>9} {'B/token':>8} "
        f"{'view %core':>10} {'kernel %core':>12} {'+ vs none':>9} {'lag p50 ms':>10} "
        f"{'lag p99 ms':>10}"
    )
    for rate in rates:
        base_cpu = None
        for kind in kinds:
            # The HTML view resends everything per flush: at 5,000 tokens/s it swamps the kernel,
            # so it gets a shorter stream there (its bytes per token are section 2's business).
            secs = min(seconds, 1.0) if kind == "html" and rate >= 5000 else seconds
            samples: list[dict[str, float]] = []
            for _ in range(runs):
                fe.run(f"prepare({kind!r})")
                got = fe.run(f"start_live({rate}, {secs})", wait_report=True)
                (rep,) = got["reports"]
                if not rep["ok"]:
                    raise RuntimeError(f"stream failed: {rep}")
                span = rep["span"]
                samples.append(
                    {
                        "flushes_s": rep["flushes"] / span,
                        "msgs_s": got["messages"] / span,
                        "status_s": got["statuses"] / span,
                        "bytes_token": got["bytes"] / rep["tokens"],
                        "view_pct": 100 * rep["view_s"] / span,
                        "cpu_pct": 100 * got["cpu_s"] / span,
                        "lag_p50": pct(rep["lags"], 50) * 1000,
                        "lag_p99": pct(rep["lags"], 99) * 1000,
                    }
                )
            row = median_of(samples)
            if kind == "none":
                base_cpu = row["cpu_pct"]
            extra = row["cpu_pct"] - base_cpu if base_cpu is not None else float("nan")
            row["cpu_above_none_pct"] = extra
            row["seconds"] = secs
            table[f"{rate}/{kind}"] = row
            print(
                f"{rate:>6} {kind:>13} {row['flushes_s']:>9.1f} {row['msgs_s']:>7.1f} "
                f"{row['status_s']:>9.1f} "
                f"{row['bytes_token']:>8.1f} {row['view_pct']:>10.2f} {row['cpu_pct']:>12.1f} "
                f"{extra:>9.1f} {row['lag_p50']:>10.1f} {row['lag_p99']:>10.1f}"
            )
    return table


def section_bytes(fe: Frontend, sizes: list[int]) -> dict[str, Any]:
    print("\n2. bytes sent per token, one flush per 200 tokens (fed in the kernel, no server)")
    print(f"{'tokens':>8} {'view':>6} {'messages':>9} {'MB':>9} {'B/token':>10}")
    table: dict[str, Any] = {}
    for n in sizes:
        for kind in ("delta", "html"):
            got = fe.run(f"fed({kind!r}, {n})", timeout=1200)
            per_token = got["bytes"] / n
            table[f"{n}/{kind}"] = {"messages": got["messages"], "bytes": got["bytes"]}
            print(
                f"{n:>8} {kind:>6} {got['messages']:>9} {got['bytes'] / 1e6:>9.2f} "
                f"{per_token:>10.1f}"
            )
    return table


def section_blocking(fe: Frontend, runs: int) -> dict[str, Any]:
    print("\n3. when acknowledgements are processed (50 tokens/s, 3 s, DeltaView fixed 1 token)")
    print(
        f"{'how the stream runs':>26} {'lag p50 ms':>10} {'lag p99 ms':>10} "
        f"{'ack p50 ms':>10} {'ack max ms':>10}"
    )
    table: dict[str, Any] = {}
    cells = (
        ("task", "start_chat (cell returns)", "start_live(50, 3.0, 'task')", True),
        ("await", "await chat(...) in the cell", "await live(50, 3.0, 'await')", False),
        ("sync", "chat_sync(...) in the cell", "await live(50, 3.0, 'sync')", False),
    )
    for mode, label, code, background in cells:
        rows = []
        for _ in range(runs):
            fe.run("bench_view = DeltaView(max_tokens=1, adaptive=False); display(bench_view)")
            (rep,) = fe.run(code, wait_report=background)["reports"]
            rows.append(
                {
                    "lag_p50": pct(rep["lags"], 50) * 1000,
                    "lag_p99": pct(rep["lags"], 99) * 1000,
                    "ack_p50": pct(rep["ack_lags"], 50) * 1000,
                    "ack_max": max(rep["ack_lags"]) * 1000,
                }
            )
        row = median_of(rows)
        table[mode] = row
        print(
            f"{label:>26} {row['lag_p50']:>10.1f} {row['lag_p99']:>10.1f} "
            f"{row['ack_p50']:>10.1f} {row['ack_max']:>10.1f}"
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each live stream")
    parser.add_argument("--rates", default="50,500,5000")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--sections", default="1,2,3")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    sections = {int(s) for s in args.sections.split(",")}
    print(f"before: {load()}")
    port = free_port()
    server = start_server(port, pin_self=False)
    fe: Frontend | None = None
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        fe = Frontend(f"http://127.0.0.1:{port}/v1")
        steps: list[tuple[int, str, Callable[[], Any]]] = [
            (
                1,
                "live",
                lambda: section_live(
                    fe, [int(r) for r in args.rates.split(",")], args.seconds, args.runs
                ),
            ),
            (2, "bytes", lambda: section_bytes(fe, [int(n) for n in args.sizes.split(",")])),
            (3, "blocking", lambda: section_blocking(fe, args.runs)),
        ]
        for number, name, step in steps:
            if number in sections:
                results[name] = step()
    finally:
        if fe is not None:
            fe.close()
        server.terminate()
        server.wait(timeout=10)
    results["load_after"] = os.getloadavg()
    print(f"\nafter: {load()}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
