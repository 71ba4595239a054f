"""Under ``nest_asyncio.apply()``, chat, chat_sync and the views give the text they give without it.

Many notebooks (LlamaIndex and others) call ``nest_asyncio.apply()``. It makes event loops
re-entrant, swaps asyncio's C tasks and futures for the Python ones, and replaces
``asyncio.run`` and ``asyncio.get_event_loop``, process-wide and for good, so it is applied in a
child process here, never in the test process. Both the original (``nest_asyncio`` 1.6) and the
maintained fork that ipykernel 7.4 depends on (``nest_asyncio2``) are tried, each in a plain
interpreter and in a real kernel (jupyter_client), with a run without either as the control.
Every run streams the same seeded request from the bundled server, so the texts must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

import streamkit as sk
from streamkit.server import RunningServer

pytestmark = pytest.mark.timeout(120)

PATCHERS = [None, "nest_asyncio", "nest_asyncio2"]
PROMPT = "Explain server-sent events"
REQUEST = {"model": "sim-small", "seed": 7, "max_tokens": 40}

# A plain interpreter: the patch applied inside a running loop (as a notebook cell applies it),
# then an awaited chat, a console view, chat_sync blocking that running loop (as a cell calling it
# does), and chat_sync again after the loop, as a script would. Every warning is recorded,
# including the ResourceWarning of an event loop left unclosed, which needs the gc.collect().
CHILD = """
import asyncio, gc, importlib, io, json, sys, warnings
import streamkit as sk

base_url, patcher, prompt, request = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])


async def cell():
    if patcher:
        importlib.import_module(patcher).apply()
    client = sk.Client(base_url)
    try:
        awaited = await client.chat(prompt, view=None, **request)
        out = io.StringIO()
        console = await client.chat(prompt, view=sk.ConsoleView(out), **request)
    finally:
        await client.aclose()
    in_loop = sk.Client(base_url).chat_sync(prompt, view=None, **request)
    return awaited, console, out.getvalue(), in_loop


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    awaited, console, printed, in_loop = asyncio.run(cell())
    script = sk.Client(base_url).chat_sync(prompt, view=None, **request)
    gc.collect()
results = {"awaited": awaited, "console": console, "in_loop": in_loop, "script": script}
print(json.dumps({
    "patched": getattr(asyncio, "_nest_patched", False),
    "texts": {name: r.text for name, r in results.items()},
    "statuses": {name: r.status for name, r in results.items()},
    "printed": printed,
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
}))
"""


@pytest.fixture(scope="module")
def expected(server: RunningServer) -> str:
    """The reply in the test process, where nothing is patched."""
    result = sk.Client(server.base_url).chat_sync(PROMPT, view=None, **REQUEST)
    assert result.status == "completed" and result.text
    return result.text


def _child_environ() -> dict[str, str]:
    """This environment without provider settings or a forced view (the runs must not differ)."""
    dropped = ("STREAMKIT_", "OPENAI_", "JUPYTER_PATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


@pytest.mark.parametrize("patcher", PATCHERS, ids=lambda p: p or "unpatched")
def test_plain_interpreter(server: RunningServer, expected: str, patcher: str | None) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, server.base_url, patcher or "", PROMPT, json.dumps(REQUEST)],
        capture_output=True,
        text=True,
        timeout=90,
        env=_child_environ(),
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["patched"] is bool(patcher)  # the patch took effect (or, unpatched, did not)
    assert report["statuses"] == dict.fromkeys(report["statuses"], "completed")
    assert report["texts"] == dict.fromkeys(report["texts"], expected)
    assert report["printed"] == expected + ("" if expected.endswith("\n") else "\n")
    assert report["warnings"] == []
    assert not run.stderr


def _execute(kc: Any, code: str) -> list[dict[str, Any]]:
    """Run one cell; return its output messages, failing on an error reply or stderr output."""
    messages: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=60, output_hook=messages.append)
    content = reply["content"]
    assert content["status"] == "ok", "\n".join(content.get("traceback", [content]))
    stderr = [m for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]
    assert not stderr, "".join(m["content"]["text"] for m in stderr)
    return messages


def _transcript(messages: list[dict[str, Any]]) -> str:
    """The last ``text/plain`` a cell displayed: a widget view's transcript and status line."""
    shown = [
        m["content"]["data"]["text/plain"]
        for m in messages
        if m["msg_type"] in ("display_data", "update_display_data")
        and "text/plain" in m["content"]["data"]
    ]
    assert shown, "the cell displayed nothing"
    return str(shown[-1])


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


@pytest.mark.slow
@pytest.mark.parametrize("patcher", PATCHERS, ids=lambda p: p or "unpatched")
def test_kernel(server: RunningServer, expected: str, patcher: str | None) -> None:
    km, kc = start_new_kernel(kernel_name="python3", env=_child_environ())
    try:
        _execute(kc, "import sys")
        probe = _execute(kc, "print(sys.executable)")
        assert _stdout(probe).strip() == sys.executable  # this environment's kernel
        if patcher:
            _execute(kc, f"import {patcher}\n{patcher}.apply()")
        _execute(
            kc,
            "import asyncio, json\nimport streamkit as sk\n"
            f"base, prompt, request = {server.base_url!r}, {PROMPT!r}, {REQUEST!r}\n"
            f"assert getattr(asyncio, '_nest_patched', False) is {bool(patcher)}\n"
            "client = sk.Client(base)",
        )
        awaited = _execute(kc, "r1 = await client.chat(prompt, view='widget', **request)")
        # chat_sync blocks the kernel's running (and, when patched, re-entrant) loop
        blocking = _execute(kc, "r2 = sk.Client(base).chat_sync(prompt, view='widget', **request)")
        console = _execute(kc, "r3 = await client.chat(prompt, view='console', **request)")
        report = _execute(
            kc,
            "await client.aclose()\nprint(json.dumps([[r.text, r.status] for r in (r1, r2, r3)]))",
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert json.loads(_stdout(report)) == [[expected, "completed"]] * 3
    for messages in (awaited, blocking):
        transcript = _transcript(messages)
        assert transcript.startswith(expected + "\n"), transcript
        assert "completed" in transcript.removeprefix(expected)
    assert _stdout(console) == expected + ("" if expected.endswith("\n") else "\n")
