"""Inputs found by trying to break the platform: odd bodies, odd model replies, purges.

Each case here once gave a 500, a stuck session, a shared idempotency key or a turn that
failed at once; each now has the behaviour the README and DESIGN promise.
"""

from __future__ import annotations

import redis

from agent_platform.store.workflows import WorkflowStore
from agent_platform.testing import ScriptedModel, raw, text, tool_call

from .agents import recorded_calls
from .helpers import Api
from .workers import wait_until

AGENT_APP = "tests.agents:travel_buddy"


def test_malformed_bodies_and_parameters_are_4xx_json(api: Api, redis_client: redis.Redis) -> None:
    http = api.http
    nested = '{"task": "x", "metadata": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    cases = [
        http.post("/start-workflow", content=nested, headers={"Content-Type": "application/json"}),
        http.post(
            "/start-workflow",
            content='{"task": "x", "metadata": {"a": NaN}}',
            headers={"Content-Type": "application/json"},
        ),
        http.get("/workflows", params={"cursor": str(2**63)}),
    ]
    assert [r.status_code for r in cases] == [400, 400, 422]
    model_id = api.start_turn("hello")  # a real workflow for the per-workflow routes
    for body in ({"reason": 5}, {"reason": "x" * 2000}):
        response = http.post(f"/workflows/{model_id}/terminate", json=body)
        assert response.status_code == 422, response.text
        cases.append(response)
    events = http.get(f"/workflows/{model_id}/events", headers={"Last-Event-ID": "9" * 30})
    assert events.status_code == 400, events.text
    for response in [*cases, events]:
        assert set(response.json()["error"]) >= {"code", "message"}
    # stop that turn and wait until no step of it is in flight, so that its model call
    # cannot take the next test's scripted reply
    assert http.post(f"/workflows/{model_id}/terminate").status_code in (202, 409)
    wait_until(lambda: not redis_client.keys(f"*{model_id}*:lease:*"), timeout=15, message="no step in flight")


def test_odd_model_replies_go_back_to_the_model_or_are_retried(api: Api, model: ScriptedModel) -> None:
    model.add(
        raw({"choices": []}),  # not a chat completion: retried
        raw(
            {
                "choices": [
                    {"message": {"role": "assistant", "tool_calls": [{"function": {"name": "", "arguments": "{}"}}]}}
                ]
            }
        ),
        text("Sorry, which city?"),
    )
    wf = api.start_turn("Find flights")
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Sorry, which city?"
    steps = api.steps(wf)
    assert [(s["kind"], s["status"]) for s in steps] == [
        ("start", "ok"), ("llm", "retry"), ("llm", "ok"), ("tool", "error"), ("llm", "ok"), ("finish", "ok"),
    ]  # fmt: skip
    assert "unknown tool ''" in steps[3]["data"]["error"]
    assert model.calls == 3


def test_repeated_tool_call_ids_get_distinct_idempotency_keys(
    api: Api, model: ScriptedModel, redis_client: redis.Redis
) -> None:
    same = {
        "id": "same",
        "type": "function",
        "function": {"name": "search_flights", "arguments": '{"destination": "%s"}'},
    }
    model.add(
        raw(
            {
                "choices": [
                    {
                        "message": {
                            "role": "assistant",
                            "tool_calls": [
                                {**same, "function": {**same["function"], "arguments": '{"destination": "Paris"}'}},
                                {**same, "function": {**same["function"], "arguments": '{"destination": "Rome"}'}},
                            ],
                        }
                    }
                ]
            }
        ),  # fmt: skip
        tool_call("search_flights", {"destination": "Oslo"}, call_id="same"),
        text("Three searches done."),
    )
    wf = api.start_turn("Paris, Rome, then Oslo")
    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
    keys = [c["idempotency_key"] for c in recorded_calls(redis_client)]
    assert len(keys) == 3 and len(set(keys)) == 3, keys
    # and the model got one tool message per call, each naming its own call
    last = model.requests[-1]["messages"]
    answered = [m["tool_call_id"] for m in last if m["role"] == "tool"]
    assert len(answered) == 3 and len(set(answered)) == 3, answered


def test_a_purged_turn_does_not_block_its_session(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    model.add(text("First answer."), text("Second answer."))
    first = api.start_turn("one", session_id="purged")
    assert api.wait_status(first)["runtime_status"] == "COMPLETED"
    # a crash between the final checkpoint and leaving the session leaves the turn at
    # the head of its session's queue; then the operator purges it
    session_key = WorkflowStore(redis_client, "", "workflow_state").keys.session("TravelBuddy", "purged")
    redis_client.lpush(session_key, first)
    assert api.http.delete(f"/workflows/{first}").status_code == 204
    assert redis_client.lrange(session_key, 0, -1) == []
    redis_client.lpush(session_key, first)  # even if a purge raced with the crash
    second = api.start_turn("two", session_id="purged")
    assert api.wait_status(second, timeout=20)["runtime_status"] == "COMPLETED"
