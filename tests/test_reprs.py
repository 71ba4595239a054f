"""Notebook reprs: results, ledgers and summaries show as escaped HTML tables and one short line,
and the dashboard and the controls display themselves as widgets with a readable text form.

Everything is real: streams from the bundled server (or from a loopback server that sends hostile
text), a real ``Ledger``, a real collector's summary, real widgets, and, for what IPython does with
a cell's last value, a real ipykernel driven over its own protocol.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.metrics import MetricsCollector, genai_perf_metrics
from streamkit.render import ControlsPanel, WidgetView
from streamkit.result import StreamResult
from streamkit.server import RunningServer

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
FAST = {"streamkit": {"ttft": 0.0, "tokens_per_second": 2000, "jitter": 0, "length": 40}}
SCRIPT = "<script>alert('x')</script>"
IMG = '<img src=x onerror="alert(1)">'


async def stream(server: RunningServer, length: int = 40, **options: Any) -> StreamResult:
    body = {"streamkit": {**FAST["streamkit"], "length": length}}
    async with sk.Client(server.base_url, model="sim-small") as client:
        return await client.chat("Explain streaming", view=None, seed=7, extra_body=body, **options)


# -- StreamResult ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_result_repr_is_one_short_line(server: RunningServer) -> None:
    result = await stream(server)
    line = repr(result)
    ttft = f"TTFT {result.ttft * 1000:.0f} ms"  # type: ignore[operator]
    assert line.startswith(f'<StreamResult completed sim-small · 40 tokens · {ttft} · "')
    assert line.endswith('…">') and "\n" not in line and len(line) < 110
    words = " ".join(result.text.split())
    assert line[line.index('"') + 1 : -3] == words[:23]
    # summary() is unchanged: the long form stays one call away.
    assert result.summary().startswith(f"completed · {ttft} · ")


@pytest.mark.anyio
async def test_a_result_shows_a_table_of_its_metrics_and_its_text(server: RunningServer) -> None:
    result = await stream(server)
    page = result._repr_html_()
    assert page.startswith('<div class="streamkit-repr"><table>') and page.count("<table>") == 1
    usage = result.usage
    assert usage is not None
    cost = sk.cost_of(usage, "sim-small")
    for label, value in [
        ("status", "completed"),
        ("model", "sim-small"),
        ("TTFT", f"{result.ttft * 1000:.1f} ms"),  # type: ignore[operator]
        ("TPOT", f"{result.tpot * 1000:.2f} ms"),  # type: ignore[operator]
        ("tokens/s", f"{result.tokens_per_second:.1f}"),
        ("E2E", f"{result.e2e * 1000:.1f} ms"),  # type: ignore[operator]
        ("output tokens", "40 (from usage)"),
        ("finish reason", "stop"),
        ("retries", "0"),
        ("usage", f"{usage.prompt_tokens} in + 40 out"),
        ("cost", f"${cost.total_usd:.6f} (streamkit.server prices)"),
    ]:
        assert f'>{label}</th><td style="text-align:left">{value}</td>' in page, label
    assert f">{html.escape(result.text)}</pre>" in page  # short text: whole, no note
    assert "showing" not in page and "error" not in page


@pytest.mark.anyio
async def test_a_long_text_is_cut_with_an_ellipsis(server: RunningServer) -> None:
    result = await stream(server, length=600)
    assert len(result.text) > 1000
    page = result._repr_html_()
    shown = page[page.index("<pre") : page.index("</pre>")]
    assert shown.endswith(html.escape(result.text[:999]) + "…")
    assert f"showing 999 of {len(result.text):,} characters" in page
    assert len(repr(result)) < 110


@pytest.mark.anyio
async def test_a_result_without_usage_or_price_says_so_and_shows_no_cost() -> None:
    async with (
        hostile_server([sse_reply(["plain ", "text"])]) as url,
        sk.Client(url, api_key="k", model="no-such-model", retry=None) as client,
    ):
        result = await client.chat("hi", view=None)
    page = result._repr_html_()
    assert ">usage</th><td" in page and "not reported" in page
    assert "2 (chunks counted)" in page
    assert ">cost<" not in page  # unpriced: no row rather than a made-up zero
    assert repr(result).startswith("<StreamResult completed no-such-model · 2 tokens · TTFT ")


# -- untrusted text is escaped ---------------------------------------------------------------------


class _Hostile:
    """A loopback HTTP/1.1 server answering each request with the next scripted reply, then
    closing the connection: an OpenAI-compatible endpoint under the test's control."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(self.replies.pop(0))
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()


