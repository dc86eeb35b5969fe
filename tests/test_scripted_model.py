"""agent_platform.testing.ScriptedModel over real HTTP, through the ``openai`` SDK."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from agent_platform.testing import (
    ScriptedModel,
    StreamStyle,
    delay,
    error,
    raw,
    streamed,
    text,
    tool_call,
    tool_calls,
)

USER = [{"role": "user", "content": "Find me a flight to Paris."}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    with ScriptedModel() as scripted:
        yield scripted


@pytest.fixture(scope="module")
def client(server: ScriptedModel) -> Iterator[openai.OpenAI]:
    # One client for the module: building an SDK client costs tens of milliseconds.
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=5.0) as sdk:
        yield sdk


@pytest.fixture
def model(server: ScriptedModel) -> ScriptedModel:
    server.reset()
    server.default = None
    return server


def chat(client: openai.OpenAI, messages: list[dict] = USER, **kwargs: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="scripted-model", messages=messages, **kwargs)  # type: ignore[arg-type]


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_text_reply_looks_like_an_openai_chat_completion(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(text("Fly on Monday."), "Plain strings are text too.")

    first, second = chat(client), chat(client)

    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert (first.object, first.model) == ("chat.completion", "scripted-model")
    choice = first.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == (
        "assistant",
        "Fly on Monday.",
        "stop",
    )
    assert choice.message.tool_calls is None
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert second.choices[0].message.content == "Plain strings are text too."


def test_text_usage_can_be_scripted(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(text("ok", usage={"prompt_tokens": 7, "completion_tokens": 2}))

    usage = chat(client).usage

    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 2, 9)


def test_tool_call_round_trip(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(tool_call("search_flights", {"destination": "Paris"}), text("There is one on Monday."))

    completion = chat(client, tools=[{"type": "function", "function": {"name": "search_flights", "parameters": {}}}])
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    (call,) = message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "search_flights"
    assert json.loads(call.function.arguments) == {"destination": "Paris"}

    history = [
        *USER,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"flights": ["AF1"]}'},
    ]
    answer = chat(client, history)

    assert answer.choices[0].message.content == "There is one on Monday."
    assert model.requests[1]["messages"][-1] == history[-1]
    assert model.requests[0]["tools"][0]["function"]["name"] == "search_flights"


def test_tool_call_arguments_string_is_sent_raw(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(tool_call("search_flights", '{"destination": ', call_id="call_fixed"))

    (call,) = chat(client).choices[0].message.tool_calls

    assert (call.id, call.function.arguments) == ("call_fixed", '{"destination": ')


def test_several_tool_calls_in_one_message(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(tool_calls(("search_flights", {"destination": "Paris"}), ("search_hotels", '{"city": "Paris"}')))
    model.add(tool_call("search_flights", {}))

    calls = chat(client).choices[0].message.tool_calls
    (later,) = chat(client).choices[0].message.tool_calls

    assert [c.function.name for c in calls] == ["search_flights", "search_hotels"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"destination": "Paris"}, {"city": "Paris"}]
    assert len({calls[0].id, calls[1].id, later.id}) == 3


def test_429_with_retry_after_is_a_rate_limit_error(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(error(429, headers={"Retry-After": "1"}), "after the wait")

    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.body["code"] == "rate_limit_exceeded"  # the SDK unwraps {"error": {...}}
    assert chat(client).choices[0].message.content == "after the wait"
    assert model.calls == 2


def test_error_with_custom_body(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(error(503, {"error": {"message": "overloaded", "type": "server_error"}}))

    with pytest.raises(openai.InternalServerError, match="overloaded"):
        chat(client)


def test_delay_answers_after_the_wait(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(delay(0.3, "late"))

    started = time.monotonic()
    content = chat(client).choices[0].message.content

    assert content == "late"
    assert time.monotonic() - started >= 0.3  # a lower bound the server enforces, not a speed claim


def test_delay_longer_than_the_client_timeout(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(delay(5, "never seen"))

    with pytest.raises(openai.APITimeoutError):
        chat(client, timeout=0.2)
    assert model.calls == 1  # counted on arrival; stop() cuts the wait short


def test_delayed_callable_is_called_after_the_wait(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(delay(0.05, lambda body: f"{len(body['messages'])} messages"))

    assert chat(client).choices[0].message.content == "1 messages"


def test_responder_echoes_concurrent_requests(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add("scripted first")
    model.set_responder(lambda body: text("echo " + body["messages"][-1]["content"]))

    def ask(token: str) -> str | None:
        return chat(client, [{"role": "user", "content": token}]).choices[0].message.content

    first = ask("t-0")
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, [f"t-{i}" for i in range(1, 17)]))

    assert first == "scripted first"
    assert answers == [f"echo t-{i}" for i in range(1, 17)]
    assert model.calls == 17


def test_callable_in_script_and_default(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.add(lambda body: tool_call("echo", {"n": len(body["messages"])}))
    model.default = text("default answer")

    (call,) = chat(client).choices[0].message.tool_calls

    assert json.loads(call.function.arguments) == {"n": 1}
    assert chat(client).choices[0].message.content == "default answer"
    assert chat(client).choices[0].message.content == "default answer"


def test_calls_requests_and_times_are_recorded(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add("a", error(500), "c")

    chat(client, [{"role": "user", "content": "one"}])
    with pytest.raises(openai.InternalServerError):
        chat(client, [{"role": "user", "content": "two"}])
    chat(client, [{"role": "user", "content": "three"}], temperature=0)

    assert model.calls == 3
    assert [r["messages"][0]["content"] for r in model.requests] == ["one", "two", "three"]
    assert model.requests[2]["temperature"] == 0 and model.requests[2]["model"] == "scripted-model"
    assert len(model.request_times) == 3 and model.request_times == sorted(model.request_times)
    model.wait_for_calls(3, timeout=0.1)

    model.reset()

    assert (model.calls, model.requests, model.request_times) == (0, [], [])


def test_exhausted_script_answers_500(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add("only one")
    chat(client)

    with pytest.raises(openai.InternalServerError, match=r"ScriptedModel: script exhausted \(2 calls\)"):
        chat(client)
    assert model.calls == 2


def test_wait_for_calls_times_out_with_a_clear_message(model: ScriptedModel) -> None:
    with pytest.raises(TimeoutError, match="expected at least 1 calls within 0.05 s, got 0"):
        model.wait_for_calls(1, timeout=0.05)


def _sdk_stream(client: openai.OpenAI, **kwargs: object) -> list[openai.types.chat.ChatCompletionChunk]:
    """The chunks of a streamed call, as the official SDK reads them."""
    return list(chat(client, stream=True, stream_options={"include_usage": True}, **kwargs))  # type: ignore[arg-type]


def test_streamed_text_is_chunked_as_openai_streams_it(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(text("Fly on Monday, or on Tuesday."))

    chunks = _sdk_stream(client)

    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    parts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(parts) > 1 and "".join(parts) == "Fly on Monday, or on Tuesday."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    # usage only in a last chunk without choices, because the request asked for it
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert model.calls == 1 and model.requests[0]["stream"] is True


def test_streamed_tool_calls_split_their_arguments(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(tool_calls(("search_flights", {"destination": "Paris"}), ("search_flights", {"destination": "Rome"})))

    chunks = _sdk_stream(client)

    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for fragment in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += fragment.id or ""
            call["name"] += (fragment.function.name or "") if fragment.function else ""
            call["arguments"] += (fragment.function.arguments or "") if fragment.function else ""
    assert [json.loads(c["arguments"]) for c in calls.values()] == [{"destination": "Paris"}, {"destination": "Rome"}]
    assert all(c["id"].startswith("call_") and c["name"] == "search_flights" for c in calls.values())
    fragments = sum(len(c.choices[0].delta.tool_calls or []) for c in chunks if c.choices)
    assert fragments > 4  # the arguments came in pieces


def test_stream_style_quirks_and_ignore_stream(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(
        streamed(tool_call("search_flights", {"destination": "Paris"}), tool_calls_in_one_chunk=True,
                 omit_index=True, omit_id=True, finish_reason="stop", usage="finish"),
        streamed("plain", ignore_stream=True),
    )  # fmt: skip

    events = _raw_sse(model, {"messages": USER, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    (fragment,) = [f for c in chunks for f in c["choices"][0]["delta"].get("tool_calls") or []]
    assert "index" not in fragment and "id" not in fragment
    assert fragment["function"] == {"name": "search_flights", "arguments": '{"destination": "Paris"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] > 0
    # a server that ignores stream answers the plain completion
    status, body = post_json(model.base_url + "/chat/completions", {"messages": USER, "stream": True})
    assert status == 200 and body["choices"][0]["message"]["content"] == "plain"


def test_errors_to_a_streamed_request_stay_json(model: ScriptedModel, client: openai.OpenAI) -> None:
    model.add(error(429, headers={"Retry-After": "1"}), "kept")

    with pytest.raises(openai.RateLimitError):
        _sdk_stream(client)

    assert "".join(c.choices[0].delta.content or "" for c in _sdk_stream(client) if c.choices) == "kept"
    assert model.calls == 2


def test_a_held_stream_waits_half_written(model: ScriptedModel, client: openai.OpenAI) -> None:
    gate = threading.Event()
    model.stream = StreamStyle(chunk_chars=2, hold=gate, hold_after=3)
    model.add(text("abcdefgh"))

    with chat(client, stream=True) as stream:  # type: ignore[call-overload]
        pieces = iter(stream)
        got = [next(pieces).choices[0].delta.content for _ in range(3)]
        assert got == ["", "ab", "cd"]  # the role chunk, then two pieces; the rest waits
        gate.set()
        rest = [c.choices[0].delta.content or "" for c in pieces if c.choices]
    assert "".join(got[1:] + rest) == "abcdefgh"


def _raw_sse(model: ScriptedModel, body: dict) -> list[str]:
    request = urllib.request.Request(
        model.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text_ = response.read().decode()
    return [line[len("data: ") :] for line in text_.split("\n") if line.startswith("data: ")]


def test_raw_body_is_sent_unchanged(model: ScriptedModel) -> None:
    quirky = {
        "id": "chatcmpl-llama",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "search_flights:", "arguments": "{}"},
                    "tool_calls": [{"type": "function", "function": {"name": "search_flights", "arguments": {}}}],
                },
            }
        ],
    }
    model.add(quirky, raw({"error": "plain"}, status=418, headers={"X-Quirk": "yes"}))

    assert post_json(model.base_url + "/chat/completions", {"messages": USER}) == (200, quirky)
    assert post_json(model.base_url + "/chat/completions", {"messages": USER}) == (418, {"error": "plain"})


def test_models_endpoint_and_unknown_routes(model: ScriptedModel, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["scripted-model"]
    status, body = post_json(model.base_url + "/embeddings", {"input": "x"})
    assert status == 404 and "no route" in body["error"]["message"]
    assert model.calls == 0


def test_raising_callable_answers_500_and_is_kept(model: ScriptedModel, client: openai.OpenAI) -> None:
    def broken(body: dict) -> str:
        raise KeyError("missing")

    model.set_responder(broken)

    with pytest.raises(openai.InternalServerError, match="KeyError"):
        chat(client)
    assert isinstance(model.errors[0], KeyError)


def test_invalid_script_items_are_refused_when_added() -> None:
    with pytest.raises(TypeError, match="int"):
        ScriptedModel([42])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        tool_calls()


def test_stop_and_start_again_on_the_same_port() -> None:
    model = ScriptedModel(["one", "two"])
    with pytest.raises(RuntimeError, match="not started"):
        _ = model.base_url
    model.start()
    try:
        base_url = model.base_url
        with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=5.0) as sdk:
            assert chat(sdk).choices[0].message.content == "one"
            model.stop()
            with pytest.raises(openai.APIConnectionError):
                chat(sdk)
            model.start()
            assert model.base_url == base_url
            assert chat(sdk).choices[0].message.content == "two"
    finally:
        model.stop()
