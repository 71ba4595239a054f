"""What the live Markdown view costs: the page's main thread per frame, render lag, messages, CPU.

Two halves.

1. **The page** (headless Debian Chromium under Playwright, the committed ``static/markdown.js``
   and its CSS in a blank page; a stand-in model object delivers the delta messages as
   anywidget would). A Markdown reply of ``sim-markdown`` is repeated up to 60,000 characters
   and streamed as one token per message at ``--page-rate`` tokens/s (default 1,000). Measured:
   the main-thread time of each frame that rendered (from the frame's first callback to after a
   forced layout: the render, the sanitizing and the layout of what changed), as the reply
   passes 1k, 10k and 60k characters, which should stay flat (only the last block is
   rendered again); the same with every frame rendering the whole text again (a snapshot per
   frame: what a view without frozen blocks does), for contrast; and the render lag of each
   token, from its message to the end of the frame that showed it, p50 and p99.
2. **The kernel** (a real ipykernel driven by ``bench_render.Frontend``, which counts what the
   kernel publishes and acknowledges deltas as the page does; no rendering): a
   :class:`~streamkit.MarkdownView` (adaptive, the default) on streams of 500 and 1,000 tokens/s
   from the bundled server: frontend messages/s, the kernel process's CPU (% of one core), and
   the kernel-and-transport share of the render lag, p50/p99.

Medians of ``--runs`` runs. Needs /usr/bin/chromium and playwright for part 1.

    python benchmarks/bench_markdown.py [--runs 3] [--page-rate 1000] [--rates 500,1000]
        [--parts 1,2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

from streamkit.server.models import MODELS
from streamkit.server.textgen import generate

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "streamkit" / "render" / "static"
CHROMIUM = "/usr/bin/chromium"
SIZES = (1_000, 10_000, 60_000)
WINDOW = 20  # frames measured from each size on

# The page: imports the bundle from a blob URL (as anywidget does), renders it into a stand-in
# model, streams `pieces` at `rate` per second, and times every frame that rendered.
PAGE_JS = """
async ({source, pieces, rate, snapshotEveryFrame}) => {
  const url = URL.createObjectURL(new Blob([source], {type: 'text/javascript'}));
  const widget = (await import(url)).default;
  const handlers = {};
  const state = {markdown: '', figures: '', value: ''};
  const model = {
    get: (k) => state[k],
    on: (name, cb) => { (handlers[name] ??= []).push(cb); },
    off: () => {},
    send: () => {},
  };
  const el = document.createElement('div');
  document.body.appendChild(el);
  widget.render({model, el});
  const deliver = (msg) => (handlers['msg:custom'] ?? []).forEach((cb) => cb(msg));
  const body = el.querySelector('.streamkit-md-body');

  const frames = [];  // [chars shown, main-thread ms]
  const lags = [];
  let pending = [];   // performance.now() of each delta not yet on screen
  let text = '';
  let frameStart = null;
  const onFrameStart = (t) => { frameStart = performance.now(); };
  const onFrameEnd = () => {
    void body.offsetHeight;  // the layout of what changed
    const end = performance.now();
    if (pending.length) {
      frames.push([text.length, end - frameStart]);
      for (const t of pending) lags.push(end - t);
      pending = [];
    }
  };
  let seq = 0;
  const gap = 1000 / rate;
  const t0 = performance.now();
  await new Promise((done) => {
    const tick = () => {
      // Every token due by now, as a message each (the kernel may batch; here it does not).
      const due = Math.min(pieces.length, Math.floor((performance.now() - t0) / gap) + 1);
      if (seq < due) requestAnimationFrame(onFrameStart);
      while (seq < due) {
        text += pieces[seq];
        const now = performance.now();
        if (snapshotEveryFrame) {
          deliver({kind: 'snapshot', stream: 0, seq, text});
        } else {
          deliver({kind: 'delta', stream: 0, seq, text: pieces[seq]});
        }
        pending.push(now);
        seq += 1;
      }
      requestAnimationFrame(onFrameEnd);
      if (seq >= pieces.length) setTimeout(done, 100); else setTimeout(tick, gap);
    };
    deliver({kind: 'delta', stream: 0, seq: 0, text: ''});
    seq = 1;
    tick();
  });
  return {frames, lags};
}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def reply_pieces(chars: int) -> list[str]:
    """sim-markdown replies, one after another, until ``chars`` characters."""
    pieces: list[str] = [""]
    seed = 0
    while sum(map(len, pieces)) < chars:
        pieces += [*generate("Explain streaming", seed, None, MODELS["sim-markdown"]), "\n\n"]
        seed += 1
    return pieces


