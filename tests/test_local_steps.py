"""Local steps (issue 17): with ``AGENT_PLATFORM_LOCAL_STEPS=1`` a turn's sequential steps
run in the task that checkpointed the step before them, each still checkpointed (same
records, fencing, leases). Real workers; crashes by fault injection
(``AGENT_PLATFORM_FAULT=exit_after_checkpoint:<kind>``, one SIGKILL per Redis).
"""

from __future__ import annotations

import re

import pytest
import redis

from agent_platform.testing import ScriptedModel, text, tool_call, tool_calls

from .agents_failures import tool_events
from .helpers import Api, Platform, chain_problems, use_workers
from .workers import wait_until

AGENT_APP = "tests.agents_failures:ops_buddy"
PLATFORM_ENV = {
    "AGENT_PLATFORM_LOCAL_STEPS": "1",
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "2",
}
CHAIN = ["start", "llm", "tool", "llm", "finish"]


def _results(platform: Platform) -> list[tuple[str, str]]:
    pattern = r"agent_platform\.step\.(\w+)\[[\w-]+\] succeeded in [\d.e-]+s: '([^']*)'"
    return re.findall(pattern, platform.stack.logs())


def test_a_sequential_turn_runs_in_one_task_with_the_same_step_log(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    use_workers(platform)
    model.add(tool_call("slow_task", {"seconds": 0, "label": "local"}), text("Done locally."))
    wf = api.start_turn("Run a quick task", session_id="local")

    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED" and status["output"] == "Done locally.", status
    steps = api.steps(wf)
    assert [(s["kind"], s["status"]) for s in steps] == [(k, "ok") for k in CHAIN]
    assert [s["seq"] for s in steps] == [0, 1, 2, 3, 4] and status["steps_completed"] == 5
    assert chain_problems(steps) == []
    # one Celery task ran the turn; its result (what Flower shows) names the steps
    wait_until(lambda: _results(platform), timeout=10, message="the task's result in the log")
    assert _results(platform) == [("llm", "done: start llm tool llm finish")]
    assert redis_client.keys("*:lease:*") == []


def test_parallel_tool_calls_still_fan_out_as_a_group(api: Api, model: ScriptedModel, platform: Platform) -> None:
    use_workers(platform)
    model.add(
        tool_calls(("slow_task", {"seconds": 0, "label": "a"}), ("slow_task", {"seconds": 0, "label": "b"})),
        text("Both done."),
    )
    wf = api.start_turn("Run two tasks", session_id="local-group")

    assert api.wait_status(wf, timeout=30)["runtime_status"] == "COMPLETED"

    wait_until(lambda: len(_results(platform)) >= 4, timeout=10, message="four task results in the log")
    results = sorted(_results(platform))
    assert results == [
        ("llm", "done: llm finish"),
        ("llm", "done: start llm"),
        ("tool", "done: tool"),
        ("tool", "done: tool"),
    ]
    assert chain_problems(api.steps(wf)) == []


@pytest.mark.parametrize("kind", ["llm", "tool"])
def test_sigkill_between_two_local_steps_completes_with_memory_once(
    kind: str, api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    """Issue 17: the process is killed right after a local step's checkpoint, which had
    opened the next local step (``llm`` -> the tool call, ``tool`` -> the model call). The
    sweeper runs the opened step again (a ``lost`` record for the killed run); every step
    has one ok record and the turn reaches memory once."""
    use_workers(platform, AGENT_PLATFORM_FAULT=f"exit_after_checkpoint:{kind}")
    model.add(tool_call("slow_task", {"seconds": 0.1, "label": kind}), text("Recovered."))
    wf = api.start_turn("Run a quick task", session_id=f"local-kill-{kind}")

    status = api.wait_status(wf, timeout=40)

    assert status["runtime_status"] == "COMPLETED" and status["output"] == "Recovered.", status
    steps = api.steps(wf)
    assert [s["kind"] for s in steps if s["status"] == "ok"] == CHAIN
    assert [s["kind"] for s in steps if s["status"] == "lost"] == [{"llm": "tool", "tool": "llm"}[kind]]
    assert chain_problems(steps) == []
    assert model.calls == 2 and len(tool_events(redis_client, "slow_task:start")) == 1
    history = platform.history(f"local-kill-{kind}", agent="OpsBuddy")
    assert [(m["role"], m["workflow_id"]) for m in history] == [("user", wf), ("assistant", wf)]
