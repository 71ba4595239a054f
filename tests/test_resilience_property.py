"""Property: across random fault plans, a resumable stream ends with exactly the fault-free text.

1,600 seeded-random fault plans (0–3 faults of every kind from docs/protocol.md, with and without
``attempts``) run against the bundled server, 400 on each transport (the openai SDK's SSE,
httpx2 SSE, asyncio + httptools SSE, WebSocket) and in each client mode (resume by id; restart
without ids; raise without ids). For every plan an independent oracle, written from
docs/protocol.md alone, predicts the outcome: which attempt succeeds, or which typed error ends
the stream and how many tokens it kept. Each run must then

- when the oracle says it recovers: end ``completed`` with exactly the fault-free text (no token
  duplicated, none lost) after exactly the predicted number of attempts (the policy allows
  ``MAX_ATTEMPTS`` failures in a row without progress);
- otherwise: fail with the predicted error class, its partial text exactly the predicted prefix
  of the fault-free text;
- and never hang (every run has a deadline).

The seed is fixed, so a failure is reproducible; the failing plans are printed in full.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import streamkit as sk
from streamkit.events import Event, StreamRetry, TokenDelta
from streamkit.server import RunningServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SEED = 20250611
RUNS_PER_TRANSPORT = 400
TRANSPORTS = ("sse", "generic-sse", "fast-sse", "ws")
MAX_ATTEMPTS = 6
IDLE = 1.0  # the idle timeout; a "long" stall exceeds it, a short one is far below it
LONG_STALL, SHORT_STALL = 4.0, 0.02
CONCURRENCY = 24
RUN_DEADLINE = 60.0
PROMPT = "Property test prompt"
SIM = {"ttft": 0.0, "tokens_per_second": 3000, "jitter": 0.0}
POLICY = sk.RetryPolicy(
    max_attempts=MAX_ATTEMPTS, base_delay=0.002, max_delay=0.01, max_elapsed=None
)


@dataclass
class Plan:
    transport: str
    mode: str  # "resume" | "restart" | "raise"
    length: int
    faults: list[dict[str, Any]]
    outcome: str = ""  # predicted: "ok" or an error class name
    kept: int = 0  # predicted tokens in the final text (partial text on failure)
    attempts: int = 0  # predicted attempts
    problems: list[str] = field(default_factory=list)


def make_plan(rng: random.Random, transport: str) -> Plan:
    length = rng.randint(1, 40)
    mode = rng.choices(["resume", "restart", "raise"], weights=[6, 2, 2])[0]
    faults: list[dict[str, Any]] = []
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        kind = rng.choices(["drop", "stall", "status", "malformed", "no_done"], [6, 2, 2, 1, 2])[0]
        fault: dict[str, Any] = {"kind": kind}
        if kind in ("drop", "stall", "malformed"):
            fault["at"] = rng.randint(0, length)
        if kind == "drop":
            fault["mid_frame"] = rng.random() < 0.5
        elif kind == "stall":
            fault["seconds"] = LONG_STALL if rng.random() < 0.1 else SHORT_STALL
        elif kind == "status":
            fault["code"] = rng.choice([429, 500, 503])
            if rng.random() < 0.5:
                fault["retry_after"] = rng.choice([0, 0.01, 0.03])
        elif kind == "no_done" and rng.random() < 0.7:
            fault["at"] = rng.randint(0, length)
        if rng.random() < 0.8:
            fault["attempts"] = rng.randint(1, 3)
        faults.append(fault)
    plan = Plan(transport, mode, length, faults)
    predict(plan)
    return plan


def predict(plan: Plan) -> None:
    """The outcome docs/protocol.md implies for ``plan``, attempt by attempt."""
    length, kept, number, streak = plan.length, 0, 1, 0
    while True:
        active = [(i, f) for i, f in enumerate(plan.faults) if number <= f.get("attempts", number)]
        start = kept if plan.mode == "resume" else 0
        status = next((f for _, f in active if f["kind"] == "status"), None)
        error: str | None = None
        got = length - start  # tokens this attempt delivers
        if status is not None:
            error, got = ("RateLimitError" if status["code"] == 429 else "ServerError"), 0
        else:
            firing = []
            for i, f in active:
                if f["kind"] == "status":
                    continue
                at = min(f.get("at", length), length) if f["kind"] == "no_done" else f["at"]
                if start <= at <= length:
                    firing.append((at, i, f))
            for at, _, f in sorted(firing, key=lambda x: (x[0], x[1])):
                kind = f["kind"]
                if kind == "stall" and f["seconds"] < IDLE:
                    continue
                error = {
                    "stall": "IdleTimeout",
                    "malformed": "ProtocolError",
                    "drop": "StreamInterrupted",
                    # Over WebSocket the stream just stops: only the idle timeout notices.
                    "no_done": "IdleTimeout" if plan.transport == "ws" else "StreamInterrupted",
                }[kind]
                got = at - start
                break
        kept = start + got if plan.mode == "resume" else got
        if error is None:
            plan.outcome, plan.kept, plan.attempts = "ok", length, number
            return
        # The policy counts failures in a row without progress; new tokens kept by a resumed
        # attempt are progress and start the count again.
        streak = 1 if plan.mode == "resume" and got > 0 else streak + 1
        permanent = error == "ProtocolError"
        no_ids_with_text = plan.mode == "raise" and got > 0
        if permanent or no_ids_with_text or streak == MAX_ATTEMPTS:
            plan.outcome, plan.kept, plan.attempts = error, kept, number
            return
        number += 1


def plans() -> list[Plan]:
    rng = random.Random(SEED)
    return [make_plan(rng, t) for t in TRANSPORTS for _ in range(RUNS_PER_TRANSPORT)]


async def references(server: RunningServer, lengths: set[int]) -> dict[int, list[str]]:
    """The fault-free tokens for each length (same prompt and seed as every run)."""
    out: dict[int, list[str]] = {}
    async with sk.Client(server.base_url, model="sim-small", retry=None) as client:
        for length in sorted(lengths):
            tokens = [
                e.text
                async for e in client.events(
                    PROMPT, seed=length, extra_body={"streamkit": {**SIM, "length": length}}
                )
                if isinstance(e, TokenDelta)
            ]
            assert len(tokens) == length
            out[length] = tokens
    return out


def client_for(server: RunningServer, plan: Plan) -> sk.Client:
    return sk.Client(
        server.base_url,
        model="sim-small",
        transport=plan.transport,  # type: ignore[arg-type]
        retry=POLICY,
        idle_timeout=IDLE,
        resume=plan.mode == "resume",
        on_interrupt="raise" if plan.mode == "raise" else "restart",
    )


async def execute(client: sk.Client, plan: Plan, reference: list[str]) -> None:
    events: list[Event] = []
    result = sk.StreamResult()
    extra = {"streamkit": {**SIM, "length": plan.length, "faults": plan.faults}}
    try:
        async with asyncio.timeout(RUN_DEADLINE):
            try:
                async for event in client.events(PROMPT, seed=plan.length, extra_body=extra):
                    events.append(event)
                    result.apply(event)
            except sk.StreamkitError as exc:
                result.error = exc
                result.status = "failed"
    except TimeoutError:
        plan.problems.append(f"hung for {RUN_DEADLINE} s")
        return
    attempts = 1 + sum(isinstance(e, StreamRetry) for e in events)
    full = "".join(reference)
    if plan.outcome == "ok":
        if result.status != "completed":
            plan.problems.append(f"expected completion, got {result.error!r}")
        elif result.text != full:
            plan.problems.append(f"text differs: {result.text!r} != {full!r}")
    else:
        if type(result.error).__name__ != plan.outcome:
            plan.problems.append(f"expected {plan.outcome}, got {result.error!r}")
        elif result.error is not None and result.error.partial_text != "".join(
            reference[: plan.kept]
        ):
            plan.problems.append(
                f"partial text {result.error.partial_text!r} is not the first {plan.kept} "
                f"tokens {''.join(reference[: plan.kept])!r}"
            )
    if result.text and not full.startswith(result.text):
        plan.problems.append("the kept text is not a prefix of the full text")
    if attempts != plan.attempts:
        plan.problems.append(f"{attempts} attempts, predicted {plan.attempts}")
    # Indices of the kept tokens are exactly 0..n-1: none twice, none missing.
    kept = [e.index for e in events if isinstance(e, TokenDelta)]
    last_restart = max(
        (i for i, e in enumerate(events) if isinstance(e, StreamRetry) and e.discarded), default=-1
    )
    if last_restart >= 0:
        kept = [e.index for e in events[last_restart:] if isinstance(e, TokenDelta)]
    if kept != list(range(len(kept))):
        plan.problems.append(f"token indices {kept}")


async def test_random_fault_plans_recover_exactly_or_fail_typed(server: RunningServer) -> None:
    all_plans = plans()
    refs = await references(server, {p.length for p in all_plans})
    started = time.perf_counter()
    slots = asyncio.Semaphore(CONCURRENCY)
    shared = {
        (t, m): client_for(server, Plan(t, m, 1, []))
        for t in ("sse", "generic-sse", "fast-sse")
        for m in ("resume", "restart", "raise")
    }

    async def one(plan: Plan) -> None:
        async with slots:
            if plan.transport == "ws":
                # One socket per plan: a drop closes the whole socket, which would also
                # interrupt (and so re-number the attempts of) unrelated plans sharing it.
                async with client_for(server, plan) as client:
                    await execute(client, plan, refs[plan.length])
            else:
                await execute(shared[plan.transport, plan.mode], plan, refs[plan.length])

    try:
        await asyncio.gather(*(one(p) for p in all_plans))
    finally:
        for client in shared.values():
            await client.aclose()
    elapsed = time.perf_counter() - started

    failed = [p for p in all_plans if p.problems]
    recovered = sum(p.outcome == "ok" for p in all_plans)
    faulty = sum(bool(p.faults) for p in all_plans)
    print(
        f"\n{len(all_plans)} fault plans ({faulty} with faults; {recovered} predicted to "
        f"recover, {len(all_plans) - recovered} to fail typed) in {elapsed:.1f} s; "
        f"{len(failed)} wrong"
    )
    assert len(all_plans) >= 1000
    assert not failed, "\n".join(
        f"{p.transport}/{p.mode} length={p.length} faults={p.faults} predicted "
        f"{p.outcome} kept={p.kept} attempts={p.attempts}: {'; '.join(p.problems)}"
        for p in failed[:20]
    )