def page_run(page: Any, pieces: list[str], rate: int, snapshot: bool) -> dict[str, Any]:
    page.set_content("<html><body></body></html>")
    page.add_style_tag(content=(STATIC / "markdown.css").read_text())
    source = (STATIC / "markdown.js").read_text()
    out = page.evaluate(
        PAGE_JS, {"source": source, "pieces": pieces, "rate": rate, "snapshotEveryFrame": snapshot}
    )
    frames: list[list[float]] = out["frames"]
    figures: dict[str, Any] = {}
    for size in SIZES:
        window = [ms for chars, ms in frames if chars >= size][:WINDOW]
        figures[f"frame_ms_{size // 1000}k"] = statistics.median(window) if window else None
    figures["lag_p50_ms"] = pct(out["lags"], 50)
    figures["lag_p99_ms"] = pct(out["lags"], 99)
    figures["frames"] = len(frames)
    return figures


def part_page(runs: int, rate: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    pieces = reply_pieces(max(SIZES) + 2_000)
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for label, snapshot, rate_used in (
                ("delta, last block re-rendered", False, rate),
                # Whole re-renders cannot keep up with 1,000 tok/s at 60k: fewer, larger frames.
                ("snapshot every frame (contrast)", True, rate),
            ):
                each = []
                for _ in range(runs):
                    page = browser.new_page()
                    each.append(page_run(page, pieces, rate_used, snapshot))
                    page.close()
                keys = [k for k in each[0] if each[0][k] is not None]
                results[label] = {k: statistics.median(r[k] for r in each) for k in keys}
        finally:
            browser.close()
    print(f"\n1. the page: {rate} tokens/s, one message per token (medians of {runs} runs)")
    print(f"{'':34} {'1k ms':>7} {'10k ms':>7} {'60k ms':>7} {'lag p50':>8} {'lag p99':>8}")
    for label, r in results.items():
        cells = [r.get(f"frame_ms_{s // 1000}k") for s in SIZES]
        shown = " ".join(f"{c:7.2f}" if c is not None else f"{'-':>7}" for c in cells)
        print(f"{label:34} {shown} {r['lag_p50_ms']:8.1f} {r['lag_p99_ms']:8.1f}")
    return results


KERNEL_CODE = """
from streamkit.render import MarkdownView
def make_view(kind):
    return MarkdownView()
prepare("markdown")
report(comm=bench_view.text_widget.comm.comm_id)
"""


def part_kernel(runs: int, rates: list[int], seconds: float) -> dict[str, Any]:
    from bench_render import Frontend

    port = free_port()
    server = start_server(port, pin_self=False)
    fe = None
    results: dict[str, Any] = {}
    try:
        fe = Frontend(f"http://127.0.0.1:{port}/v1")
        for rate in rates:
            each = []
            for _ in range(runs):
                made = fe.run(KERNEL_CODE)
                fe.delta_comms.add(made["reports"][0]["comm"])  # acknowledge its deltas
                run = fe.run(f"start_live({rate}, {seconds})", wait_report=True)
                got = run["reports"][0]
                span = got["span"] or seconds
                lags = [lag * 1000 for lag in got["lags"]]
                each.append(
                    {
                        "messages_per_s": run["messages"] / span,
                        "kernel_cpu_pct": 100 * run["cpu_s"] / span,
                        "flushes_per_s": got["flushes"] / span,
                        "lag_p50_ms": pct(lags, 50) if lags else float("nan"),
                        "lag_p99_ms": pct(lags, 99) if lags else float("nan"),
                    }
                )
            results[str(rate)] = {k: statistics.median(r[k] for r in each) for k in each[0]}
    finally:
        if fe is not None:
            fe.close()
        server.terminate()
        server.wait(timeout=10)
    print(f"\n2. the kernel: MarkdownView (adaptive), medians of {runs} runs of {seconds} s")
    print(f"{'tok/s':>6} {'msgs/s':>7} {'flushes/s':>9} {'CPU %':>6} {'lag p50':>8} {'lag p99':>8}")
    for rate, r in results.items():
        print(
            f"{rate:>6} {r['messages_per_s']:7.1f} {r['flushes_per_s']:9.1f} "
            f"{r['kernel_cpu_pct']:6.1f} {r['lag_p50_ms']:8.1f} {r['lag_p99_ms']:8.1f}"
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-rate", type=int, default=1000)
    parser.add_argument("--rates", default="500,1000")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--parts", default="1,2")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    parts = {int(p) for p in args.parts.split(",")}
    print(f"load average before: {os.getloadavg()}")
    results: dict[str, Any] = {}
    if 1 in parts:
        results["page"] = part_page(args.runs, args.page_rate)
    if 2 in parts:
        rates = [int(r) for r in args.rates.split(",")]
        results["kernel"] = part_kernel(args.runs, rates, args.seconds)
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
