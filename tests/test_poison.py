"""C14: a step whose worker dies every time (a poison step) is run a bounded number of
times (``AGENT_PLATFORM_MAX_LOST_ATTEMPTS``, default 3 runs in all), each lost run a
``lost`` record naming the worker that died; then a tool call ends with an error that the
model reads, and an ``llm`` step fails the turn. Another turn at the same time completes.

Real workers: the tool (or the model client) SIGKILLs its own pool process; Celery
redelivers the message (``task_reject_on_worker_lost``) and the next run voids the dead
process's lease at once, so no test waits for a lease to expire.
"""

from __future__ import annotations

from typing import Any

from agent_platform.testing import ScriptedModel, text, tool_call

from .agents_poison import POISON
from .helpers import Api, Platform, chain_problems

AGENT_APP = "tests.agents_poison:poison_buddy"
PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
}


def _responder(body: dict[str, Any]) -> Any:
    last = body["messages"][-1]
    if last["role"] == "user" and "explode" in last["content"]:
        return tool_call("explode", {})
    if last["role"] == "user":
        return tool_call("echo", {"text": last["content"]})
    return text(f"Answer after the tool: {last['content']}")


def test_c14_a_tool_that_kills_its_worker_every_time(api: Api, model: ScriptedModel, platform: Platform) -> None:
    model.set_responder(_responder)
    poisoned = api.start_turn("Please explode", session_id="c14-poison")
    normal = api.start_turn("Say hello", session_id="c14-normal")

    status = api.wait_status(poisoned, timeout=60)
    other = api.wait_status(normal, timeout=60)

    assert other["runtime_status"] == "COMPLETED", other
    assert status["runtime_status"] == "COMPLETED", status  # the model answered without the tool
    steps = api.steps(poisoned)
    tools = [s for s in steps if s["kind"] == "tool"]
    assert [s["status"] for s in tools] == ["lost", "lost", "lost", "error"], tools
    hostnames = {w.hostname for w in platform.stack.workers}
    assert all(s["worker"] in hostnames and "lost" in s["data"]["error"] for s in tools[:3]), tools
    assert "worker lost during tool explode" in tools[3]["data"]["error"]
    assert "worker lost during tool explode" in status["output"]
    assert chain_problems(steps) == []
    assert [s["kind"] for s in api.steps(normal)] == ["start", "llm", "tool", "llm", "finish"]


def test_c14_an_llm_step_whose_worker_dies_every_time_fails_the_turn(
    api: Api, model: ScriptedModel, platform: Platform
) -> None:
    model.set_responder(_responder)
    poisoned = api.start_turn(f"{POISON} please", session_id="c14-llm")
    normal = api.start_turn("Say hello again", session_id="c14-normal-2")

    status = api.wait_status(poisoned, timeout=60)
    other = api.wait_status(normal, timeout=60)

    assert other["runtime_status"] == "COMPLETED", other
    assert status["runtime_status"] == "FAILED", status
    details = status["failure_details"]
    assert details["type"] == "WorkerLost" and "worker lost during llm step" in details["message"], details
    llm = [s for s in api.steps(poisoned) if s["kind"] == "llm"]
    assert [s["status"] for s in llm] == ["lost", "lost", "lost", "error"], llm
    assert not any(POISON in r["messages"][-1].get("content", "") for r in model.requests)
