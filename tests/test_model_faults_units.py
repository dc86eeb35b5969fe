"""Fast checks of the rules behind cases C12, C13, C15 and C19: tool call arguments, the
model call deadline, the tool result encoding, empty replies, the scripted model's
strict validation. The whole system is driven in tests/test_cases_model_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from flask import Flask
from pydantic import BaseModel

from agent_platform.errors import ConfigurationError, RetryableLLMError, ToolArgumentsError
from agent_platform.jsontext import dumps, to_jsonable
from agent_platform.llm.deadline import CallerEventLoop, DeadlineExceeded
from agent_platform.llm.openai_client import DEFAULT_TIMEOUT, OpenAIChatClient
from agent_platform.llm.reply import AssistantReply, ToolCall, parse_chat_completion
from agent_platform.testing import ScriptedModel, delay, text, trickle
from agent_platform.testing.validation import history_problem, strict_json
from agent_platform.tool import ToolContext, arguments_text, parse_arguments, tool
from web.events import sse
from web.json_provider import StrictJSONProvider

# -- C12: arguments -------------------------------------------------------------------------

NO_ARGUMENTS = ["", "   ", "\n", "null", None, {}, "{}", '""', '"null"', '"{}"']
UNREADABLE = ['{"a": ', "[1]", "42", '"text"', "true", '{"a": NaN}', '{"a": Infinity}', [1], {"a": math.nan}]


@pytest.mark.parametrize("arguments", NO_ARGUMENTS, ids=repr)
def test_c12_arguments_meaning_none_read_as_an_empty_object(arguments: Any) -> None:
    assert parse_arguments(arguments) == {}
    text_back, received = arguments_text(arguments)
    assert text_back == "{}"
    # what arrived is kept when it is not what goes back
    assert received == (None if arguments in (None, {}, "{}") else arguments)


@pytest.mark.parametrize("arguments", UNREADABLE, ids=repr)
def test_c12_unreadable_arguments_fail_validation_and_go_back_as_an_empty_object(arguments: Any) -> None:
    with pytest.raises(ToolArgumentsError, match="tool arguments"):
        parse_arguments(arguments)
    text_back, received = arguments_text(arguments)
    assert text_back == "{}" and received is not None
    call = ToolCall.received("c1", "f", arguments)
    assert json.loads(call.to_message()["function"]["arguments"]) == {}
    assert call.received_arguments == received  # what the tool step validates (and refuses)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Oslo"}', '{"city": "Oslo"}'),  # kept as sent
        (' {"city":"Oslo"} ', ' {"city":"Oslo"} '),
        ({"city": "Oslo"}, '{"city": "Oslo"}'),  # Ollama's object
        ('"{\\"city\\": \\"Oslo\\"}"', '{"city": "Oslo"}'),  # encoded twice
    ],
)
def test_c12_an_object_goes_back_as_the_object_the_tool_gets(arguments: Any, expected: str) -> None:
    text_back, _ = arguments_text(arguments)
    assert text_back == expected
    assert json.loads(text_back) == parse_arguments(arguments) == {"city": "Oslo"}


def test_c12_a_tool_call_always_sends_back_object_text_and_records_what_arrived() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "a", "function": {"name": "now", "arguments": ""}},
                        {"id": "b", "function": {"name": "now", "arguments": None}},
                        {"id": "c", "function": {"name": "city", "arguments": '{"city": '}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    reply = parse_chat_completion(body)
    sent = reply.to_message()["tool_calls"]
    assert [c["function"]["arguments"] for c in sent] == ["{}", "{}", "{}"]
    assert all("raw_arguments" not in c and set(c) == {"id", "type", "function"} for c in sent)
    record = reply.to_dict()
    assert [c.get("raw_arguments") for c in record["tool_calls"]] == ["", None, '{"city": ']
    assert AssistantReply.from_dict(json.loads(json.dumps(record))) == reply
    # a call built directly holds the same invariant
    assert ToolCall("x", "now", "").arguments == "{}"


# -- C19: empty replies -------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", None, "  \n", []])
def test_c19_a_reply_of_nothing_is_a_reply_not_a_fault(content: Any) -> None:
    reply = parse_chat_completion({"choices": [{"message": {"role": "assistant", "content": content}}]})
    assert reply.empty and reply.tool_calls == []
    assert reply.to_message() == {"role": "assistant", "content": reply.content}
    assert not parse_chat_completion({"choices": [{"message": {"role": "assistant", "content": "Hi"}}]}).empty


# -- C15: tool results -----------------------------------------------------------------------


class Receipt(BaseModel):
    data: bytes
    score: float


@dataclass
class Measure:
    value: float
    raw: bytes


def test_c15_results_are_encoded_by_one_rule() -> None:
    assert to_jsonable({"score": math.nan, "hi": math.inf, "lo": -math.inf}) == {"score": None, "hi": None, "lo": None}
    assert to_jsonable({"receipt": b"\xff\x00"}) == {"receipt": "\ufffd\x00"}
    assert to_jsonable(b"plain text") == "plain text"
    assert to_jsonable(bytearray(b"\xfe")) == "\ufffd"
    assert to_jsonable([Receipt(data=b"\xff", score=math.nan), Measure(math.inf, b"ok")]) == [
        {"data": "\ufffd", "score": None},
        {"value": None, "raw": "ok"},
    ]
    assert to_jsonable(Receipt(data=b"ok", score=1.5)) == {"data": "ok", "score": 1.5}

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    assert "cannot be encoded" in to_jsonable({"x": Unprintable()})  # never raises


def test_c15_a_tool_returning_bytes_counts_as_successful() -> None:
    runs = []

    @tool(retries=1)
    def issue() -> dict[str, Any]:
        runs.append(1)
        return {"receipt": b"\xff\x00", "score": math.nan}

    context = ToolContext("wf", "c1", "wf:c1", 1, "A", "s")
    assert issue.invoke("", context) == {"receipt": "\ufffd\x00", "score": None}
    assert runs == [1]


def test_c15_responses_are_strict_json() -> None:
    data = {"score": math.nan, "nested": [math.inf, 1.0]}
    assert dumps(data) == '{"score": null, "nested": [null, 1.0]}'
    assert strict_json(sse(data, "step", 3).split("data: ", 1)[1]) == {"score": None, "nested": [None, 1.0]}
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    with app.app_context():
        response = app.json.response(data)
    assert strict_json(response.get_data(as_text=True)) == {"score": None, "nested": [None, 1.0]}


# -- C13: the model call deadline ----------------------------------------------------------


def test_c13_the_deadline_bounds_the_whole_call_and_cancels_it() -> None:
    loop_thread = CallerEventLoop("test-deadline")
    cancelled = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "late"

    async def quick() -> str:
        return "fast"

    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        loop_thread.run(slow, 0.3)
    assert time.monotonic() - started < 5 and cancelled == [True]
    assert loop_thread.run(quick, 1) == "fast"


def test_model_calls_run_from_a_thread_that_runs_an_event_loop() -> None:
    """A notebook or an async application calls the synchronous client from inside a
    running loop: the call runs on a helper thread, the caller waits as for any call."""
    with ScriptedModel(["plain", "streamed"]) as model:
        client = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=5)
        deltas: list[dict[str, Any] | None] = []

        async def inside_a_loop() -> tuple[str | None, str | None]:
            plain = client.chat([{"role": "user", "content": "hi"}]).content
            streamed = client.chat([{"role": "user", "content": "hi"}], on_delta=deltas.append).content
            return plain, streamed

        assert asyncio.run(inside_a_loop()) == ("plain", "streamed")
        assert {"text": "stre"} in deltas
        client.close()


def test_threads_share_one_client_each_on_its_own_loop() -> None:
    """Celery's threads pool: concurrent steps call one client, each thread on its own
    event loop and SDK client, none waiting for another's call."""
    with ScriptedModel(default=delay(1.0, "done")) as model:
        client = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=5)
        answers: list[str | None] = []

        def step() -> None:
            answers.append(client.chat([{"role": "user", "content": "hi"}]).content)

        threads = [threading.Thread(target=step) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert answers == ["done"] * 3
        assert model.max_in_flight == 3  # at the same time: each thread its own connection
        client.close()


def test_c13_a_call_interrupted_in_its_thread_is_cancelled_before_the_next() -> None:
    """Celery's soft time limit raises in the worker's thread mid-call (a signal): the
    call's request is cancelled, its connection closed, before the exception goes on,
    so the next call is the only request in flight."""

    class SoftTimeLimit(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise SoftTimeLimit

    with ScriptedModel([trickle("slow", chunk=5, interval=0.2), text("fast")]) as model:
        client = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=30)
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            with pytest.raises(SoftTimeLimit):
                client.chat([{"role": "user", "content": "hi"}])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert client.chat([{"role": "user", "content": "hi"}]).content == "fast"
        assert model.max_in_flight == 1


def test_c13_the_timeout_is_an_argument_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_PLATFORM_LLM_TIMEOUT", raising=False)
    client = OpenAIChatClient(base_url="http://127.0.0.1:9/v1")
    assert client.resolved()["timeout"] == DEFAULT_TIMEOUT
    monkeypatch.setenv("AGENT_PLATFORM_LLM_TIMEOUT", "7.5")
    assert client.resolved()["timeout"] == 7.5
    assert OpenAIChatClient(base_url="http://127.0.0.1:9/v1", timeout=3).resolved()["timeout"] == 3
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("AGENT_PLATFORM_LLM_TIMEOUT", bad)
        with pytest.raises(ConfigurationError, match="timeout|seconds"):
            client.resolved()


@pytest.mark.parametrize("in_headers", [False, True], ids=["trickled-body", "endless-headers"])
def test_c13_a_trickling_server_is_cut_at_the_deadline_over_real_http(in_headers: bool) -> None:
    with ScriptedModel([trickle("slow", chunk=5, interval=0.2, in_headers=in_headers), text("fast")]) as model:
        client = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=1)
        started = time.monotonic()
        with pytest.raises(RetryableLLMError, match="deadline of 1 s"):
            client.chat([{"role": "user", "content": "hi"}])
        assert 0.9 <= time.monotonic() - started < 4
        assert client.chat([{"role": "user", "content": "hi"}]).content == "fast"
        assert model.max_in_flight == 1


