"""Cases C12, C13, C15 and C19 of /work/shared/cases (model and tool field faults),
against real Celery workers, a real Redis and real HTTP; the model is the ScriptedModel,
validating every request's history as OpenAI does where the case says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from agent_platform.testing import Reply, ScriptedModel, text, tool_call, trickle
from agent_platform.testing.validation import strict_json

from .agents_model_faults import SLOW_MODEL_DEADLINE, tool_runs
from .helpers import Api, Platform, chain_problems
from .test_control import CallbackReceiver
from .workers import wait_until

AGENT_APP = "tests.agents_model_faults:faults_buddy,tests.agents_model_faults:slow_model_buddy"
PLATFORM_ENV = {
    "AGENT_PLATFORM_LLM_BACKOFF": "0.2",
    "AGENT_PLATFORM_LLM_BACKOFF_MAX": "0.5",
    # C19's callback receiver listens on loopback, which C20 refuses unless allowed.
    "AGENT_PLATFORM_CALLBACK_ALLOW": "127.0.0.0/8",
}
FAULTS = "FaultsBuddy"


@pytest.fixture
def strict_model(model: ScriptedModel) -> ScriptedModel:
    """The scripted model answering 400 to a history OpenAI would refuse (reset after the test)."""
    model.validate_history = True
    return model


def _calls_sent_back(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for m in request["messages"] if m["role"] == "assistant" for call in m.get("tool_calls") or []]


def _tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def _no_args_call(arguments: Any) -> Reply:
    """A reply calling get_server_time with ``arguments`` exactly as given (any JSON value)."""
    call = {"id": None, "type": "function", "function": {"name": "get_server_time", "arguments": arguments}}
    return Reply(message={"role": "assistant", "content": None, "tool_calls": [call]}, finish_reason="tool_calls")


# -- C12: tool call arguments that are not a JSON object text -------------------------------


def test_c12_empty_tool_arguments_run_the_tool_once_and_go_back_as_an_empty_object(
    api: Api, strict_model: ScriptedModel, redis_client: redis.Redis
) -> None:
    strict_model.add(tool_call("get_server_time", ""), text("It is noon."), text("Still noon."))

    first = api.wait_status(api.start_turn("What time is it?", session_id="c12", agent=FAULTS))

    assert first["runtime_status"] == "COMPLETED", first
    assert first["output"] == "It is noon."
    assert strict_model.rejections == []
    assert tool_runs(redis_client) == [{"tool": "get_server_time", "arguments": {}}]
    # the second request sends the call back with "{}", never ""
    assert [c["function"]["arguments"] for c in _calls_sent_back(strict_model.requests[1])] == ["{}"]
    assert _tool_messages(strict_model.requests[1])[0]["content"] == '{"time": "12:00:00Z"}'
    # the step log keeps what the model sent beside what went back
    llm = next(s for s in api.steps(first["instance_id"]) if s["kind"] == "llm")
    assert llm["data"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert llm["data"]["tool_calls"][0]["raw_arguments"] == ""

    second = api.wait_status(api.start_turn("And now?", session_id="c12", agent=FAULTS))

    assert second["runtime_status"] == "COMPLETED", second
    assert second["output"] == "Still noon."
    assert strict_model.rejections == []
    assert strict_model.calls == 3
    assert len(tool_runs(redis_client)) == 1


@pytest.mark.parametrize(
    "arguments",
    ["   ", "null", None, {}, '"{}"', "{}"],
    ids=["whitespace", "null-text", "json-null", "object", "encoded-twice", "empty-object"],
)
def test_c12_variants_meaning_no_arguments_run_the_tool_once(
    api: Api, strict_model: ScriptedModel, redis_client: redis.Redis, arguments: Any
) -> None:
    strict_model.add(_no_args_call(arguments), text("It is noon."))

    status = api.wait_status(api.start_turn("What time is it?", session_id="c12v", agent=FAULTS))

    assert status["runtime_status"] == "COMPLETED", status
    assert strict_model.rejections == []
    assert tool_runs(redis_client) == [{"tool": "get_server_time", "arguments": {}}]
    assert [c["function"]["arguments"] for c in _calls_sent_back(strict_model.requests[1])] == ["{}"]


@pytest.mark.parametrize("arguments", ['{"tz": ', "[1, 2]", "42", '{"city": NaN}'])
def test_c12_unreadable_arguments_go_back_to_the_model_as_a_tool_error(
    api: Api, strict_model: ScriptedModel, redis_client: redis.Redis, arguments: str
) -> None:
    call = tool_call("lookup_city", arguments)
    strict_model.add(call, tool_call("lookup_city", {"city": "Oslo"}), text("Oslo is somewhere."))

    status = api.wait_status(api.start_turn("Where is Oslo?", session_id="c12e", agent=FAULTS))

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Oslo is somewhere."
    assert strict_model.rejections == []
    # the function only ever ran with readable arguments
    assert tool_runs(redis_client) == [{"tool": "lookup_city", "arguments": {"city": "Oslo"}}]
    sent_back = _calls_sent_back(strict_model.requests[1])
    assert [c["function"]["arguments"] for c in sent_back] == ["{}"]
    error = _tool_messages(strict_model.requests[1])[0]["content"]
    assert error.startswith("Error: tool arguments") and arguments[:4] in error, error
    steps = api.steps(status["instance_id"])
    assert not chain_problems(steps)
    tool = next(s for s in steps if s["kind"] == "tool")
    assert (tool["status"], tool["data"]["arguments"], tool["data"]["raw_arguments"]) == ("error", "{}", arguments)


# -- C13: a model server that trickles bytes ----------------------------------------------


@pytest.mark.parametrize("in_headers", [False, True], ids=["trickled-body", "endless-headers"])
def test_c13_a_trickling_model_server_is_cut_at_the_call_deadline(
    api: Api, model: ScriptedModel, in_headers: bool
) -> None:
    check_c13(api, model, in_headers)


def check_c13(api: Api, model: ScriptedModel, in_headers: bool, agent: str = "SlowModelBuddy") -> None:
    """C13 with ``agent`` (SlowModelBuddy or SlowUnstreamedBuddy): the first answer
    trickles (its body, or its headers), the second comes whole; the turn completes and
    the first attempt ended at its deadline, its connection closed."""
    model.add(trickle("never read", in_headers=in_headers), text("Answered on the second attempt."))

    wf = api.start_turn("Hello?", session_id="c13", agent=agent)
    status = api.wait_status(wf, timeout=60)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Answered on the second attempt."
    assert model.calls == 2
    assert model.max_in_flight == 1  # the first request's connection was closed before the retry
    llm = [s for s in api.steps(wf) if s["kind"] == "llm"]
    assert [(s["status"], s["attempt"]) for s in llm] == [("retry", 1), ("ok", 2)]
    assert f"deadline of {SLOW_MODEL_DEADLINE} s" in llm[0]["data"]["error"]
    # the attempt ended about 3 s after it began (slack for a loaded machine)
    assert SLOW_MODEL_DEADLINE - 0.1 <= llm[0]["duration_ms"] / 1000 <= SLOW_MODEL_DEADLINE + 2.5, llm[0]
    gap = model.request_times[1] - model.request_times[0]
    assert gap >= SLOW_MODEL_DEADLINE - 0.1, gap


# -- C15: tool results that JSON cannot carry as they are ---------------------------------


def _strict_get(api: Api, path: str) -> Any:
    response = api.http.get(path)
    assert response.status_code == 200, response.text
    return strict_json(response.text)  # raises on a NaN or Infinity token


def _strict_events(api: Api, workflow_id: str) -> list[Any]:
    events = []
    with api.http.stream("GET", f"/workflows/{workflow_id}/events", timeout=httpx.Timeout(10.0, read=20.0)) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(strict_json(line[5:]))
    return events


def _tool_turn(api: Api, model: ScriptedModel, tool: str, answer: str) -> tuple[str, dict[str, Any]]:
    """One turn of FaultsBuddy: the model calls ``tool`` without arguments, then answers."""
    model.add(tool_call(tool, {}), text(answer))
    wf = api.start_turn(f"Run {tool}", session_id=tool, agent=FAULTS)
    status = api.wait_status(wf)
    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == answer
    assert model.rejections == []  # the request bodies were strict JSON, with valid histories
    return wf, status


def test_c15_a_nan_result_reaches_the_model_and_the_api_as_strict_json(
    api: Api, strict_model: ScriptedModel, redis_client: redis.Redis
) -> None:
    wf, _ = _tool_turn(api, strict_model, "score_report", "The score is unknown.")

    expected = {"score": None, "ceiling": None, "floor": None, "weight": 0.5}
    assert strict_json(_tool_messages(strict_model.requests[1])[0]["content"]) == expected
    steps = _strict_get(api, f"/workflows/{wf}/steps")["steps"]
    assert next(s for s in steps if s["kind"] == "tool")["data"]["result"] == expected
    assert _strict_get(api, f"/workflows/{wf}")["runtime_status"] == "COMPLETED"
    assert _strict_get(api, f"/v1.0/workflows/workflowstatestore/{wf}")["runtimeStatus"] == "COMPLETED"
    events = _strict_events(api, wf)
    assert any(e.get("data", {}).get("result") == expected for e in events), events
    assert len(tool_runs(redis_client, "score_report")) == 1


def test_c15_b_a_bytes_result_is_converted_and_the_tool_runs_once(
    api: Api, strict_model: ScriptedModel, redis_client: redis.Redis
) -> None:
    wf, _ = _tool_turn(api, strict_model, "issue_receipt", "Your receipt is issued.")

    assert len(tool_runs(redis_client, "issue_receipt")) == 1  # retries=1, yet one run
    tool = [s for s in api.steps(wf) if s["kind"] == "tool"]
    assert [(s["status"], s["attempt"]) for s in tool] == [("ok", 1)]
    # the documented rule: bytes as UTF-8 text, each invalid byte replaced by U+FFFD
    assert tool[0]["data"]["result"] == {"receipt": "\ufffd\x00", "text": "paid"}
    assert strict_json(_tool_messages(strict_model.requests[1])[0]["content"]) == tool[0]["data"]["result"]


# -- C19: the model answers nothing ---------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.stop()


@pytest.mark.parametrize("content", ["", None], ids=["empty-string", "null"])
def test_c19_an_empty_model_reply_completes_the_turn_with_an_empty_output(
    api: Api, strict_model: ScriptedModel, platform: Platform, receiver: CallbackReceiver, content: str | None
) -> None:
    strict_model.add(Reply(message={"role": "assistant", "content": content}, finish_reason="stop"))

    wf = api.start_turn("Say nothing", session_id="c19", agent=FAULTS, callback_url=receiver.url)
    status = api.wait_status(wf)

    assert status["runtime_status"] == "COMPLETED", status
    assert (status["output"], status["stop_reason"]) == ("", "empty_reply")
    assert strict_model.calls == 1
    steps = api.steps(wf)
    assert [(s["kind"], s["status"]) for s in steps] == [("start", "ok"), ("llm", "ok"), ("finish", "ok")]
    dapr = _strict_get(api, f"/v1.0/workflows/workflowstatestore/{wf}")
    assert dapr["runtimeStatus"] == "COMPLETED" and json.loads(dapr["properties"]["dapr.workflow.output"]) == ""
    wait_until(lambda: receiver.count() >= 1, timeout=15, message="the callback POST")
    assert receiver.posts[0]["json"] == api.status(wf)
    history = platform.history("c19", agent=FAULTS)
    assert [(m["role"], m["content"]) for m in history] == [("user", "Say nothing"), ("assistant", "")]

    # the session goes on: the next turn sees the empty answer in its history
    strict_model.add(text("Now I talk."))
    after = api.wait_status(api.start_turn("Say something", session_id="c19", agent=FAULTS))
    assert after["runtime_status"] == "COMPLETED" and after["output"] == "Now I talk."
    assert strict_model.rejections == []
    sent = [(m["role"], m["content"]) for m in strict_model.requests[1]["messages"][1:]]
    assert sent == [("user", "Say nothing"), ("assistant", ""), ("user", "Say something")]


def test_lone_surrogates_from_the_model_or_a_tool_become_u_fffd_and_the_turn_completes(
    api: Api, strict_model: ScriptedModel, redis_client: redis.Redis
) -> None:
    """A reply whose JSON holds a lone ``\\ud800``-``\\udfff`` escape (valid JSON, not Unicode
    text) and a tool result holding one are checkpointed with U+FFFD in its place, as
    invalid bytes are (C15). Before, Redis's JSON decoder refused the checkpoint, each run
    ended as a ``lost`` record, and the turn FAILED after three model calls as
    ``WorkerLost`` although no worker had died. A proper pair (an emoji) is kept."""
    strict_model.add(tool_call("lookup_city", {"city": "Par\ud800is"}), text("Bad \udfff text \U0001f600"))
    wf = api.start_turn("Which city?", session_id="surrogates", agent=FAULTS)
    status = api.wait_status(wf, timeout=60)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "Bad \ufffd text \U0001f600"
    steps = api.steps(wf)
    assert [(s["kind"], s["status"]) for s in steps] == [
        ("start", "ok"), ("llm", "ok"), ("tool", "ok"), ("llm", "ok"), ("finish", "ok")
    ]  # fmt: skip
    assert steps[2]["data"]["result"] == {"city": "Par\ufffdis", "country": "somewhere"}
    assert [r["arguments"]["city"] for r in tool_runs(redis_client, "lookup_city")] == ["Par\ud800is"]  # ran once
    assert strict_model.calls == 2 and strict_model.rejections == []
    assert api.http.get(f"/ui/workflows/{wf}").status_code == 200


def test_a_task_with_a_lone_surrogate_from_the_python_api_completes_with_u_fffd(
    platform: Platform, api: Api, strict_model: ScriptedModel
) -> None:
    """The HTTP routes refuse a lone surrogate (400); a task that arrives another way (the
    Python API, a bus message) is stored with U+FFFD in its place, as model replies and tool
    results are, so the turn runs instead of ending as lost runs (C15's kind)."""
    from agent_platform.runtime import Runtime
    from agent_platform.settings import Settings
    from tasks import create_celery

    strict_model.add(text("Paris it is."))
    runtime = Runtime(Settings.from_env({k: v for k, v in platform.env.items() if v}))
    app = create_celery(runtime=runtime)  # gives the runtime its dispatcher
    try:
        wf, created = runtime.start_workflow(FAULTS, "Which\ud800 city?", session_id="api-surrogate")
    finally:
        app.close()
        runtime.close()
    assert created
    status = api.wait_status(wf, timeout=60)
    assert status["runtime_status"] == "COMPLETED", status
    assert status["input"] == "Which\ufffd city?"
    assert [s["status"] for s in api.steps(wf)] == ["ok", "ok", "ok"]
