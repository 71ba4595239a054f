"""The server's API key from ``STREAMKIT_API_KEY`` or ``--api-key-file``: a real ``streamkit serve``
subprocess, real requests, and the key in no command line, output line, error or repr."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from streamkit.cli import main
from streamkit.cli.serve import ENV_API_KEY, resolve_api_key
from streamkit.server import serve_in_thread
from streamkit.server.process import serve_in_subprocess

# Unique per run, so finding it anywhere is a leak and not a coincidence.
KEY = f"sk-serve-{secrets.token_hex(12)}"
DECOY = f"sk-decoy-{secrets.token_hex(12)}"
BANNER = re.compile(r"streamkit simulator: (http://\S+/v1)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in (ENV_API_KEY, "OPENAI_API_KEY", "STREAMKIT_BASE_URL", "OPENAI_BASE_URL"):
        env.pop(name, None)
    env.update(extra)
    return env


@dataclass
class Served:
    process: subprocess.Popen[str]
    base_url: str = ""
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


@contextmanager
def serve(*args: str, env: dict[str, str]) -> Iterator[Served]:
    """``python -m streamkit.cli serve --port 0 ARGS``; yields once the banner names the URL, and
    holds everything the process wrote once the block ends (after a Ctrl-C shutdown)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streamkit.cli", "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    served = Served(process)
    announced = threading.Event()

    def pump(stream: object, into: list[str], watch: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)
            if watch and (match := BANNER.search(line)):
                served.base_url = match.group(1)
                announced.set()
        announced.set()  # EOF: the process ended, announced or not

    readers = [
        threading.Thread(target=pump, args=(process.stdout, served.stdout, False), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, served.stderr, True), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        assert announced.wait(30), "the server did not announce itself within 30 s"
        assert served.base_url, f"the server did not start: {served.output}"
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C: the shutdown a user sees
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in readers:
            reader.join(5)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def command_lines() -> dict[int, bytes]:
    """Every process's command line, as ``ps`` shows it to any user (``/proc/<pid>/cmdline``)."""
    lines: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # ended meanwhile
                continue
    return lines


def assert_key_hidden(served: Served, key: str) -> None:
    own = Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
    assert b"serve" in own.split(b"\0")  # the right process...
    assert key.encode() not in own  # ...and the key is not on its command line
    assert not [pid for pid, line in command_lines().items() if key.encode() in line]


def status(url: str, key: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    response = httpx.get(url, headers=headers, timeout=10)
    return response.status_code, response.text


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_key_from_the_environment_is_required_and_never_shown(tmp_path: Path) -> None:
    with serve(env=clean_env(**{ENV_API_KEY: KEY})) as served:
        assert_key_hidden(served, KEY)
        models = served.base_url + "/models"
        assert status(models)[0] == 401
        code, body = status(models, DECOY)
        assert code == 401 and DECOY not in body and KEY not in body
        assert status(models, KEY)[0] == 200
        # One variable for both sides: `streamkit chat` sends the STREAMKIT_API_KEY it finds.
        argv = ["chat", "Hello", "--base-url", served.base_url, "--max-tokens", "5"]
        chat = subprocess.run(
            [sys.executable, "-m", "streamkit.cli", *argv],
            capture_output=True,
            text=True,
            env=clean_env(**{ENV_API_KEY: KEY}),
            timeout=60,
            check=False,
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.strip()
    assert served.process.returncode is not None
    banner = "".join(served.stderr)
    assert "(API key required, from STREAMKIT_API_KEY)" in banner
    assert KEY not in served.output
    assert KEY not in chat.stdout + chat.stderr


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_key_from_a_file_wins_over_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "server.key"
    key_file.write_text(f"  {KEY}  \nnot part of the key\n")
    with serve("--api-key-file", str(key_file), env=clean_env(**{ENV_API_KEY: DECOY})) as served:
        assert_key_hidden(served, KEY)
        models = served.base_url + "/models"
        assert status(models)[0] == 401
        assert status(models, DECOY)[0] == 401  # the option beats the environment
        assert status(models, KEY)[0] == 200
    assert f"(API key required, from --api-key-file {key_file})" in "".join(served.stderr)
    assert KEY not in served.output and DECOY not in served.output


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "the first line is empty (put the key on it)"),
        # A blank first line is an error even when the key follows: never guess.
        (f"   \n{KEY}\n".encode(), "the first line is empty (put the key on it)"),
        (b"\xff\xfe" + KEY.encode(), "not UTF-8 text"),
        (None, "cannot read it (No such file or directory)"),
        ("directory", "cannot read it (Is a directory)"),
    ],
    # Fixed ids: the random key must not be in a test's name (every xdist worker collects the
    # same names, and reports do not show the key).
    ids=["empty", "blank-first-line", "not-utf-8", "missing", "directory"],
)
def test_a_key_file_without_a_key_is_a_one_line_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | str | None, why: str
) -> None:
    path = tmp_path / "server.key"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert main(["serve", "--port", "0", "--api-key-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"streamkit: error: --api-key-file {path}: {why}\n"
    assert KEY not in captured.err


def test_api_key_and_api_key_file_together_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.key"
    path.write_text(KEY)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--api-key", DECOY, "--api-key-file", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --api-key-file: not allowed with argument --api-key" in err
    assert KEY not in err and DECOY not in err
    # The same rule for a caller of the resolver itself.
    with pytest.raises(ValueError, match="cannot be used together"):
        resolve_api_key(DECOY, str(path))


def test_the_resolver_prefers_options_and_ignores_a_blank_variable(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    path.write_text(KEY + "\n")
    env = {ENV_API_KEY: f" {DECOY} "}
    assert resolve_api_key(KEY, None, env) == (KEY, "--api-key")
    assert resolve_api_key(None, str(path), env) == (KEY, f"--api-key-file {path}")
    assert resolve_api_key(None, None, env) == (DECOY, ENV_API_KEY)
    assert resolve_api_key(None, None, {ENV_API_KEY: "  "}) == (None, None)
    assert resolve_api_key(None, None, {}) == (None, None)
    with pytest.raises(ValueError, match=r"^--api-key is empty"):
        resolve_api_key(" ", None, env)


def test_serving_beyond_loopback_without_a_key_names_the_safe_ways(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "Set STREAMKIT_API_KEY or pass --api-key-file PATH" in err
    assert err.count("\n") == 1


def test_reprs_of_a_server_with_a_key_do_not_show_it() -> None:
    with serve_in_thread(api_key=KEY) as running:
        shown = [repr(running), str(running), repr(running.app), str(running.app)]
        assert all(KEY not in text for text in shown), shown
        assert "api key required" in repr(running)
        assert status(running.base_url + "/models", KEY)[0] == 200


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc (Linux)")
def test_a_child_process_server_gets_its_key_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serve_in_subprocess(api_key=KEY) as child:
        assert KEY.encode() not in Path(f"/proc/{child.process.pid}/cmdline").read_bytes()
        assert KEY not in repr(child)
        models = child.base_url + "/models"
        assert status(models)[0] == 401
        assert status(models, KEY)[0] == 200
        assert "from STREAMKIT_API_KEY" in child.log
        assert KEY not in child.log
    # No key asked for: a STREAMKIT_API_KEY meant for clients does not lock the child server.
    monkeypatch.setenv(ENV_API_KEY, KEY)
    with serve_in_subprocess() as child:
        assert status(child.base_url + "/models")[0] == 200