def test_c13_a_trickled_body_is_a_valid_reply_for_a_patient_client() -> None:
    with ScriptedModel([trickle("worth the wait", chunk=100, interval=0.05)]) as model:
        client = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=10)
        assert client.chat([{"role": "user", "content": "hi"}]).content == "worth the wait"


# -- the scripted model's strict validation ------------------------------------------------


def _history(arguments: Any, answered: bool = True) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    if answered:
        messages.append({"role": "tool", "tool_call_id": "c1", "content": "{}"})
    return {"model": "m", "messages": messages}


@pytest.mark.parametrize("arguments", ["", " ", "null", None, {}, "[1]", '{"a": NaN}', '{"a":'])
def test_validation_refuses_arguments_that_are_not_object_text(arguments: Any) -> None:
    problem = history_problem(_history(arguments))
    assert problem is not None and "arguments" in problem[1]


def test_validation_accepts_object_text_and_wants_every_call_answered() -> None:
    assert history_problem(_history('{"a": 1}')) is None
    assert history_problem(_history("{}", answered=False)) is not None
    stray = {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "z", "content": "1"}]}
    assert history_problem(stray) is not None
    with pytest.raises(ValueError):
        strict_json('{"a": NaN}')


def test_scripted_model_answers_400_to_a_refused_history_without_taking_a_reply() -> None:
    with ScriptedModel([text("kept")], validate_history=True) as model:
        bad = httpx.post(f"{model.base_url}/chat/completions", json=_history(""))
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        nan = httpx.post(
            f"{model.base_url}/chat/completions",
            content='{"model": "m", "messages": [], "temperature": NaN}',
            headers={"Content-Type": "application/json"},
        )
        assert nan.status_code == 400 and "parse the JSON body" in nan.json()["error"]["message"]
        good = httpx.post(f"{model.base_url}/chat/completions", json=_history('{"a": 1}'))
        assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] == "kept"
        assert len(model.rejections) == 2 and model.calls == 3
        model.reset()
        assert model.validate_history is True and model.rejections == []