def sse_reply(deltas: list[str], model: str = "m") -> bytes:
    frames = b"".join(
        b"data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}],
            }
        ).encode()
        + b"\n\n"
        for d in deltas
    )
    end = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    frames += b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    return head + frames


def error_reply(status: str, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class hostile_server:  # used like a function: `async with hostile_server(replies) as url`
    def __init__(self, replies: list[bytes]) -> None:
        self.hostile = _Hostile(replies)

    async def __aenter__(self) -> str:
        server = await asyncio.start_server(self.hostile.serve, "127.0.0.1", 0)
        self.hostile.server = server
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.hostile.server is not None
        self.hostile.server.close()
        await self.hostile.server.wait_closed()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["sse", "generic-sse"])
async def test_hostile_model_text_and_model_name_come_out_escaped(transport: str) -> None:
    deltas = ["Sure: ", SCRIPT, " and ", IMG, " & more"]
    async with (
        hostile_server([sse_reply(deltas, model=IMG)]) as url,
        sk.Client(url, api_key="k", model=IMG, transport=transport, retry=None) as client,  # type: ignore[arg-type]
    ):
        result = await client.chat("hi", view=None)
    assert result.text == "".join(deltas) and result.model == IMG
    page = result._repr_html_()
    # No markup from the stream survives: only the repr's own tags are left.
    assert "<script" not in page and "<img" not in page and 'onerror="' not in page
    assert html.escape(SCRIPT) in page and html.escape(IMG) in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert ">&lt;img src=x onerror=&quot;alert(1)&quot;&gt;</td>" in page  # the model row
    tags = {t.split(">")[0].split()[0] for t in page.split("<")[1:]}
    assert tags <= {"div", "/div", "table", "/table", "caption", "/caption", "b", "/b", "tbody",
                    "/tbody", "tr", "/tr", "th", "/th", "td", "/td", "pre", "/pre"}  # fmt: skip


@pytest.mark.anyio
async def test_a_hostile_error_message_comes_out_escaped() -> None:
    async with (
        hostile_server([error_reply("400 Bad Request", IMG)]) as url,
        sk.Client(url, api_key="k", model="m", retry=None) as client,
    ):
        with pytest.raises(sk.BadRequestError) as caught:
            await client.chat("hi", view=None)
    result = caught.value.result
    assert isinstance(result, StreamResult) and result.status == "failed"
    page = result._repr_html_()
    assert "<img" not in page and "<pre" not in page  # no text, no empty text block
    assert f">BadRequestError: 400 from {url}: {html.escape(IMG)}</td>" in page
    assert repr(result) == "<StreamResult failed m · 0 tokens · BadRequestError>"


# -- the cost ledger ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_ledger_shows_its_rows_and_totals(server: RunningServer) -> None:
    first, second = await stream(server), await stream(server, length=10)
    ledger = sk.Ledger()
    ledger.add(first, prompt="Explain streaming", label=SCRIPT)
    ledger.add(second, prompt="Explain streaming")
    totals = ledger.totals()
    assert repr(ledger) == (
        f"<Ledger 2 requests · ${totals['total_usd']:.6f} · 0 missing usage · 0 disagreements>"
    )
    page = ledger._repr_html_()
    assert page.count("<table>") == 1 and "<tfoot>" in page
    assert SCRIPT not in page and f">{html.escape(SCRIPT)}</td>" in page
    assert ">request 1</td>" in page and ">sim-small</td>" in page
    usage = first.usage
    assert usage is not None
    assert f">{usage.prompt_tokens} / {usage.prompt_tokens}</td>" in page  # reported / counted
    assert ">40 / 40</td>" in page and ">10 / 10</td>" in page
    for row in ledger.rows:
        assert f">${row['total_usd']:.6f}</td>" in page
    assert f">${totals['total_usd']:.6f}</th>" in page and ">2 requests</th>" in page
    assert "first " not in page  # every row shown


