"""``streamkit serve --workers N``: real worker processes sharing one port through SO_REUSEPORT.

Every test starts a real server (``python -m streamkit serve``) and talks to it over loopback. A
connection reaches one worker, chosen by the kernel from a hash of its addresses, so a test that
needs both workers opens many connections (20 connections all on one of two workers: 1 in 2^19).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import httpx
import pytest

from streamkit.errors import UsageError
from streamkit.server import ServerConfig, serve_in_thread
from streamkit.server.process import serve_in_subprocess

BANNER = re.compile(r"streamkit simulator: (http://\S+/v1).*; 2 workers \(pids (\d+), (\d+)\)")
CONNECTIONS = 20


@dataclass
class Served:
    process: subprocess.Popen[str]
    base_url: str = ""
    pids: tuple[int, ...] = ()
    stderr: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.base_url[: -len("/v1")]

    def wait(self, timeout: float = 15) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    _reader: threading.Thread = field(init=False)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("STREAMKIT_API_KEY", None)
    env.update(extra)
    return env


@contextmanager
def serve(*args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``python -m streamkit serve --port 0 --workers 2 ARGS``; yields once the banner names the
    URL and the workers; ends every process it started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamkit", "serve", "--port", "0", "--workers", "2", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )
    served = Served(process)
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            served.stderr.append(line)
            match = BANNER.search(line)
            if match:
                served.base_url = match.group(1)
                served.pids = (int(match.group(2)), int(match.group(3)))
                ready.set()
        ready.set()

    served._reader = threading.Thread(target=read, daemon=True)
    served._reader.start()
    try:
        assert ready.wait(60) and served.base_url, "".join(served.stderr)
        yield served
    finally:
        for pid in served.pids:
            _kill(pid)
        if process.poll() is None:
            process.kill()
        process.wait()
        served._reader.join(5)
        assert process.stderr is not None
        process.stderr.close()


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    # A worker is our grandchild: once it exits, its parent (the supervisor) reaps it, or init
    # does if the supervisor is gone; /proc shows a zombie until then.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: tuple[int, ...], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _per_worker(text: str, name: str) -> dict[int, float]:
    found = re.findall(rf'^streamkit_{name}\{{worker="(\d+)"\}} (\S+)$', text, re.M)
    return {int(w): float(v) for w, v in found}


def _fresh_connections(url: str, n: int = CONNECTIONS, **kwargs: object) -> list[httpx.Response]:
    # One client per request: each request on a new connection, from a new source port.
    responses = []
    for _ in range(n):
        with httpx.Client(timeout=10) as client:
            responses.append(client.request(url=url, **kwargs))  # type: ignore[arg-type]
    return responses


CHAT = {
    "model": "sim-small",
    "messages": [{"role": "user", "content": "Which worker am I on?"}],
    "seed": 7,
    "max_tokens": 12,
    "streamkit": {"ttft": 0, "tokens_per_second": 1000},
}


def test_workers_share_one_port_and_both_serve_the_same_text() -> None:
    with serve() as served:
        assert served.pids[0] != served.pids[1]
        replies = _fresh_connections(
            served.base_url + "/chat/completions", method="POST", json=CHAT
        )
        assert all(r.status_code == 200 for r in replies)
        # The text depends on (prompt, seed) only: every worker says the same.
        texts = {r.json()["choices"][0]["message"]["content"] for r in replies}
        assert len(texts) == 1
        # The worker that answers /metrics reports its own counters as they are and the other's
        # as it last published them (twice a second): wait for that, not for a time.
        deadline = time.monotonic() + 10
        while True:
            metrics = httpx.get(served.root + "/metrics").text
            tokens = _per_worker(metrics, "tokens_sent")
            if sum(tokens.values()) == 12 * CONNECTIONS or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert "streamkit_workers 2\n" in metrics
        assert _per_worker(metrics, "worker_pid") == {0: served.pids[0], 1: served.pids[1]}
        # Both workers served some of the completions, and every token is counted once.
        assert tokens[0] > 0 and tokens[1] > 0
        assert sum(tokens.values()) == 12 * CONNECTIONS
        assert set(_per_worker(metrics, "saturated")) == {0, 1}


def test_a_killed_worker_ends_the_server_naming_it() -> None:
    with serve() as served:
        victim, survivor = served.pids
        os.kill(victim, signal.SIGKILL)
        code = served.wait()
        assert code == 1
        err = "".join(served.stderr)
        assert f"worker 0 (pid {victim}) was killed by SIGKILL (exit code -9) while serving" in err
        assert _wait_gone((survivor,))
        with pytest.raises(httpx.ConnectError):
            httpx.get(served.root + "/health")


def test_sigterm_stops_every_worker() -> None:
    with serve() as served:
        # A stream in progress when the signal comes is ended, not waited for.
        with httpx.Client(timeout=10) as client:
            body = {**CHAT, "stream": True, "streamkit": {"ttft": 0, "tokens_per_second": 2}}
            with client.stream("POST", served.base_url + "/chat/completions", json=body) as r:
                assert r.status_code == 200
                served.process.send_signal(signal.SIGTERM)
                code = served.wait()
        assert code == -signal.SIGTERM
        assert _wait_gone(served.pids)
        assert "worker" not in "".join(served.stderr).split("Ctrl-C to stop", 1)[1]


def test_the_api_key_reaches_every_worker_but_no_command_line() -> None:
    key = f"sk-workers-{secrets.token_hex(8)}"
    with serve(env=_env(STREAMKIT_API_KEY=key)) as served:
        for pid in (served.process.pid, *served.pids):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert key.encode() not in f.read()
        url = served.base_url + "/models"
        refused = _fresh_connections(url, method="GET")
        assert {r.status_code for r in refused} == {401}
        allowed = _fresh_connections(url, method="GET", headers={"Authorization": f"Bearer {key}"})
        assert {r.status_code for r in allowed} == {200}
        errors = _per_worker(httpx.get(served.root + "/metrics").text, "errors")
        assert errors[0] > 0 and errors[1] > 0  # both workers refused some
        assert key not in "".join(served.stderr)


def test_a_stored_response_lives_on_the_worker_that_served_it() -> None:
    # Documented, not hidden: GET /v1/responses/{id} (and its starting_after replay) reads the
    # memory of one worker.
    with serve() as served:
        body = {"model": "sim-small", "input": "store me", "stream": True, "max_output_tokens": 5}
        with httpx.Client(timeout=10) as client:
            text = client.post(served.base_url + "/responses", json=body).text
        found = re.search(r'"id":\s*"(resp_[0-9a-f]+)"', text)
        assert found is not None
        url = f"{served.base_url}/responses/{found.group(1)}"
        statuses = [r.status_code for r in _fresh_connections(url, method="GET")]
        assert set(statuses) == {200, 404}


def test_serve_in_subprocess_takes_workers() -> None:
    server = serve_in_subprocess(workers=2)
    try:
        text = httpx.get(server.base_url[: -len("/v1")] + "/metrics").text
        assert "streamkit_workers 2\n" in text
    finally:
        server.stop()
    assert server.process.returncode == -signal.SIGTERM


def test_workers_are_refused_where_they_cannot_work() -> None:
    with pytest.raises(UsageError, match="serve_in_subprocess"):
        serve_in_thread(workers=2)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        ServerConfig(workers=0)
    bad = subprocess.run(
        [sys.executable, "-m", "streamkit", "serve", "--port", "0", "--workers", "0"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    # argparse's one line, like every other bad flag.
    assert bad.returncode == 2
    assert "argument --workers: 0 is invalid: must be 1 or more" in bad.stderr


def test_a_last_event_id_resume_works_on_any_worker() -> None:
    with serve() as served:
        body = {**CHAT, "stream": True}
        url = served.base_url + "/chat/completions"
        replies = _fresh_connections(url, method="POST", json=body, headers={"Last-Event-ID": "3"})
        # Every worker regenerates the same reply and sends the same tokens after id 3.
        assert {tuple(re.findall(r"^id: (\d+)$", r.text, re.M)) for r in replies} == {
            tuple(str(i) for i in range(4, 12))
        }
        tails = {tuple(re.findall(r'"content":\s*"([^"]*)"', r.text)) for r in replies}
        assert len(tails) == 1
        tokens = _per_worker(httpx.get(served.root + "/metrics").text, "tokens_sent")
        assert tokens[0] > 0 and tokens[1] > 0
