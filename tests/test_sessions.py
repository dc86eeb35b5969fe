"""Sessions (DESIGN section 3 rule 8): turns of one session run one at a time in start
order; a later turn waits as PENDING and starts when the earlier one ends, whatever its end."""

from __future__ import annotations

import time
from typing import Any

import redis

from agent_platform.testing import ScriptedModel, error, text, tool_call

from .agents_failures import tool_events
from .helpers import Api, Platform
from .workers import wait_until

AGENT_APP = "tests.agents_failures:ops_buddy"
PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
}


def _pairs(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in messages]


def _responder(body: dict[str, Any]) -> Any:
    """First turn: a 1 s slow task, then an answer; any other turn: answer at once."""
    last = body["messages"][-1]
    if last["role"] == "user" and last["content"].startswith("first"):
        return tool_call("slow_task", {"seconds": 1, "label": "first"})
    if last["role"] == "tool":
        return text("First answer: the slow task is done.")
    return text(f"Answer to: {last['content']}")


def test_two_turns_started_10_ms_apart_run_in_order(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    model.set_responder(_responder)

    first = api.start_turn("first: run the slow task", session_id="ordered")
    time.sleep(0.01)  # the case: the second turn starts 10 ms after the first
    second = api.start_turn("second: what did the first turn find?", session_id="ordered")
    third = api.start_turn("third: and now?", session_id="ordered")

    wait_until(lambda: tool_events(redis_client, "slow_task:start"), timeout=15, message="the first turn's tool")
    assert api.status(first)["runtime_status"] == "RUNNING"
    assert api.status(second)["runtime_status"] == "PENDING"
    assert api.status(third)["runtime_status"] == "PENDING"
    assert api.steps(second) == [] and api.steps(third) == []
    statuses = {wf: api.wait_status(wf) for wf in (first, second, third)}

    assert {s["runtime_status"] for s in statuses.values()} == {"COMPLETED"}, statuses
    assert model.calls == 4
    # the second turn's prompt holds the first's question and answer; the third, both turns
    assert _pairs(model.requests[2]["messages"])[1:] == [
        ("user", "first: run the slow task"),
        ("assistant", "First answer: the slow task is done."),
        ("user", "second: what did the first turn find?"),
    ]
    assert _pairs(model.requests[3]["messages"])[1:] == [
        ("user", "first: run the slow task"),
        ("assistant", "First answer: the slow task is done."),
        ("user", "second: what did the first turn find?"),
        ("assistant", "Answer to: second: what did the first turn find?"),
        ("user", "third: and now?"),
    ]
    # one at a time: each turn started after the previous one ended
    assert statuses[first]["ended_at"] <= statuses[second]["started_at"]
    assert statuses[second]["ended_at"] <= statuses[third]["started_at"]
    history = platform.history("ordered", agent="OpsBuddy")
    assert [m["workflow_id"] for m in history] == [first, first, second, second, third, third]


def test_a_waiting_turn_starts_when_the_earlier_one_is_terminated(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    model.set_responder(_responder)
    first = api.start_turn("first: run the slow task", session_id="after-terminate")
    second = api.start_turn("second: are you there?", session_id="after-terminate")
    wait_until(lambda: tool_events(redis_client, "slow_task:start"), timeout=15, message="the first turn's tool")
    assert api.status(second)["runtime_status"] == "PENDING"

    assert api.http.post(f"/workflows/{first}/terminate").status_code == 202
    status = api.wait_status(second)

    assert status["runtime_status"] == "COMPLETED", status
    assert api.status(first)["runtime_status"] == "TERMINATED"
    # a terminated turn never reaches the session's history
    assert _pairs(model.requests[-1]["messages"])[1:] == [("user", "second: are you there?")]
    assert _pairs(platform.history("after-terminate", agent="OpsBuddy")) == [
        ("user", "second: are you there?"),
        ("assistant", "Answer to: second: are you there?"),
    ]


def test_a_waiting_turn_starts_when_the_earlier_one_fails(api: Api, model: ScriptedModel) -> None:
    model.add(error(400))
    model.set_responder(_responder)
    first = api.start_turn("this one fails", session_id="after-failure")
    second = api.start_turn("second: still there?", session_id="after-failure")

    assert api.wait_status(first)["runtime_status"] == "FAILED"
    status = api.wait_status(second)

    assert status["runtime_status"] == "COMPLETED", status
    assert _pairs(model.requests[-1]["messages"])[1:] == [("user", "second: still there?")]
