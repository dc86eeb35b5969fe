"""The spine end to end: HTTP start -> Celery steps in a real worker -> checkpoints -> status.

TravelBuddy (``tests.agents:travel_buddy``) runs in a real ``celery -A tasks worker``
against a private redis-server; the model is the scripted OpenAI-compatible server;
the web app is served over real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from typing import Any

import httpx
import redis

from agent_platform.engine.dispatch import StepMessage
from agent_platform.testing import ScriptedModel, text, tool_call
from tasks.dispatch import task_name

from .agents import recorded_calls
from .helpers import LOCAL_STEPS, Api, Platform
from .workers import wait_until

QUESTION = "I want to find flights to Paris"
ANSWER = "I found two flights to Paris: SkyHighAir for $450.00 and GlobalWings for $375.50."


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _script_trip(model: ScriptedModel, answer: str = ANSWER) -> None:
    model.add(tool_call("search_flights", {"destination": "Paris"}), text(answer))


def test_turn_runs_end_to_end_over_http(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    _script_trip(model)

    response = api.http.post("/start-workflow", json={"task": QUESTION})

    assert response.status_code == 202, response.text
    body = response.json()
    wf = body["workflow_instance_id"]
    assert body["status_url"].endswith(f"/workflows/{wf}")
    status = api.wait_status(wf, timeout=10)
    assert status["runtime_status"] == "COMPLETED", status
    assert "SkyHighAir" in status["output"] and "GlobalWings" in status["output"]
    assert status["input"] == QUESTION
    assert status["failure_details"] is None
    assert status["steps_completed"] == 5
    assert status["iteration"] == 2
    assert status["usage"]["prompt_tokens"] > 0 and status["usage"]["completion_tokens"] > 0
    assert _time(status["created_at"]) <= _time(status["last_updated_at"])
    # status_url is the address of this status
    by_url = httpx.get(body["status_url"], timeout=10)
    assert by_url.status_code == 200 and by_url.json()["runtime_status"] == "COMPLETED"

    steps = api.steps(wf)

    assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]
    assert [s["seq"] for s in steps] == [0, 1, 2, 3, 4]
    # three Celery tasks (issue 15): start rides with the first model call, finish with the last
    wait_until(lambda: "done: llm finish" in platform.stack.logs() or "finish'" in platform.stack.logs(), timeout=10)
    results = re.findall(
        r"agent_platform\.step\.(\w+)\[[\w-]+\] succeeded in [\d.e-]+s: '([^']*)'", platform.stack.logs()
    )
    expected = [("llm", "done: start llm"), ("tool", "done: tool"), ("llm", "done: llm finish")]
    if LOCAL_STEPS:  # issue 17: one task, its result names the steps it ran (Flower shows it)
        expected = [("llm", "done: start llm tool llm finish")]
    assert results == expected, results
    assert len(steps) == status["steps_completed"]
    worker = platform.stack.workers[0].hostname
    for step in steps:
        assert step["status"] == "ok", step
        assert step["attempt"] == 1
        assert step["worker"] == worker
        assert step["duration_ms"] >= 0
        assert _time(step["started_at"]) <= _time(step["finished_at"])
    for earlier, later in zip(steps, steps[1:], strict=False):
        assert _time(earlier["finished_at"]) <= _time(later["started_at"]), (earlier, later)
    calls = steps[1]["data"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["search_flights"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"destination": "Paris"}
    tool = steps[2]["data"]
    assert tool["call_id"] == calls[0]["id"]
    assert {(f["airline"], f["price"]) for f in tool["result"]} == {("SkyHighAir", 450.0), ("GlobalWings", 375.5)}
    assert steps[3]["data"]["content"] == ANSWER
    assert steps[4]["data"]["output"] == ANSWER
    # the model saw the tool result as the answer to its call; the tool ran once
    assert model.calls == 2
    tool_message = model.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == calls[0]["id"]
    assert "SkyHighAir" in tool_message["content"] and "GlobalWings" in tool_message["content"]
    ran = recorded_calls(redis_client)
    assert [(r["arguments"], r["idempotency_key"]) for r in ran] == [
        ({"destination": "Paris"}, f"{wf}:{calls[0]['id']}")
    ]


def test_second_turn_of_a_session_sees_the_first(api: Api, model: ScriptedModel) -> None:
    _script_trip(model)
    model.add(text("GlobalWings is the cheaper one."))

    first = api.start_turn(QUESTION, session_id="trip-1")
    assert api.wait_status(first)["runtime_status"] == "COMPLETED"
    second = api.start_turn("Which one is cheaper?", session_id="trip-1")
    status = api.wait_status(second)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "GlobalWings is the cheaper one."
    assert model.calls == 3
    prompt = [(m["role"], m.get("content")) for m in model.requests[2]["messages"]]
    assert prompt[0][0] == "system"
    assert prompt[1:] == [("user", QUESTION), ("assistant", ANSWER), ("user", "Which one is cheaper?")]


def test_a_redelivered_step_changes_nothing(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    """Fencing: step messages re-sent through the broker for steps already checkpointed
    (or in flight) do nothing: no record, no model call, no tool call, no history."""
    release = threading.Event()

    def held_answer(_: dict[str, Any]) -> Any:
        release.wait(30)
        return text(ANSWER)

    model.add(tool_call("search_flights", {"destination": "Paris"}), held_answer)
    celery = platform.celery
    wf = api.start_turn(QUESTION, session_id="fenced")

    def resend(kind: str, seq: int, call_index: int | None = None) -> str:
        message = StepMessage("TravelBuddy", wf, kind, seq, call_index)
        sent = celery.send_task(task_name(kind), kwargs=message.to_kwargs(), queue="agent.TravelBuddy")
        found = platform.stack.find_in_logs(rf"\[{sent.id}\] succeeded in [\d.e-]+s: '(\w+)'", timeout=15)
        return found.group(1)

    try:
        model.wait_for_calls(2, timeout=15)  # the second llm step (seq 3) is in flight
        in_flight = {
            "llm 3 (in flight)": resend("llm", 3),
            "llm 0 (start)": resend("llm", 0),
            "start 0 (an earlier version's task)": resend("start", 0),
            "llm 1": resend("llm", 1),
            "tool 2": resend("tool", 2, 0),
        }
    finally:
        release.set()
    assert in_flight == {
        "llm 3 (in flight)": "leased",
        "llm 0 (start)": "stale",
        "start 0 (an earlier version's task)": "stale",
        "llm 1": "stale",
        "tool 2": "stale",
    }
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED", status

    after = {
        f"{kind} {seq}": resend(kind, seq, idx)
        for kind, seq, idx in [("llm", 3, None), ("tool", 2, 0), ("llm", 4, None)]
    }

    assert after == {"llm 3": "finished", "tool 2": "finished", "llm 4": "finished"}
    steps = api.steps(wf)
    assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]
    assert api.status(wf)["steps_completed"] == len(steps) == 5
    assert model.calls == 2
    assert len(recorded_calls(redis_client)) == 1
    history = platform.history("fenced")
    assert [(m["role"], m["content"]) for m in history] == [("user", QUESTION), ("assistant", ANSWER)]


def test_keys_of_one_workflow_share_one_hash_tag(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    _script_trip(model)
    wf = api.start_turn(QUESTION)
    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"

    keys = sorted(redis_client.scan_iter(match=f"*{wf}*", count=1000))

    assert any(k.endswith(":meta") for k in keys) and any(k.endswith(":steps") for k in keys), keys
    assert all(f"{{{wf}}}" in k for k in keys), keys


def _assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_api_errors_are_json(api: Api) -> None:
    bad_json = api.http.post("/start-workflow", content=b'{"task": ', headers={"Content-Type": "application/json"})
    _assert_error(bad_json, 400)

    missing_task = api.http.post("/start-workflow", json={"session_id": "s1"})
    assert "task" in _assert_error(missing_task, 422)["message"]

    unknown = "0123456789abcdef0123456789abcdef"
    _assert_error(api.http.get(f"/workflows/{unknown}"), 404)
    _assert_error(api.http.get(f"/workflows/{unknown}/steps"), 404)

    form = api.http.post(
        "/start-workflow", content=b"task=hello", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    _assert_error(form, 415)


def test_openapi_and_health(api: Api) -> None:
    document = api.http.get("/openapi.json")
    assert document.status_code == 200
    assert "/start-workflow" in document.json()["paths"]

    health = api.http.get("/health")
    assert health.status_code == 200
