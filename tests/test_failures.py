"""Crash recovery (DESIGN section 3 rules 1, 2 and 7): cases C04, C06, C07 and C08, and a
worker killed between a checkpoint and the dispatch of the next step (fault injection).

Real worker processes are SIGKILLed and a real redis-server is restarted; recovery comes
from step leases and the sweeper in every worker, never from Celery's visibility timeout
(which stays at its production value of an hour, except in C07).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, text, tool_call

from .agents_failures import tool_events
from .helpers import LOCAL_STEPS, Api, Platform, chain_problems, platform_env, running_platform, use_workers
from .workers import Worker, wait_until

AGENT_APP = "tests.agents_failures:ops_buddy"
#: Fast recovery for tests: a lease lives 3 s without a heartbeat, the sweeper looks
#: every 0.5 s, a dispatched step may wait 5 s in the queue before it is sent again.
PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
    "AGENT_PLATFORM_LLM_BACKOFF": "0.05",
}
QUEUE = "agent.OpsBuddy"


def _slow_then_answer(seconds: float, answer: str) -> list[Any]:
    return [tool_call("slow_task", {"seconds": seconds, "label": "slow"}), text(answer)]


def _first_model_calls(model: ScriptedModel) -> int:
    """Requests that answer the user's message (the turn's first model call)."""
    return sum(1 for r in model.requests if r["messages"][-1]["role"] == "user")


def _alive(platform: Platform) -> list[Worker]:
    return [w for w in platform.stack.workers if w.alive()]


def _log(workers: list[Worker]) -> str:
    return "\n".join(w.log() for w in workers)


# -- C04 --------------------------------------------------------------------------------


def test_c04_sigkill_of_the_whole_worker_during_a_tool_call(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    use_workers(platform)
    model.add(*_slow_then_answer(10, "The 10 s task is done."))
    wf = api.start_turn("Run the 10 s task", session_id="c04")
    started = wait_until(lambda: tool_events(redis_client, "slow_task:start"), timeout=15, message="tool start")
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= 2.0, timeout=5, message="2 s into the tool")  # the case's timing

    killed = _alive(platform)[0].hostname
    for worker in _alive(platform):
        platform.stack.kill_worker(worker)  # SIGKILL of the main process and its pool children
    assert not _alive(platform)
    assert api.status(wf)["runtime_status"] == "RUNNING"
    fresh = platform.stack.start_worker()
    fresh_ready = time.monotonic()
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    assert time.monotonic() - fresh_ready < 30
    assert status["output"] == "The 10 s task is done."
    # the first model call was made exactly once; the tool started twice, checkpointed once
    assert _first_model_calls(model) == 1 and model.calls == 2
    starts = tool_events(redis_client, "slow_task:start")
    assert len(starts) == 2, starts
    assert {s["idempotency_key"] for s in starts} == {started[0]["idempotency_key"]}
    steps = api.steps(wf)
    # the killed run is a `lost` record naming its worker (DESIGN rule 11); no step twice
    assert [(s["kind"], s["status"]) for s in steps] == [
        ("start", "ok"), ("llm", "ok"), ("tool", "lost"), ("tool", "ok"), ("llm", "ok"), ("finish", "ok"),
    ]  # fmt: skip
    assert chain_problems(steps) == []
    assert steps[2]["worker"] == killed and steps[3]["worker"] == fresh.hostname
    assert re.search(rf"(re-dispatching|taking over) {wf} step tool/2", fresh.log()), fresh.log()[-3000:]


# -- C08 --------------------------------------------------------------------------------


def test_c08_terminate_persists_while_no_worker_runs(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    use_workers(platform)
    model.add(*_slow_then_answer(5, "never sent"))
    wf = api.start_turn("Run the 5 s task", session_id="c08")
    wait_until(lambda: tool_events(redis_client, "slow_task:start"), timeout=15, message="tool start")

    platform.stack.stop()  # warm shutdown: the tool finishes, checkpoints and queues the next step
    assert not _alive(platform)
    assert [s["kind"] for s in api.steps(wf)] == ["start", "llm", "tool"]
    assert redis_client.llen(QUEUE) >= 1  # the next llm step waits in the broker
    calls = model.calls
    response = api.http.post(f"/workflows/{wf}/terminate", json={"reason": "workers are down"})

    assert response.status_code == 202 and response.json()["runtime_status"] == "TERMINATED"
    assert api.status(wf)["runtime_status"] == "TERMINATED"
    fresh = use_workers(platform)
    assert api.status(wf)["runtime_status"] == "TERMINATED"
    # the queued llm step is consumed and refused; nothing else runs
    wait_until(
        lambda: re.search(r"step\.llm\[[\w-]+\] succeeded in [\d.e-]+s: 'finished'", fresh.log()),
        timeout=20,
        message="the queued llm step to be refused",
    )
    wait_until(lambda: redis_client.llen(QUEUE) == 0, timeout=10, message="an empty queue")
    status = api.status(wf)
    assert status["runtime_status"] == "TERMINATED" and status["stop_reason"] == "terminated"
    assert model.calls == calls == 1
    assert [s["kind"] for s in api.steps(wf)] == ["start", "llm", "tool"]


# -- fault injection: a crash between a checkpoint and the next dispatch ----------------


@pytest.mark.parametrize("kind", ["llm", "tool"])
def test_sweeper_finishes_a_turn_whose_next_step_was_never_dispatched(
    kind: str, api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    """``AGENT_PLATFORM_FAULT=exit_after_checkpoint:<kind>`` SIGKILLs the pool process
    right after the ``<kind>`` step's checkpoint, before it enqueues the next step: no
    message exists for the next step, and only the sweeper can move the turn on."""
    faulty = use_workers(
        platform, AGENT_PLATFORM_FAULT=f"exit_after_checkpoint:{kind}", AGENT_PLATFORM_DISPATCH_GRACE="2"
    )
    model.add(*_slow_then_answer(0.2, "Recovered by the sweeper."))
    wf = api.start_turn("Run a quick task", session_id=f"fault-{kind}")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Recovered by the sweeper."
    log = faulty.log()
    assert f"fault injection: SIGKILL after checkpoint of {kind}" in log, log[-3000:]
    next_step = {"llm": "tool/2", "tool": "llm/3"}[kind]
    assert re.search(rf"re-dispatching {wf} step {next_step}", log), log[-3000:]
    assert model.calls == 2
    assert len(tool_events(redis_client, "slow_task:start")) == 1
    steps = api.steps(wf)
    # with local steps, the checkpoint had opened the next step for the killed process:
    # that run is a `lost` record; otherwise one record per step
    lost = [s["kind"] for s in steps if s["status"] == "lost"]
    assert lost == ([next_step.split("/")[0]] if LOCAL_STEPS else []), steps
    assert [s["kind"] for s in steps if s["status"] != "lost"] == ["start", "llm", "tool", "llm", "finish"]
    assert chain_problems(steps) == []


def test_a_crash_after_the_final_checkpoint_completes_the_turn_with_memory_once(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    """Issue 15: the last ``llm`` step's checkpoint writes the ``finish`` record and the
    COMPLETED status; ``exit_after_checkpoint:finish`` SIGKILLs the pool process right
    after it, before memory is appended and the session freed. The sweeper finishes the
    turn: memory holds it once, and the session's next turn runs and sees it."""
    faulty = use_workers(
        platform, AGENT_PLATFORM_FAULT="exit_after_checkpoint:finish", AGENT_PLATFORM_DISPATCH_GRACE="2"
    )
    model.add(*_slow_then_answer(0.1, "Finished, then killed."))
    model.add(text("The first turn is in my memory."))
    wf = api.start_turn("Run a quick task", session_id="fault-finish")
    waiting = api.start_turn("What did I ask before?", session_id="fault-finish")

    status = api.wait_status(wf, timeout=30)
    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Finished, then killed."
    following = api.wait_status(waiting, timeout=30)

    assert following["runtime_status"] == "COMPLETED", following
    log = faulty.log()
    assert "fault injection: SIGKILL after checkpoint of finish" in log, log[-3000:]
    history = platform.history("fault-finish", agent="OpsBuddy")
    assert [(m["role"], m["workflow_id"]) for m in history] == [
        ("user", wf), ("assistant", wf), ("user", waiting), ("assistant", waiting),
    ]  # fmt: skip
    prompt = [(m["role"], m.get("content")) for m in model.requests[-1]["messages"][1:]]
    assert prompt == [
        ("user", "Run a quick task"), ("assistant", "Finished, then killed."), ("user", "What did I ask before?"),
    ]  # fmt: skip
    steps = api.steps(wf)
    assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]
    assert chain_problems(steps) == []


