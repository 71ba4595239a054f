"""A replica is killed mid-stream: do the conversations it was serving finish, with the same text?

Three bundled servers, each in its own process, behind one :class:`~streamkit.LoadBalancer`;
``--conversations`` conversations of ``--turns`` turns each run at once (sticky, seeded). Each turn
sends the conversation's fault-free history, so every turn has one right answer: the text of a
fault-free run done first. ``--kill-at`` seconds into the run, one server gets SIGKILL (the
streams it serves are cut, its port refuses connections); it is started again on the same port
``--outage`` seconds later, if the run is still going.

Each mode prints one line: turns completed, turns whose text equals the fault-free one, streams
that moved to another endpoint mid-stream (resumed or restarted), tokens discarded::

    python benchmarks/scenario_replica_kill.py                      # 12 x 6, 12.6 s outage
    python benchmarks/scenario_replica_kill.py --mode not-declared  # the same without equivalent=

``equivalent``: the balancer is told the servers are replicas that regenerate the same stream
(``equivalent=True``), so a cut stream resumes on another one after its last token.
``not-declared``: the default balancer with ``on_interrupt="raise"``, where a cut stream can only
resume on the server that was killed.
``restart``: not declared, ``on_interrupt="restart"``: a cut stream starts over on another server
(text still identical, since the servers are deterministic; the discarded tokens are counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import streamkit as sk
from streamkit.events import StreamRetry, StreamStart
from streamkit.resume import OnInterrupt
from streamkit.server.process import ServerProcess, serve_in_subprocess

MODES = ("equivalent", "not-declared", "restart")


class Moves:
    """One conversation's retries that moved its stream to another endpoint after a token."""

    def __init__(self) -> None:
        self.resumed = 0
        self.restarted = 0
        self.discarded = 0
        self._endpoint: str | None = None
        self._pending: StreamRetry | None = None

    def on_event(self, event: Any) -> None:
        if isinstance(event, StreamRetry):
            self._pending = event
            self.discarded += event.discarded
        elif isinstance(event, StreamStart):
            retry, self._pending = self._pending, None
            if retry is not None and event.endpoint != self._endpoint:
                if retry.resume_after is not None:
                    self.resumed += 1
                elif retry.discarded:
                    self.restarted += 1
            self._endpoint = event.endpoint

    def finish(self, result: object) -> None:
        self._endpoint = self._pending = None


def prompt(conversation: int, turn: int) -> str:
    return f"Conversation {conversation}, turn {turn}: how do replicas keep a stream going?"


async def run(
    lb: sk.LoadBalancer, args: argparse.Namespace, reference: list[list[str]] | None
) -> tuple[list[list[str | None]], list[Moves]]:
    """Every conversation at once; each turn's history is the fault-free one (``reference``;
    None: the run's own, for the fault-free run itself)."""
    body = {"streamkit": {"length": args.length}}
    moves = [Moves() for _ in range(args.conversations)]

    async def conversation(i: int) -> list[str | None]:
        texts: list[str | None] = []
        history: list[dict[str, str]] = []
        for turn in range(args.turns):
            history.append({"role": "user", "content": prompt(i, turn)})
            result = await lb.chat(
                list(history),
                view=None,
                raise_on_error=False,
                seed=i,
                conversation_id=f"c{i}",
                extra_body=body,
                observers=[moves[i]],
            )
            texts.append(result.text if result.ok else None)
            answer = reference[i][turn] if reference is not None else result.text
            history.append({"role": "assistant", "content": answer})
        return texts

    texts = await asyncio.gather(*(conversation(i) for i in range(args.conversations)))
    return texts, moves


async def scenario(args: argparse.Namespace, mode: str, reference: list[list[str]]) -> str:
    servers = [serve_in_subprocess() for _ in range(3)]
    victim = servers[1]
    port = int(victim.base_url.rsplit(":", 1)[1].split("/")[0])
    on_interrupt: OnInterrupt = "restart" if mode == "restart" else "raise"
    lb = sk.LoadBalancer(
        [s.base_url for s in servers],
        model="sim-small",
        health_interval=0.5,
        equivalent=mode == "equivalent",
        on_interrupt=on_interrupt,
    )
    restarted: list[ServerProcess] = []
    events: list[str] = []
    began = time.perf_counter()

    async def kill_then_restart() -> None:
        await asyncio.sleep(args.kill_at)
        victim.process.kill()  # SIGKILL: no goodbye, every stream on it is cut
        victim.process.wait()
        events.append(f"killed ep1 at {time.perf_counter() - began:.1f} s")
        await asyncio.sleep(args.outage)
        restarted.append(await asyncio.to_thread(serve_in_subprocess, port))
        events.append(f"restarted it at {time.perf_counter() - began:.1f} s")

    chaos = asyncio.create_task(kill_then_restart())
    try:
        async with lb:
            texts, moves = await run(lb, args, reference)
    finally:
        ended = time.perf_counter() - began
        chaos.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaos
        for s in [*servers, *restarted]:
            s.stop()
    if len(events) < 2:
        events.append(f"the run ended at {ended:.1f} s, before the restart")
    total = args.conversations * args.turns
    done = sum(t is not None for row in texts for t in row)
    same = sum(
        t == r
        for row, ref in zip(texts, reference, strict=True)
        for t, r in zip(row, ref, strict=True)
    )
    return (
        f"{mode:>12}: completed {done}/{total}, identical {same}/{total}; moved mid-stream: "
        f"{sum(m.resumed for m in moves)} resumed, {sum(m.restarted for m in moves)} restarted, "
        f"{sum(m.discarded for m in moves)} tokens discarded ({'; '.join(events)})"
    )


async def main(args: argparse.Namespace) -> None:
    # The fault-free reference: the same conversations on healthy servers.
    servers = [serve_in_subprocess() for _ in range(3)]
    try:
        async with sk.LoadBalancer([s.base_url for s in servers], model="sim-small") as lb:
            reference, _ = await run(lb, args, None)
    finally:
        for s in servers:
            s.stop()
    assert all(t is not None for row in reference for t in row), "the fault-free run failed"
    ref: list[list[str]] = [[t or "" for t in row] for row in reference]
    modes = MODES if args.mode == "all" else (args.mode,)
    for mode in modes:
        print(await scenario(args, mode, ref), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--length", type=int, default=60, help="tokens per reply (default 60)")
    parser.add_argument("--kill-at", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--outage", type=float, default=12.6, help="seconds (default 12.6)")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    asyncio.run(main(parser.parse_args()))
