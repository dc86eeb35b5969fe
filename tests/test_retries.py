"""Retries (DESIGN section 3 rule 4): tool retries (C02), model retries honouring
Retry-After (C11), model retries exhausted (FAILED with failure_details), and
``max_iterations`` (COMPLETED with ``stop_reason="max_iterations"``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from agent_platform.testing import ScriptedModel, error, text, tool_call

from .agents_failures import tool_events
from .helpers import Api, Platform, chain_problems

AGENT_APP = "tests.agents_failures:ops_buddy"
PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
    "AGENT_PLATFORM_LLM_BACKOFF": "0.05",
    "AGENT_PLATFORM_LLM_BACKOFF_MAX": "0.2",
    "AGENT_PLATFORM_LLM_MAX_ATTEMPTS": "3",
}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _flaky_responder(body: dict[str, Any]) -> Any:
    """Call flaky_lookup for the user's question; answer with whatever came back."""
    last = body["messages"][-1]
    if last["role"] == "user":
        return tool_call("flaky_lookup", {"query": last["content"]})
    return text(f"Tool said: {last['content']}")


def test_c02_flaky_tool_leaves_a_truthful_status(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    model.set_responder(_flaky_responder)
    turns = []

    for i in range(10):
        wf = api.start_turn(f"question {i}", session_id="c02")
        turns.append(wf)
        status = api.wait_status(wf, timeout=30)
        assert status["runtime_status"] == "COMPLETED", status

    calls = tool_events(redis_client, "flaky_lookup:call")
    assert len(calls) == 20  # every turn: a failing attempt, then its retry
    for i, wf in enumerate(turns):
        status = api.status(wf)
        assert status["runtime_status"] == "COMPLETED"
        assert status["last_updated_at"] and status["ended_at"], status
        assert _time(status["created_at"]) <= _time(status["ended_at"]) <= _time(status["last_updated_at"])
        assert "the answer to question" in status["output"], status
        steps = api.steps(wf)
        tools = [s for s in steps if s["kind"] == "tool"]
        # the step log shows each attempt and its error
        assert [(s["status"], s["attempt"]) for s in tools] == [("retry", 1), ("ok", 2)], tools
        assert "flaky service failed on call" in tools[0]["data"]["error"]
        assert tools[0]["data"]["error"].startswith("ConnectionError")
        assert tools[1]["data"]["result"] == {"query": f"question {i}", "answer": f"the answer to question {i}"}
        assert tools[0]["data"]["call_id"] == tools[1]["data"]["call_id"]
        assert chain_problems(steps) == []
        mine = [c for c in calls if c["workflow_id"] == wf]
        assert [c["attempt"] for c in mine] == [1, 2]
        assert len({c["idempotency_key"] for c in mine}) == 1
        assert mine[0]["idempotency_key"] == f"{wf}:{tools[0]['data']['call_id']}"
    # no turn is left RUNNING once the workers are idle
    listed = api.http.get("/workflows", params={"limit": 100}).json()["workflows"]
    assert {w["runtime_status"] for w in listed} == {"COMPLETED"} and len(listed) == 10


def test_tool_error_text_goes_back_to_the_model_after_the_last_retry(
    api: Api, model: ScriptedModel, redis_client: redis.Redis
) -> None:
    model.add(tool_call("broken_service", {"query": "q"}), text("The service is down."))

    wf = api.start_turn("look it up", session_id="exhaust")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "The service is down."
    tools = [s for s in api.steps(wf) if s["kind"] == "tool"]
    assert [(s["status"], s["attempt"]) for s in tools] == [("retry", 1), ("error", 2)]
    answer = model.requests[1]["messages"][-1]
    assert answer["role"] == "tool" and answer["content"] == f"Error: {tools[1]['data']['error']}", answer
    assert answer["content"].startswith("Error: TimeoutError: the broken service timed out"), answer
    assert [c["attempt"] for c in tool_events(redis_client, "broken_service:call")] == [1, 2]


def test_a_tool_past_its_timeout_is_stopped_and_the_model_told(
    api: Api, model: ScriptedModel, redis_client: redis.Redis
) -> None:
    model.add(tool_call("hanging_task", {}), text("The task hung."))

    wf = api.start_turn("Run the hanging task", session_id="timeout")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    tools = [s for s in api.steps(wf) if s["kind"] == "tool"]
    assert [s["status"] for s in tools] == ["error"]
    assert "did not finish within its timeout of 1.0 s" in tools[0]["data"]["error"], tools
    assert "timeout of 1.0 s" in model.requests[1]["messages"][-1]["content"]
    assert len(tool_events(redis_client, "hanging_task:start")) == 1
    assert tool_events(redis_client, "hanging_task:end") == []


def test_an_unknown_tool_goes_back_to_the_model(api: Api, model: ScriptedModel) -> None:
    model.add(tool_call("launch_rockets", {"count": 3}), text("I cannot launch rockets."))

    wf = api.start_turn("Launch three rockets", session_id="unknown-tool")
    status = api.wait_status(wf)

    assert status["runtime_status"] == "COMPLETED" and status["output"] == "I cannot launch rockets.", status
    content = model.requests[1]["messages"][-1]["content"]
    assert "unknown tool 'launch_rockets'" in content and "slow_task" in content, content


def test_c11_rate_limited_model_is_retried_after_retry_after(api: Api, model: ScriptedModel) -> None:
    model.add(
        error(429, headers={"Retry-After": "1"}),
        error(429, headers={"Retry-After": "1"}),
        text("Answered after the rate limit."),
    )

    wf = api.start_turn("Hello?", session_id="c11")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Answered after the rate limit."
    assert model.calls == 3
    gaps = [later - earlier for earlier, later in zip(model.request_times, model.request_times[1:], strict=False)]
    assert all(gap >= 1.0 for gap in gaps), gaps
    llm = [s for s in api.steps(wf) if s["kind"] == "llm"]
    assert [(s["status"], s["attempt"]) for s in llm] == [("retry", 1), ("retry", 2), ("ok", 3)]
    for retry in llm[:2]:
        assert "429" in retry["data"]["error"], retry
        assert retry["data"]["retry_after"] == 1.0 and retry["data"]["retry_in"] >= 1.0, retry
    assert status["iteration"] == 1
    assert chain_problems(api.steps(wf)) == []


def test_model_retries_exhausted_fail_the_turn_with_failure_details(
    api: Api, model: ScriptedModel, platform: Platform
) -> None:
    model.add(error(503), error(502), error(500))

    wf = api.start_turn("Hello?", session_id="exhausted")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "FAILED", status
    details = status["failure_details"]
    assert details["type"] == "RetryableLLMError" and details["step"] == "llm", details
    assert "500" in details["message"], details
    assert status["ended_at"] and status["output"] is None
    assert model.calls == 3
    llm = [s for s in api.steps(wf) if s["kind"] == "llm"]
    assert [(s["status"], s["attempt"]) for s in llm] == [("retry", 1), ("retry", 2), ("error", 3)]
    # the session is free again: its next turn runs
    model.add(text("Back to normal."))
    after = api.wait_status(api.start_turn("Again?", session_id="exhausted"))
    assert after["runtime_status"] == "COMPLETED", after


def test_a_non_retryable_model_error_fails_at_once(api: Api, model: ScriptedModel) -> None:
    model.add(error(400))

    wf = api.start_turn("Hello?", session_id="bad-request")
    status = api.wait_status(wf)

    assert status["runtime_status"] == "FAILED", status
    assert status["failure_details"]["type"] == "LLMError" and "400" in status["failure_details"]["message"]
    assert model.calls == 1


def test_max_iterations_ends_completed_with_the_last_answer(api: Api, model: ScriptedModel) -> None:
    model.add(
        tool_call("slow_task", {"seconds": 0, "label": "one"}),
        tool_call("slow_task", {"seconds": 0, "label": "two"}),
        text("I stopped after two rounds of tools."),
    )

    wf = api.start_turn("Keep running slow tasks", session_id="maxit")
    status = api.wait_status(wf)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["stop_reason"] == "max_iterations"
    assert status["output"] == "I stopped after two rounds of tools."
    assert status["iteration"] == 3 and model.calls == 3
    # the last call allowed by max_iterations (3) may not call tools
    assert [r.get("tool_choice", "auto") == "none" for r in model.requests] == [False, False, True]
    assert all(r["tools"] for r in model.requests)
    assert [s["kind"] for s in api.steps(wf)] == ["start", "llm", "tool", "llm", "tool", "llm", "finish"]


def test_max_iterations_ignores_tool_calls_on_the_last_call(api: Api, model: ScriptedModel) -> None:
    """A model that calls a tool even with tool_choice="none": the call is not run."""
    model.add(
        tool_call("slow_task", {"seconds": 0, "label": "one"}),
        tool_call("slow_task", {"seconds": 0, "label": "two"}),
        tool_call("slow_task", {"seconds": 0, "label": "three"}),
    )

    wf = api.start_turn("Keep running slow tasks", session_id="maxit-stubborn")
    status = api.wait_status(wf)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["stop_reason"] == "max_iterations"
    steps = api.steps(wf)
    assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "tool", "llm", "finish"]
    assert "ignored_tool_calls" in steps[5]["data"]
    assert json.loads(steps[5]["data"]["tool_calls"][0]["function"]["arguments"])["label"] == "three"
    assert chain_problems(steps) == []