# -- a private Redis and platform (C06 restarts Redis, C07 shortens the visibility timeout)


@contextmanager
def private_platform(
    tmp_path: Path, model: ScriptedModel, workers: int = 1, **extra: str
) -> Iterator[tuple[EmbeddedRedis, Platform, redis.Redis]]:
    """A redis-server (AOF on) of its own, with workers and a web app pointed at it."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=True).start()
    try:
        env = platform_env(server.url, model.base_url, AGENT_APP, **{**PLATFORM_ENV, **extra})
        with running_platform(env, tmp_path / "workers", workers=workers, concurrency=2) as deployment:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            try:
                yield server, deployment, client
            except BaseException:
                print(deployment.stack.logs(since_mark=False))  # shown with the failure
                raise
            finally:
                client.close()
    finally:
        server.stop()


# -- C06 --------------------------------------------------------------------------------


def _c06_responder(body: dict[str, Any]) -> Any:
    last = body["messages"][-1]
    if last["role"] == "user":
        seconds = 5 if "in flight" in last["content"] else 0.1
        return tool_call("slow_task", {"seconds": seconds, "label": last["content"]})
    return text(f"Done: {last['content']}")


def test_c06_redis_restarts_while_a_turn_is_in_flight(tmp_path: Path, model: ScriptedModel) -> None:
    model.set_responder(_c06_responder)
    with private_platform(tmp_path, model) as (server, deployment, client):
        api = deployment.api
        assert api is not None
        workers = {w.pid: w.hostname for w in deployment.stack.workers}
        in_flight = api.start_turn("the turn in flight", session_id="c06-a")
        wait_until(lambda: tool_events(client, "slow_task:start"), timeout=15, message="tool start")

        server.restart()  # stop (SIGTERM, AOF flushed) and start on the same port and data dir
        restarted = time.monotonic()
        status = api.wait_status(in_flight, timeout=40)
        assert status["runtime_status"] == "COMPLETED", status

        wait_until(lambda: time.monotonic() - restarted >= 5.0, timeout=10, message="5 s after the restart")
        later = api.start_turn("a turn started after the restart", session_id="c06-b")
        status = api.wait_status(later, timeout=40)

        assert status["runtime_status"] == "COMPLETED", status
        # the same workers, never restarted
        assert {w.pid: w.hostname for w in deployment.stack.workers if w.alive()} == workers
        for wf in (in_flight, later):
            steps = api.steps(wf)
            assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"], steps
            assert chain_problems(steps) == []
            assert {s["worker"] for s in steps} <= set(workers.values())
            call_id = steps[1]["data"]["tool_calls"][0]["id"]
            runs = [e for e in tool_events(client, "slow_task:start") if e["workflow_id"] == wf]
            assert runs and {e["idempotency_key"] for e in runs} == {f"{wf}:{call_id}"}, runs


# -- C07 --------------------------------------------------------------------------------


def test_c07_a_step_longer_than_the_visibility_timeout_runs_once(tmp_path: Path, model: ScriptedModel) -> None:
    model.add(*_slow_then_answer(8, "The 8 s task is done."))
    with private_platform(tmp_path, model, AGENT_PLATFORM_VISIBILITY_TIMEOUT="5") as (_, deployment, client):
        api = deployment.api
        assert api is not None
        wf = api.start_turn("Run the 8 s task", session_id="c07")
        status = api.wait_status(wf, timeout=40)

        assert status["runtime_status"] == "COMPLETED", status
        assert status["output"] == "The 8 s task is done."
        steps = api.steps(wf)
        assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]
        assert chain_problems(steps) == []
        assert steps[2]["duration_ms"] >= 8000  # the record covers the tool's run
        # the broker redelivered the running tool step; the copy saw the lease and did nothing
        log = _log(deployment.stack.workers)
        # (with local steps the tool runs in the task of the model call before it: the
        # redelivered copy is that task's message, whose step is done: stale)
        copy = (
            r"step\.llm\[[\w-]+\] succeeded in [\d.e-]+s: 'stale'"
            if LOCAL_STEPS
            else r"step\.tool\[[\w-]+\] succeeded in [\d.e-]+s: 'leased'"
        )
        assert re.search(copy, log), log[-5000:]
        starts = tool_events(client, "slow_task:start")
        assert len(starts) == 1, starts
        assert {s["idempotency_key"] for s in starts} == {f"{wf}:{steps[1]['data']['tool_calls'][0]['id']}"}
        assert model.calls == 2
