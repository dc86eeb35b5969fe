"""Chaos: 50 concurrent turns on 2 workers while 3 random SIGKILLs hit worker processes
(a busy pool process, or a whole worker that is then replaced by a fresh one).

Every turn must end COMPLETED and no step may be checkpointed twice. The seed of the
random choices is printed; ``CHAOS_SEED=<n>`` replays a run.
"""

from __future__ import annotations

import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from agent_platform.testing import ScriptedModel, text, tool_call

from .agents_failures import tool_events
from .helpers import Api, Platform, chain_problems
from .workers import Worker, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

AGENT_APP = "tests.agents_failures:ops_buddy"
PLATFORM_WORKERS = 2
PLATFORM_CONCURRENCY = 2
PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
    "AGENT_PLATFORM_LLM_BACKOFF": "0.05",
}
TURNS = 50
KILLS = 3
TOOL_SECONDS = 1.0


def _token(body: dict[str, Any]) -> str:
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return re.search(r"chaos-\d+", user).group(0)  # type: ignore[union-attr]


def _responder(body: dict[str, Any]) -> Any:
    token = _token(body)
    if body["messages"][-1]["role"] == "user":
        return tool_call("slow_task", {"seconds": TOOL_SECONDS, "label": token})
    return text(f"Done with {token}.")


def _busy_pids(client: redis.Redis) -> set[int]:
    """Pool processes inside slow_task right now (a start without its end)."""
    started: dict[tuple[int, str], int] = {}
    for event in tool_events(client):
        key = (event["pid"], event["idempotency_key"])
        started[key] = started.get(key, 0) + (1 if event["event"] == "slow_task:start" else -1)
    return {pid for (pid, _), open_ in started.items() if open_ > 0}


def _kill(platform: Platform, rng: random.Random, client: redis.Redis) -> str:
    """One SIGKILL: a busy pool process (the worker replaces it), or a whole worker
    whose pool is busy (a fresh worker takes its place)."""
    alive = [w for w in platform.stack.workers if w.alive()]
    busy = _busy_pids(client)
    deadline = time.monotonic() + 3
    while not busy & {p for w in alive for p in w.pool_pids()} and time.monotonic() < deadline:
        time.sleep(0.05)
        busy = _busy_pids(client)
    owners: dict[int, Worker] = {p: w for w in alive for p in w.pool_pids()}
    candidates = sorted(busy & set(owners)) or sorted(owners)
    victim_pid = rng.choice(candidates)
    worker = owners[victim_pid]
    if rng.random() < 0.5:
        os.kill(victim_pid, 9)
        return f"pool process {victim_pid} of {worker.name}"
    platform.stack.kill_worker(worker)
    fresh = platform.stack.start_worker(wait=False)
    return f"worker {worker.name} (main {worker.pid}, busy child {victim_pid}); started {fresh.name}"


def test_chaos_50_turns_3_sigkills(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    run_chaos(api, model, platform, redis_client, TURNS, KILLS)


def run_chaos(
    api: Api, model: ScriptedModel, platform: Platform, trace: redis.Redis, turns: int, kills_wanted: int
) -> None:
    """``turns`` concurrent turns of OpsBuddy (``platform`` serves only it), ``kills_wanted``
    random SIGKILLs at random points of their progress; then every turn must be COMPLETED
    with one ``ok`` record per step (plus at most one ``lost`` record per kill), the tool's
    runs under one idempotency key, and the session's memory written once. ``trace`` is the
    Redis of the tools' trace."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"CHAOS_SEED={seed}")
    rng = random.Random(seed)
    model.set_responder(_responder)
    tokens = [f"chaos-{i:02d}" for i in range(turns)]
    # kill when this many steps (of 5 per turn) have been checkpointed
    total = turns * 5
    thresholds = sorted(rng.sample(range(total // 20, total * 3 // 5), kills_wanted))

    with ThreadPoolExecutor(10) as pool:
        ids = dict(
            zip(tokens, pool.map(lambda t: api.start_turn(f"Run the task for {t}", session_id=t), tokens), strict=True)
        )
    kills: list[str] = []
    deadline = time.monotonic() + 150
    while True:
        listed = api.http.get("/workflows", params={"limit": 500}).json()["workflows"]
        statuses = {w["instance_id"]: w["runtime_status"] for w in listed}
        completed = sum(1 for wf in ids.values() if statuses.get(wf) == "COMPLETED")
        progress = sum(w["steps_completed"] for w in listed)
        if len(kills) < kills_wanted and progress >= thresholds[len(kills)]:
            assert completed < turns, f"every turn completed before kill {len(kills) + 1}: {kills}"
            kills.append(f"at {progress}/{total} steps: {_kill(platform, rng, trace)}")
            continue
        if completed == turns or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print("\n".join(kills))

    unfinished = {t: statuses.get(wf) for t, wf in ids.items() if statuses.get(wf) != "COMPLETED"}
    assert not unfinished, f"{len(unfinished)} turns not COMPLETED: {unfinished}; kills: {kills}"
    assert len(kills) == kills_wanted
    for token, wf in ids.items():
        status = api.status(wf)
        assert status["output"] == f"Done with {token}.", status
        assert status["steps_completed"] == 5 and status["iteration"] == 2, status
        steps = api.steps(wf)
        # a run cut by a kill is a `lost` record; otherwise no step checkpointed twice: one
        # ok record per step of the chain, one result per call
        lost = [s for s in steps if s["status"] == "lost"]
        assert len(lost) <= kills_wanted, lost
        steps = [s for s in steps if s["status"] != "lost"]
        assert [(s["kind"], s["status"]) for s in steps] == [
            ("start", "ok"), ("llm", "ok"), ("tool", "ok"), ("llm", "ok"), ("finish", "ok"),
        ], (token, steps)  # fmt: skip
        assert chain_problems(steps) == [], token
        call_id = steps[1]["data"]["tool_calls"][0]["id"]
        assert steps[2]["data"]["call_id"] == call_id
        # every run of the tool (a killed one included) used the same idempotency key
        runs = [e for e in tool_events(trace, "slow_task:start") if e["workflow_id"] == wf]
        assert runs and {e["idempotency_key"] for e in runs} == {f"{wf}:{call_id}"}, runs
        # the session's history holds the turn once
        history = wait_until(lambda: platform.history(token, agent="OpsBuddy"), timeout=10)  # noqa: B023
        assert [(m["role"], m["workflow_id"]) for m in history] == [("user", wf), ("assistant", wf)], history
    assert not model.errors
    for worker in platform.stack.workers:
        if worker.alive():
            platform.stack.wait_ready(worker)
    redispatched = sum(len(re.findall(r"re-dispatching", w.log(since_mark=True))) for w in platform.stack.workers)
    print(f"steps re-dispatched by the sweeper: {redispatched}; model calls: {model.calls} for {turns * 2} steps")
