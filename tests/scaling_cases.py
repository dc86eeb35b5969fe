"""What every broker/state topology of issue 13 must do, written once and run by each
``test_scaling_*`` module on its own deployment (see :mod:`tests.topologies`):

- :func:`paris_turn`: TravelBuddy's Paris turn over HTTP (C01's turn), start to finish;
- :func:`sigkill_mid_tool`: every worker SIGKILLed during a tool step, a fresh one
  started (C04), the turn completes with one record per step and memory once;
- :func:`assert_turn_once`: what "nothing duplicated" means for a finished turn.

The deployments load both test agents (``AGENT_APP`` = :data:`AGENTS`); the tools' trace
lives in a plain Redis (``trace``), whatever Redis holds the state.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from agent_platform.testing import ScriptedModel, text, tool_call

from .agents import recorded_calls
from .agents_failures import tool_events
from .helpers import Api, Platform, chain_problems
from .workers import wait_until

AGENTS = "tests.agents:travel_buddy,tests.agents_failures:ops_buddy"
#: Fast recovery, as in the failure tests: a lease lives 3 s without a heartbeat, the
#: sweeper looks every 0.5 s, a dispatched step may wait 5 s before it is sent again.
FAST_RECOVERY = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
    "AGENT_PLATFORM_LLM_BACKOFF": "0.05",
}
QUESTION = "I want to find flights to Paris"
ANSWER = "I found two flights to Paris: SkyHighAir for $450.00 and GlobalWings for $375.50."
CHAIN = [("start", "ok"), ("llm", "ok"), ("tool", "ok"), ("llm", "ok"), ("finish", "ok")]


def assert_turn_once(
    api: Api, platform: Platform, wf: str, agent: str, session: str, output: str, lost: str | None = None
) -> list[dict[str, Any]]:
    """A finished turn happened once: COMPLETED with ``output``, one ``ok`` record per step
    of start, llm, tool, llm, finish (no retry, no duplicate) plus, when ``lost`` names a
    step kind, the ``lost`` record of the run a kill cut short (DESIGN rule 11) just before
    that step's ``ok`` record; and the session's memory holds its question and answer once
    (it is appended right after the final checkpoint).
    Returns the step log."""
    status = api.status(wf)
    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == output
    assert status["steps_completed"] == 5 and status["iteration"] == 2, status
    steps = api.steps(wf)
    expected = list(CHAIN)
    if lost is not None:
        expected.insert(expected.index((lost, "ok")), (lost, "lost"))
    assert [(s["kind"], s["status"]) for s in steps] == expected, steps
    assert chain_problems(steps) == []
    # memory is appended right after the final checkpoint (finish_workflow): wait for it
    history = wait_until(lambda: platform.history(session, agent=agent), timeout=10, message="the turn in memory")
    assert [(m["role"], m["workflow_id"]) for m in history] == [("user", wf), ("assistant", wf)], history
    assert history[1]["content"] == output
    return steps


def paris_turn(api: Api, model: ScriptedModel, platform: Platform, trace: redis.Redis, session: str) -> str:
    """C01's turn: ``search_flights(Paris)`` then the answer; returns the workflow id."""
    model.add(tool_call("search_flights", {"destination": "Paris"}), text(ANSWER))
    wf = api.start_turn(QUESTION, session_id=session, agent="TravelBuddy")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    assert_turn_once(api, platform, wf, "TravelBuddy", session, ANSWER)
    steps = api.steps(wf)
    call = steps[1]["data"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"destination": "Paris"}
    assert {(f["airline"], f["price"]) for f in steps[2]["data"]["result"]} == {
        ("SkyHighAir", 450.0),
        ("GlobalWings", 375.5),
    }
    ran = [r for r in recorded_calls(trace) if r["workflow_id"] == wf]
    assert [(r["arguments"], r["idempotency_key"]) for r in ran] == [({"destination": "Paris"}, f"{wf}:{call['id']}")]
    assert model.calls == 2
    return wf


def sigkill_mid_tool(
    api: Api, model: ScriptedModel, platform: Platform, trace: redis.Redis, session: str, seconds: float = 4.0
) -> str:
    """C04 on this topology: every worker (main process and pool) SIGKILLed ~1 s into a
    ``seconds``-long tool step, a fresh worker started; the turn completes, the killed run
    is one ``lost`` record, the tool ran twice with one idempotency key, and nothing else
    ran or was written twice."""
    answer = f"The {seconds:g} s task is done."
    model.add(tool_call("slow_task", {"seconds": seconds, "label": session}), text(answer))
    wf = api.start_turn(f"Run the {seconds:g} s task", session_id=session, agent="OpsBuddy")
    started = wait_until(
        lambda: [e for e in tool_events(trace, "slow_task:start") if e["workflow_id"] == wf],
        timeout=20,
        message="the tool to start",
    )
    t0 = time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= 1.0, timeout=5, message="1 s into the tool")
    running = [w for w in platform.stack.workers if w.alive()]
    killed = {w.hostname for w in running}
    for worker in running:
        platform.stack.kill_worker(worker)
    assert api.status(wf)["runtime_status"] == "RUNNING"
    fresh = platform.stack.start_worker()
    status = api.wait_status(wf, timeout=45)

    assert status["runtime_status"] == "COMPLETED", status
    steps = assert_turn_once(api, platform, wf, "OpsBuddy", session, answer, lost="tool")
    first_calls = [r for r in model.requests if r["messages"][-1]["role"] == "user"]
    assert len(first_calls) == 1 and model.calls == 2
    runs = [e for e in tool_events(trace, "slow_task:start") if e["workflow_id"] == wf]
    assert len(runs) == 2 and {e["idempotency_key"] for e in runs} == {started[0]["idempotency_key"]}, runs
    assert steps[2]["worker"] in killed and steps[3]["worker"] == fresh.hostname
    return wf
