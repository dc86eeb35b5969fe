"""Workflow control over HTTP (DESIGN sections 3 rule 7 and 6): terminate, pause, resume,
raise-event (tool approval), purge, list, Idempotency-Key and callback_url.

Terminate and pause are states in the store, so they hold while no worker runs; every
impossible transition answers 409 with the current status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from agent_platform.testing import ScriptedModel, text, tool_call

from .agents_failures import tool_events
from .helpers import Api, Platform, chain_problems
from .ops_helpers import CallbackReceiver
from .workers import wait_until

AGENT_APP = "tests.agents_failures:ops_buddy"
PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
    "AGENT_PLATFORM_LLM_BACKOFF": "0.05",
    "AGENT_PLATFORM_CALLBACK_ALLOW": "127.0.0.0/8",  # the callback receiver of these tests (C20)
}


def _conflict(response: httpx.Response, current_status: str) -> dict[str, Any]:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_transition", "idempotency_conflict"), error
    assert error.get("current_status") == current_status, error
    assert current_status in error["message"], error
    return error


def _control(api: Api, wf: str, action: str, body: Any = None) -> httpx.Response:
    return api.http.post(f"/workflows/{wf}/{action}", json=body)


def _wait_started(client: redis.Redis, event: str = "slow_task:start", count: int = 1) -> list[dict[str, Any]]:
    return wait_until(
        lambda: (found := tool_events(client, event)) and len(found) >= count and found,
        timeout=15,
        message=f"{count} x {event}",
    )


def _log_count(platform: Platform, pattern: str) -> int:
    return sum(len(re.findall(pattern, w.log(since_mark=True))) for w in platform.stack.workers)


# -- terminate --------------------------------------------------------------------------


def test_terminate_refuses_the_in_flight_checkpoint(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    model.add(tool_call("slow_task", {"seconds": 2, "label": "t"}), text("never used"))
    wf = api.start_turn("Run the slow task", session_id="term")
    _wait_started(redis_client)

    response = _control(api, wf, "terminate", {"reason": "operator said so"})

    assert response.status_code == 202, response.text
    assert response.json() == {"workflow_instance_id": wf, "runtime_status": "TERMINATED"}
    status = api.status(wf)
    assert status["runtime_status"] == "TERMINATED"
    assert status["stop_reason"] == "terminated" and status["ended_at"]
    # the tool finishes, but its checkpoint is refused and nothing follows
    platform.stack.find_in_logs(rf"checkpoint of {wf} step tool/2 refused: finished", timeout=15)
    assert tool_events(redis_client, "slow_task:end")
    assert api.status(wf)["runtime_status"] == "TERMINATED"
    assert [s["kind"] for s in api.steps(wf)] == ["start", "llm"]
    assert model.calls == 1
    _conflict(_control(api, wf, "terminate"), "TERMINATED")
    _conflict(_control(api, wf, "pause"), "TERMINATED")
    _conflict(_control(api, wf, "resume"), "TERMINATED")


def test_terminate_and_pause_hold_while_no_worker_runs(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    platform.stack.stop()
    try:
        doomed = api.start_turn("This turn is terminated before any worker sees it", session_id="down-a")
        paused = api.start_turn("This turn is paused before any worker sees it", session_id="down-b")
        assert api.status(doomed)["runtime_status"] == "PENDING"

        assert _control(api, doomed, "terminate").status_code == 202
        assert _control(api, paused, "pause").json()["runtime_status"] == "SUSPENDED"
        _conflict(_control(api, paused, "pause"), "SUSPENDED")
        _conflict(_control(api, doomed, "resume"), "TERMINATED")
        assert api.status(doomed)["runtime_status"] == "TERMINATED"
    finally:
        platform.stack.start(1)
    # both start messages were waiting in the queue: the new worker takes them and does nothing
    wait_until(
        lambda: (
            _log_count(platform, r"succeeded in [\d.e-]+s: 'finished'") >= 1
            and _log_count(platform, r"succeeded in [\d.e-]+s: 'suspended'") >= 1
        ),
        timeout=20,
        message="the queued start steps to be refused",
    )
    assert api.status(doomed)["runtime_status"] == "TERMINATED"
    assert api.status(paused)["runtime_status"] == "SUSPENDED"
    assert model.calls == 0
    assert api.steps(doomed) == [] and api.steps(paused) == []

    model.add(text("Resumed and answered."))
    response = _control(api, paused, "resume")

    assert response.status_code == 202 and response.json()["runtime_status"] == "PENDING"
    status = api.wait_status(paused)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == "Resumed and answered."
    assert model.calls == 1
    assert api.status(doomed)["runtime_status"] == "TERMINATED"


# -- pause / resume ---------------------------------------------------------------------


def test_pause_lets_the_step_in_flight_checkpoint_then_resume_continues(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    model.add(tool_call("slow_task", {"seconds": 1, "label": "p"}), text("The slow task is done."))
    wf = api.start_turn("Run the slow task", session_id="pause")
    _wait_started(redis_client)

    response = _control(api, wf, "pause")

    assert response.status_code == 202 and response.json()["runtime_status"] == "SUSPENDED"
    # the tool step in flight still checkpoints, but the next step is not dispatched
    wait_until(lambda: [s["kind"] for s in api.steps(wf)] == ["start", "llm", "tool"], timeout=15, message="tool")
    platform.stack.find_in_logs(
        rf"workflow={wf} agent=OpsBuddy step=tool seq=2 step_seq=2 attempt=1 status=ok", timeout=5
    )
    status = api.status(wf)
    assert status["runtime_status"] == "SUSPENDED" and model.calls == 1
    _conflict(_control(api, wf, "pause"), "SUSPENDED")

    resumed = _control(api, wf, "resume")

    assert resumed.status_code == 202 and resumed.json()["runtime_status"] == "RUNNING"
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == "The slow task is done."
    assert model.calls == 2
    assert chain_problems(api.steps(wf)) == []
    _conflict(_control(api, wf, "pause"), "COMPLETED")
    _conflict(_control(api, wf, "resume"), "COMPLETED")
    _conflict(_control(api, wf, "terminate"), "COMPLETED")


def test_control_of_an_unknown_workflow_is_404(api: Api) -> None:
    unknown = "0123456789abcdef0123456789abcdef"
    for action in ("terminate", "pause", "resume", "raise-event/approval.2.0"):
        response = _control(api, unknown, action)
        assert response.status_code == 404, (action, response.text)
        assert response.json()["error"]["code"] == "workflow_not_found"
    assert api.http.delete(f"/workflows/{unknown}").status_code == 404


# -- purge ------------------------------------------------------------------------------


def test_purge_is_409_while_running_and_deletes_a_finished_workflow(
    api: Api, model: ScriptedModel, redis_client: redis.Redis
) -> None:
    model.add(tool_call("slow_task", {"seconds": 1, "label": "purge"}), text("Done."))
    wf = api.start_turn("Run the slow task", session_id="purge")
    _wait_started(redis_client)

    _conflict(api.http.delete(f"/workflows/{wf}"), "RUNNING")
    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
    response = api.http.delete(f"/workflows/{wf}")

    assert response.status_code == 204, response.text
    assert api.http.get(f"/workflows/{wf}").status_code == 404
    assert api.http.get(f"/workflows/{wf}/steps").status_code == 404
    assert api.http.delete(f"/workflows/{wf}").status_code == 404
    assert sorted(redis_client.scan_iter(match=f"*{wf}*", count=1000)) == []
    listed = api.http.get("/workflows").json()["workflows"]
    assert wf not in [w["instance_id"] for w in listed]


# -- list -------------------------------------------------------------------------------


def _answer_or_wire(body: dict[str, Any]) -> Any:
    last = body["messages"][-1]
    if last["role"] == "user" and "wire" in last["content"]:
        return tool_call("wire_money", {"amount": 5, "to": "Eve"})
    return text(f"Answer to: {last['content']}")


def test_list_filters_by_status_and_session_and_pages_with_a_cursor(api: Api, model: ScriptedModel) -> None:
    model.set_responder(_answer_or_wire)
    done = {
        api.start_turn("first of a", session_id="list-a"): "list-a",
        api.start_turn("first of b", session_id="list-b"): "list-b",
        api.start_turn("second of a", session_id="list-a"): "list-a",
        api.start_turn("second of b", session_id="list-b"): "list-b",
    }
    waiting = api.start_turn("wire money please", session_id="list-c")
    for wf in done:
        assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
    assert api.wait_status(waiting, ["SUSPENDED"])["pending_event"]["name"] == "approval.2.0"
    assert _control(api, waiting, "terminate").status_code == 202

    def listing(**query: Any) -> dict[str, Any]:
        response = api.http.get("/workflows", params=query)
        assert response.status_code == 200, response.text
        return response.json()

    completed = listing(status="COMPLETED")["workflows"]
    assert {w["instance_id"] for w in completed} == set(done)
    assert all(w["runtime_status"] == "COMPLETED" for w in completed)
    created = [w["created_at"] for w in completed]
    assert created == sorted(created, reverse=True)  # newest first
    assert [w["instance_id"] for w in listing(status="TERMINATED")["workflows"]] == [waiting]
    assert {w["instance_id"] for w in listing(session_id="list-a")["workflows"]} == {
        wf for wf, s in done.items() if s == "list-a"
    }
    assert listing(status="TERMINATED", session_id="list-a")["workflows"] == []
    assert listing(status="RUNNING") == {"workflows": [], "next_cursor": None}

    # pages of 2 walk over all five, each once
    seen: list[str] = []
    page = listing(limit=2)
    while True:
        assert len(page["workflows"]) <= 2
        seen.extend(w["instance_id"] for w in page["workflows"])
        if page["next_cursor"] is None:
            break
        page = listing(limit=2, cursor=page["next_cursor"])
    assert sorted(seen) == sorted([*done, waiting])
    # a filtered page continues with the same filter
    first = listing(status="COMPLETED", limit=3)
    rest = listing(status="COMPLETED", limit=3, cursor=first["next_cursor"])
    assert len(first["workflows"]) == 3 and len(rest["workflows"]) == 1 and rest["next_cursor"] is None
    assert {w["instance_id"] for w in first["workflows"] + rest["workflows"]} == set(done)

    assert api.http.get("/workflows", params={"status": "DONE"}).status_code == 422
    assert api.http.get("/workflows", params={"limit": 0}).status_code == 422


# -- raise-event: tool approval ---------------------------------------------------------


def _wait_for_approval(api: Api, wf: str, tool: str) -> dict[str, Any]:
    status = api.wait_status(wf, ["SUSPENDED"], timeout=15)
    pending = status["pending_event"]
    assert pending["name"] == "approval.2.0", pending
    assert pending["tool_call"]["name"] == tool, pending
    return pending


def _tool_message(model: ScriptedModel, index: int) -> dict[str, Any]:
    message = model.requests[index]["messages"][-1]
    assert message["role"] == "tool", message
    return message


def test_approved_tool_call_runs(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    model.add(tool_call("wire_money", {"amount": 100, "to": "Bob"}), text("I wired $100 to Bob."))
    wf = api.start_turn("Wire $100 to Bob", session_id="approve")
    pending = _wait_for_approval(api, wf, "wire_money")
    assert json.loads(pending["tool_call"]["arguments"]) == {"amount": 100, "to": "Bob"}
    assert tool_events(redis_client) == []  # nothing ran before the approval

    other = _control(api, wf, "raise-event/something-else", {"x": 1})
    assert other.status_code == 202 and other.json()["woke"] is False
    assert api.status(wf)["runtime_status"] == "SUSPENDED"
    response = _control(api, wf, f"raise-event/{pending['name']}", {"approved": True})

    assert response.status_code == 202 and response.json()["woke"] is True, response.text
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == "I wired $100 to Bob."
    assert status["pending_event"] is None
    assert [e["event"] for e in tool_events(redis_client)] == ["wire_money:call"]
    assert json.loads(_tool_message(model, 1)["content"]) == {"wired": 100.0, "to": "Bob"}
    steps = api.steps(wf)
    assert [(s["kind"], s["status"]) for s in steps if s["kind"] == "tool"] == [("tool", "ok")]
    assert any(s["kind"] == "event" and s["data"].get("name") == "approval.2.0" for s in steps)
    assert chain_problems(steps) == []
    _conflict(_control(api, wf, "raise-event/approval.2.0", {"approved": True}), "COMPLETED")


def test_denied_tool_call_goes_back_to_the_model(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    model.add(tool_call("wire_money", {"amount": 1e6, "to": "Mallory"}), text("The transfer was not approved."))
    wf = api.start_turn("Wire a million to Mallory", session_id="deny")
    pending = _wait_for_approval(api, wf, "wire_money")

    response = _control(api, wf, f"raise-event/{pending['name']}", {"approved": False, "reason": "too much"})

    assert response.status_code == 202 and response.json()["woke"] is True
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == "The transfer was not approved."
    assert tool_events(redis_client) == []
    content = _tool_message(model, 1)["content"]
    assert "not approved" in content and "too much" in content, content
    assert [s["status"] for s in api.steps(wf) if s["kind"] == "tool"] == ["error"]


@pytest.mark.parametrize("body", ["none", "null"])
def test_an_approval_raised_without_data_is_a_denial_not_a_loop(
    api: Api, model: ScriptedModel, redis_client: redis.Redis, body: str
) -> None:
    """Dapr lets event data be left out: an approval raised with no body, or with JSON
    ``null``, is raised all the same (a denial), not "not raised yet": it once made the
    step wait again, see the event raised already, and re-run, hundreds of times a second."""
    model.add(tool_call("wire_money", {"amount": 5, "to": "Eve"}), text("Not approved, then."))
    wf = api.start_turn("Wire $5 to Eve", session_id=f"null-{body}")
    pending = _wait_for_approval(api, wf, "wire_money")

    url = f"/workflows/{wf}/raise-event/{pending['name']}"
    response = (
        api.http.post(url)
        if body == "none"
        else api.http.post(url, content=b"null", headers={"Content-Type": "application/json"})
    )

    assert response.status_code == 202 and response.json()["woke"] is True, response.text
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == "Not approved, then."
    assert tool_events(redis_client) == []
    steps = api.steps(wf)
    assert len([s for s in steps if s["kind"] == "event"]) <= 3, [s["kind"] for s in steps]  # wait, the event: no loop
    assert [s["status"] for s in steps if s["kind"] == "tool"] == ["error"]
    assert chain_problems(steps) == []


def test_approval_times_out_as_a_denial(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    model.add(tool_call("delete_records", {"table": "users"}), text("Nobody approved the deletion in time."))
    wf = api.start_turn("Delete every user", session_id="timeout")
    pending = _wait_for_approval(api, wf, "delete_records")
    assert pending["timeout_at_ms"]

    status = api.wait_status(wf, timeout=20)  # nobody answers: the sweeper denies it

    assert status["runtime_status"] == "COMPLETED", status
    assert tool_events(redis_client) == []
    content = _tool_message(model, 1)["content"]
    assert "timed out waiting for approval" in content, content
    _conflict(_control(api, wf, "raise-event/approval.2.0", {"approved": True}), "COMPLETED")


# -- Idempotency-Key --------------------------------------------------------------------


def test_idempotency_key_returns_the_same_workflow_or_409(api: Api, model: ScriptedModel) -> None:
    model.set_responder(lambda body: text("Hello."))
    headers = {"Idempotency-Key": "order-42"}
    body = {"task": "Say hello", "session_id": "idem"}

    first = api.http.post("/start-workflow", json=body, headers=headers)
    again = api.http.post("/start-workflow", json=body, headers=headers)
    other = api.http.post("/start-workflow", json={**body, "task": "Say goodbye"}, headers=headers)

    assert first.status_code == 202 and again.status_code == 202, (first.text, again.text)
    wf = first.json()["workflow_instance_id"]
    assert again.json()["workflow_instance_id"] == wf
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
    # a replay after the end still names the same workflow; one turn ran
    assert api.http.post("/start-workflow", json=body, headers=headers).json()["workflow_instance_id"] == wf
    assert [w["instance_id"] for w in api.http.get("/workflows").json()["workflows"]] == [wf]
    assert model.calls == 1


# -- callback_url -----------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.stop()


def test_callback_url_receives_one_post_with_the_final_status(
    api: Api, model: ScriptedModel, platform: Platform, receiver: CallbackReceiver
) -> None:
    model.add(text("Called back."))
    wf = api.start_turn("Call me back", session_id="cb", callback_url=receiver.url)

    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
    wait_until(lambda: receiver.count() >= 1, timeout=15, message="the callback POST")
    platform.stack.find_in_logs(r"Task agent_platform\.callback\[[\w-]+\] succeeded in [\d.e-]+s: 200", timeout=10)

    assert receiver.count() == 1
    post = receiver.posts[0]
    assert post["method"] == "POST"
    assert post["headers"].get("Idempotency-Key") == f"{wf}:callback"
    assert post["json"]["instance_id"] == wf
    assert post["json"]["runtime_status"] == "COMPLETED" and post["json"]["output"] == "Called back."
    assert post["json"] == api.status(wf)


def test_callback_is_retried_without_blocking_the_turn(api: Api, model: ScriptedModel, platform: Platform) -> None:
    receiver = CallbackReceiver(answers=[503])
    try:
        model.add(text("Called back, eventually."))
        wf = api.start_turn("Call me back", session_id="cb-retry", callback_url=receiver.url)
        assert api.wait_status(wf)["runtime_status"] == "COMPLETED"

        wait_until(lambda: receiver.count() >= 2, timeout=20, message="the retried callback POST")
        platform.stack.find_in_logs(r"Task agent_platform\.callback\[[\w-]+\] succeeded in [\d.e-]+s: 200", timeout=10)

        assert receiver.count() == 2
        assert [p["json"]["runtime_status"] for p in receiver.posts] == ["COMPLETED", "COMPLETED"]
    finally:
        receiver.stop()