@pytest.mark.anyio
async def test_a_long_ledger_shows_the_first_rows_and_says_so(server: RunningServer) -> None:
    result = await stream(server, length=5)
    ledger = sk.Ledger()
    for _ in range(25):
        ledger.add(result)
    page = ledger._repr_html_()
    assert "first 20 of 25 rows; .df() has all" in page
    assert ">request 19</td>" in page and ">request 20</td>" not in page
    assert ">25 requests</th>" in page  # the totals cover every row
    empty = sk.Ledger()
    assert repr(empty) == "<Ledger 0 requests · $0.000000 · 0 missing usage · 0 disagreements>"
    assert "<table>" in empty._repr_html_() and ">0 requests</th>" in empty._repr_html_()


# -- metrics summaries ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_run_summary_shows_counts_and_distributions(server: RunningServer) -> None:
    collector = MetricsCollector()
    async with sk.Client(server.base_url, model="sim-small") as client:
        await asyncio.gather(
            *(
                client.chat("hi", view=None, seed=i, extra_body=FAST, observers=[collector])
                for i in range(3)
            )
        )
    slo = sk.SLO(ttft=30.0, tpot=0.0125)
    summary = collector.summary(slo)
    line = repr(summary)
    assert line.startswith("<RunSummary 3 requests: 3 completed, 0 failed · ")
    assert f"TTFT p50 {summary.ttft.p50 * 1000:.0f} ms" in line  # type: ignore[operator]
    assert "\n" not in line and len(line) < 140
    assert str(summary).startswith("3 requests: 3 completed, 0 failed, 0 stopped, 0 running")
    page = summary._repr_html_()
    assert page.count("<table>") == 2
    assert ">3: 3 completed, 0 failed, 0 stopped, 0 running</td>" in page
    assert f">{summary.output_throughput:.1f} tok/s</td>" in page
    assert "(3 good; TTFT ≤ 30000 ms, TPOT ≤ 12.5 ms)</td>" in page
    ttft = summary.ttft
    cells = [ttft.count, *(f"{v * 1000:.2f}" for v in (ttft.mean, ttft.p50, ttft.p90, ttft.p95,
                                                        ttft.p99, ttft.max))]  # type: ignore[operator]  # fmt: skip
    row = "".join(f'<td style="text-align:right">{c}</td>' for c in cells)
    assert f'<td style="text-align:left">ttft (ms)</td>{row}</tr>' in page
    assert ">tokens_per_second (tokens/s)</td>" in page and ">itl (ms)</td>" in page

    per_request = collector.request_metrics()[0]
    assert repr(per_request).startswith("<RequestMetrics 0 'request 0' completed sim-small · 40")
    assert len(repr(per_request)) < 120  # the dataclass default printed every gap
    assert ">40 (usage)</td>" in per_request._repr_html_()

    genai = genai_perf_metrics(collector.requests)
    assert repr(genai).startswith("<ConventionMetrics genai-perf · 3 requests · ")
    genai_page = genai._repr_html_()
    assert ">time_to_second_token (ms)</td>" in genai_page
    assert ">output_tokens_per_second_per_request (tokens/s)</td>" in genai_page
    assert html.escape(genai.definitions["itl"]) in genai_page


def test_an_empty_summary_shows_dashes() -> None:
    summary = MetricsCollector().summary()
    assert repr(summary) == "<RunSummary 0 requests: 0 completed, 0 failed · 0.00 s>"
    page = summary._repr_html_()
    assert '>output throughput</th><td style="text-align:left">—</td>' in page
    assert '<td style="text-align:left">ttft (ms)</td><td style="text-align:right">0</td>' in page


# -- widgets that display themselves --------------------------------------------------------------


def test_a_widget_dashboard_is_a_widget_with_a_text_form() -> None:
    dash = sk.Dashboard(MetricsCollector(), kind="widget")
    try:
        bundle = dash._repr_mimebundle_()
        assert bundle[WIDGET_MIME]["model_id"] == dash.widget.model_id
        assert bundle["text/plain"].startswith("streamkit metrics dashboard")
        assert "uid" not in bundle["text/plain"]  # not the figure's repr with its random uid
    finally:
        dash.close()


@pytest.mark.anyio
async def test_a_console_dashboard_reads_as_its_summary(server: RunningServer) -> None:
    collector = MetricsCollector()
    dash = sk.Dashboard(collector, kind="console")
    try:
        assert dash._repr_mimebundle_() == {
            "text/plain": "streamkit metrics dashboard (text: a summary once requests run)"
        }
        async with sk.Client(server.base_url, model="sim-small") as client:
            await client.chat("hi", view=None, extra_body=FAST, observers=[collector])
        bundle = dash._repr_mimebundle_()
        assert list(bundle) == ["text/plain"]
        assert bundle["text/plain"] == str(collector.summary())
    finally:
        dash.close()


def test_a_controls_panel_is_a_widget_with_a_text_form() -> None:
    view = WidgetView(max_tokens=4, max_delay=0.05)
    panel = ControlsPanel(view)
    try:
        bundle = panel._repr_mimebundle_()
        assert bundle[WIDGET_MIME]["model_id"] == panel.widget.model_id
        assert bundle["text/plain"] == repr(panel)
        assert bundle["text/plain"].startswith("ControlsPanel(")
    finally:
        panel.close()
        view.close()


# -- what IPython does with a cell's last value, in a real kernel --------------------------------


class Kernel:
    """An ipykernel of this interpreter, run cell by cell; each run returns the cell's outputs."""

    def __init__(self, spec_root: Path) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        # A kernel spec of its own, so the kernel runs this interpreter whatever is installed.
        spec = spec_root / "streamkit-test"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec.joinpath("kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "streamkit test", "language": "python"})
        )
        specs = KernelSpecManager(kernel_dirs=[str(spec_root)])
        self.manager = KernelManager(kernel_name="streamkit-test", kernel_spec_manager=specs)
        env = {k: v for k, v in os.environ.items() if k != "STREAMKIT_VIEW"}
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> list[dict[str, Any]]:
        msg_id = self.client.execute(code)
        outputs: list[dict[str, Any]] = []
        while True:
            msg = self.client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            if kind in ("display_data", "execute_result", "stream"):
                outputs.append({"type": kind, **msg["content"]})
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                return outputs

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    running = Kernel(tmp_path_factory.mktemp("kernels"))
    try:
        yield running
    finally:
        running.close()


def widget_displays(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if WIDGET_MIME in o.get("data", {})]


@pytest.mark.slow
def test_a_kernel_shows_results_as_tables_and_dashboards_once(
    kernel: Kernel, server: RunningServer
) -> None:
    kernel.run(
        "import streamkit as sk\n"
        f"client = sk.Client({server.base_url!r}, model='sim-small')\n"
        f"result = await client.chat('hi', view=None, extra_body={FAST!r})\n"
        "collector = sk.MetricsCollector()"
    )
    (out,) = kernel.run("result")
    assert out["type"] == "execute_result"
    assert out["data"]["text/plain"].startswith("<StreamResult completed sim-small · 40 tokens")
    assert out["data"]["text/html"].startswith('<div class="streamkit-repr"><table>')

    (out,) = kernel.run("ledger = sk.Ledger(); ledger.add(result); ledger")
    assert out["data"]["text/plain"].startswith("<Ledger 1 requests · $")
    assert "<tfoot>" in out["data"]["text/html"]

    # A dashboard as the last value displays itself, once; so does one shown with .show() on
    # the last line (show() displays it and returns it, and IPython would display it again).
    for cell in (
        "sk.Dashboard(collector, kind='widget')",
        "sk.Dashboard(collector, kind='widget').show()",
        "dash = sk.Dashboard(collector, kind='widget').show()",
    ):
        outputs = kernel.run(cell)
        assert len(outputs) == 1 and len(widget_displays(outputs)) == 1, (cell, outputs)
        assert outputs[0]["type"] == "display_data"
        assert outputs[0]["data"]["text/plain"].startswith("streamkit metrics dashboard")
    # A later cell ending in the dashboard shows it again (a second view of the same figure).
    (again,) = widget_displays(kernel.run("dash"))
    (model_id,) = (o["text"] for o in kernel.run("print(dash.widget.model_id, end='')"))
    assert again["data"][WIDGET_MIME]["model_id"] == model_id
