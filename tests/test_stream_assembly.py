"""Streamed model replies (issue 14): the chunk assembler against the ways real servers
stream, the client over real HTTP against every ScriptedModel quirk (the same reply as
without streaming), the whole-call deadline, and the SSE parser.

No worker here: these are the pieces under an ``llm`` step (tests/test_streaming.py runs
whole turns).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent_platform.errors import LLMError, RetryableLLMError
from agent_platform.llm.openai_client import OpenAIChatClient
from agent_platform.llm.reply import AssistantReply, parse_chat_completion
from agent_platform.llm.streaming import ChunkAssembler
from agent_platform.sse import SseEvent, SseParser, parse_sse
from agent_platform.testing import (
    ScriptedModel,
    StreamStyle,
    error,
    raw,
    streamed,
    text,
    tool_call,
    tool_calls,
)
from agent_platform.testing.replies import error_body

USER = [{"role": "user", "content": "Find me a flight to Paris."}]
TOOLS = [{"type": "function", "function": {"name": "search_flights", "parameters": {"type": "object"}}}]


def completion(message: dict[str, Any], finish_reason: str | None, usage: dict | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "c", "object": "chat.completion", "model": "m"}
    body["choices"] = [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}]
    return {**body, **({"usage": usage} if usage else {})}


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices, **extra}


def assemble(chunks: list[dict[str, Any]]) -> tuple[AssistantReply, list[dict[str, Any]]]:
    assembler = ChunkAssembler()
    deltas = [d for c in chunks for d in assembler.add(c)]
    return assembler.reply(), deltas


def rebuilt(deltas: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, str]]]:
    """What a live client rebuilds from the deltas: the text, and each call's name and arguments."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        if "tool_call" in delta:
            fragment = delta["tool_call"]
            call = calls.setdefault(fragment["index"], {"name": "", "arguments": ""})
            call["name"] = fragment.get("name") or call["name"]
            call["arguments"] += fragment.get("arguments") or ""
    return "".join(d.get("text", "") for d in deltas), calls


def assert_same_calls(reply: AssistantReply, deltas: list[dict[str, Any]]) -> None:
    _, calls = rebuilt(deltas)
    assert [(c.name, c.received_arguments) for c in reply.tool_calls] == [
        (c["name"], c["arguments"]) for c in calls.values()
    ]


def _collect(deltas: list[dict[str, Any]]) -> Any:
    """A delta listener that keeps the deltas (not the idle Nones)."""

    def listen(delta: dict[str, Any] | None) -> None:
        if delta is not None:
            deltas.append(delta)

    return listen


PARIS = '{"destination": "Paris"}'
ROME = '{"destination": "Rome"}'
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


# -- the assembler against servers' streams ---------------------------------------------------------


def test_openai_text_with_usage_in_a_last_chunk_without_choices() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": part}) for part in ["Fly ", "on ", "Monday."]),
        chunk({}, "stop"),
        chunk(None, usage=USAGE),
    ]
    reply, deltas = assemble(chunks)
    assert reply == parse_chat_completion(completion({"content": "Fly on Monday."}, "stop", USAGE))
    assert reply.usage == {"prompt_tokens": 11, "completion_tokens": 7}
    assert rebuilt(deltas)[0] == "Fly on Monday." and deltas[-1] == {"finish_reason": "stop"}


def test_openai_parallel_tool_calls_with_arguments_split_across_chunks() -> None:
    chunks = [chunk({"role": "assistant", "content": None})]
    for index, (call_id, arguments) in enumerate([("call_a", PARIS), ("call_b", ROME)]):
        head = {"index": index, "id": call_id, "type": "function"}
        chunks.append(chunk({"tool_calls": [{**head, "function": {"name": "search_flights", "arguments": ""}}]}))
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 3]}}]})
            for i in range(0, len(arguments), 3)
        ]
    chunks.append(chunk({}, "tool_calls"))
    reply, deltas = assemble(chunks)
    calls = [{"id": i, "type": "function", "function": {"name": "search_flights", "arguments": a}} for i, a in
             [("call_a", PARIS), ("call_b", ROME)]]  # fmt: skip
    assert reply == parse_chat_completion(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert_same_calls(reply, deltas)


def test_ollama_whole_call_in_one_chunk_with_object_arguments_and_stop() -> None:
    arguments = {"destination": "Paris"}
    chunks = [
        chunk(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_x", "function": {"name": "search_flights", "arguments": arguments}}],
            }
        ),  # fmt: skip
        chunk({"content": ""}, "stop", usage=USAGE),
    ]
    reply, deltas = assemble(chunks)
    unstreamed = parse_chat_completion(
        completion(
            {"tool_calls": [{"id": "call_x", "function": {"name": "search_flights", "arguments": arguments}}]},
            "stop",
            USAGE,
        )  # fmt: skip
    )
    assert reply == unstreamed and reply.finish_reason == "tool_calls"  # "stop" beside tool calls, both ways
    assert json.loads(reply.tool_calls[0].arguments) == arguments
    assert_same_calls(reply, deltas)
    assert {"finish_reason": "tool_calls"} in deltas


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "no-ids"])
def test_fragments_without_index(with_ids: bool) -> None:
    """vLLM and some gateways leave ``index`` out: a new id, or a new name once the last
    call's arguments are whole JSON, starts the next call."""
    chunks = []
    for call_id, arguments in [("call_a", PARIS), ("call_b", ROME)]:
        head = {"id": call_id} if with_ids else {}
        chunks.append(chunk({"tool_calls": [{**head, "function": {"name": "search_flights", "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"function": {"arguments": arguments[i : i + 4]}}]}) for i in range(0, 24, 4)]
    chunks.append(chunk({}, "tool_calls"))
    reply, deltas = assemble(chunks)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("search_flights", PARIS), ("search_flights", ROME)]
    assert [c.id for c in reply.tool_calls] == (["call_a", "call_b"] if with_ids else ["call_0", "call_1"])
    assert_same_calls(reply, deltas)


def test_index_zero_for_every_call_with_distinct_ids() -> None:
    chunks = [
        chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "search_flights", "arguments": PARIS}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "search_flights", "arguments": ROME}}]}),
        chunk({}, "tool_calls"),
    ]
    reply, deltas = assemble(chunks)
    assert [(c.id, c.arguments) for c in reply.tool_calls] == [("a", PARIS), ("b", ROME)]
    assert_same_calls(reply, deltas)


def test_repeated_name_and_id_in_every_fragment_is_one_call() -> None:
    head = {"index": 0, "id": "a"}
    chunks = [chunk({"tool_calls": [{**head, "function": {"name": "search_flights", "arguments": PARIS[i : i + 5]}}]})
              for i in range(0, len(PARIS), 5)]  # fmt: skip
    reply, deltas = assemble([*chunks, chunk({}, "tool_calls")])
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [("a", "search_flights", PARIS)]
    assert_same_calls(reply, deltas)


def test_null_content_chunks_content_parts_and_a_whole_message_chunk() -> None:
    reply, deltas = assemble([
        chunk({"role": "assistant", "content": None}),
        chunk({"content": [{"type": "text", "text": "Fly "}]}),
        chunk({"content": None}),
        chunk({"content": "today."}),
        chunk({"content": None}, "stop"),
    ])  # fmt: skip
    assert reply.content == "Fly today." and rebuilt(deltas)[0] == "Fly today."
    whole = {"index": 0, "message": {"role": "assistant", "content": "All at once."}, "finish_reason": "stop"}
    reply, deltas = assemble([{"id": "c", "object": "chat.completion", "choices": [whole]}])
    assert reply.content == "All at once." and rebuilt(deltas)[0] == "All at once."


def test_legacy_function_call_streamed() -> None:
    chunks = [
        chunk({"function_call": {"name": "search_flights:", "arguments": ""}}),
        chunk({"function_call": {"arguments": PARIS[:10]}}),
        chunk({"function_call": {"arguments": PARIS[10:]}}, "function_call"),
    ]
    reply, _ = assemble(chunks)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("search_flights", PARIS)]


def test_an_error_inside_the_stream_is_worth_another_attempt() -> None:
    assembler = ChunkAssembler()
    assembler.add(chunk({"content": "Fly"}))
    with pytest.raises(RetryableLLMError, match="overloaded"):
        assembler.add({"error": {"message": "the server is overloaded", "type": "server_error"}})


# -- the client over HTTP: every quirk gives the unstreamed reply -----------------------------------

QUIRKS = {
    "openai": StreamStyle(),
    "one-chunk": StreamStyle(tool_calls_in_one_chunk=True),
    "no-index": StreamStyle(omit_index=True),
    "no-id": StreamStyle(omit_id=True),
    "no-index-no-id": StreamStyle(omit_index=True, omit_id=True, chunk_chars=1),
    "stop-after-tool-calls": StreamStyle(finish_reason="stop"),
    "usage-in-finish-chunk": StreamStyle(usage="finish"),
    "no-usage": StreamStyle(usage="none"),
    "null-content-chunks": StreamStyle(null_content=True, chunk_chars=2),
    "no-done": StreamStyle(done=False),
    "ignores-stream": StreamStyle(ignore_stream=True),
}
REPLIES = {
    "text": lambda: text("There is a flight to Paris on Monday at 9:40.", usage=USAGE),
    "tool-call": lambda: tool_call("search_flights", {"destination": "Paris"}),
    "parallel": lambda: tool_calls(("search_flights", {"destination": "Paris"}), ("search_flights", {"to": "Rome"})),
    "object-arguments": lambda: raw(
        completion(
            {
                "tool_calls": [
                    {
                        "id": "call_o",
                        "type": "function",
                        "function": {"name": "search_flights", "arguments": {"destination": "Paris"}},
                    }
                ]
            },
            "tool_calls",
            USAGE,
        )
    ),  # fmt: skip
}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    with ScriptedModel() as scripted:
        yield scripted


@pytest.fixture
def model(server: ScriptedModel) -> Iterator[ScriptedModel]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def llm(model: ScriptedModel) -> OpenAIChatClient:
    return OpenAIChatClient(model="scripted-model", base_url=model.base_url, api_key="x", timeout=10.0, stream="on")


def _without_ids(reply: AssistantReply) -> tuple[Any, ...]:
    return (reply.content, [(c.name, c.arguments) for c in reply.tool_calls], reply.finish_reason, reply.usage)


@pytest.mark.parametrize("quirk", list(QUIRKS))
@pytest.mark.parametrize("kind", list(REPLIES))
def test_streamed_reply_is_the_unstreamed_reply_for_every_quirk(
    model: ScriptedModel, llm: OpenAIChatClient, quirk: str, kind: str
) -> None:
    model.add(REPLIES[kind](), streamed(REPLIES[kind](), QUIRKS[quirk]))
    deltas: list[dict[str, Any]] = []

    unstreamed = llm.chat(USER, TOOLS)
    streamed_reply = llm.chat(USER, TOOLS, on_delta=_collect(deltas))

    assert "stream" not in model.requests[0] and model.requests[1]["stream"] is True
    if quirk == "no-usage":  # nothing to count from: the usage a server does not send stays 0
        assert _without_ids(streamed_reply)[:3] == _without_ids(unstreamed)[:3]
        assert streamed_reply.usage == {"prompt_tokens": 0, "completion_tokens": 0}
    else:
        assert _without_ids(streamed_reply) == _without_ids(unstreamed)
    made_up = [f"call_{n}" for n in range(len(streamed_reply.tool_calls))]
    ids_sent = not QUIRKS[quirk].omit_id or QUIRKS[quirk].ignore_stream
    if made_up:  # ids are the server's unless it sent none
        assert ([c.id for c in streamed_reply.tool_calls] == made_up) == (not ids_sent)
    # what a live client rebuilds from the deltas is the reply: text, and each call's arguments
    assert rebuilt(deltas)[0] == streamed_reply.content
    assert_same_calls(streamed_reply, deltas)


def test_whole_call_deadline_ends_a_slow_stream(model: ScriptedModel) -> None:
    """C13's rule for a stream: the timeout bounds the whole call, not each read."""
    model.add(streamed(text("x" * 200), chunk_chars=1, interval=0.2))
    llm = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=1.0)
    deltas: list[dict[str, Any]] = []
    t0 = time.monotonic()

    with pytest.raises(RetryableLLMError, match="deadline of 1 s"):
        llm.chat(USER, on_delta=_collect(deltas))

    elapsed = time.monotonic() - t0
    assert elapsed < 4.0, elapsed  # 1 s deadline, slack for a loaded machine (the stream alone takes 40 s)
    assert 0 < len(rebuilt(deltas)[0]) < 200
    seen = len(deltas)
    time.sleep(0.5)  # nothing reaches the listener after the deadline (the call was cancelled)
    assert len(deltas) == seen


def test_a_listener_hears_none_while_the_model_is_silent(model: ScriptedModel, llm: OpenAIChatClient) -> None:
    """A batching listener (the token publisher) is called with None while nothing
    arrives, so it can write what it holds on time."""
    model.add(streamed(text("slow words"), chunk_chars=5, interval=0.3))
    heard: list[dict[str, Any] | None] = []

    reply = llm.chat(USER, on_delta=heard.append)

    assert reply.content == "slow words"
    assert None in heard[heard.index({"text": "slow "}) :]  # between two pieces 0.3 s apart
    assert rebuilt([d for d in heard if d is not None])[0] == "slow words"


def test_a_listener_that_fails_while_waiting_ends_the_call(model: ScriptedModel, llm: OpenAIChatClient) -> None:
    model.add(streamed(text("x" * 50), chunk_chars=1, interval=0.2))

    heard: list[dict[str, Any]] = []

    def listen(delta: dict[str, Any] | None) -> None:
        if delta is not None:
            heard.append(delta)
        elif heard:  # waiting for the second piece
            raise ConnectionError("the listener's store is gone")

    with pytest.raises(ConnectionError, match="store is gone"):
        llm.chat(USER, on_delta=listen)
    assert 0 < len(heard) < 10
    model.add("next")
    assert llm.chat(USER).content == "next"  # the loop and the client are still good


def test_a_stream_that_breaks_off_is_worth_another_attempt(model: ScriptedModel, llm: OpenAIChatClient) -> None:
    model.add(streamed(text("a complete answer, cut short"), break_after=3))
    with pytest.raises(RetryableLLMError, match="ended early"):
        llm.chat(USER, on_delta=lambda d: None)


def test_a_server_that_refuses_to_stream_is_asked_again_without_stream(
    model: ScriptedModel, llm: OpenAIChatClient
) -> None:
    refused = error(500, error_body(500, "Automatic streaming tool choice is not supported"))
    model.add(refused, tool_call("search_flights", {"destination": "Paris"}))
    reply = llm.chat(USER, TOOLS, on_delta=lambda d: None)
    assert [c.arguments for c in reply.tool_calls] == [PARIS]
    assert [r.get("stream") for r in model.requests] == [True, None]
    # a 200 that streams nothing at all is a refusal too (llama-cpp-python's automatic tool choice)
    model.reset()
    model.add(streamed(text("never streamed"), break_after=0), "asked unstreamed")
    assert llm.chat(USER, on_delta=lambda d: None).content == "asked unstreamed"
    assert [r.get("stream") for r in model.requests] == [True, None]
    # any other error is the call's error, asked once
    model.reset()
    model.add(error(400, error_body(400, "context too long")), "never sent")
    with pytest.raises(LLMError, match="context too long"):
        llm.chat(USER, on_delta=lambda d: None)
    assert model.calls == 1


def test_stream_mode_text_streams_only_calls_that_cannot_call_tools(model: ScriptedModel) -> None:
    llm = OpenAIChatClient(base_url=model.base_url, api_key="x", timeout=5.0, stream="text")
    model.add(tool_call("search_flights", {"destination": "Paris"}), "answer", "answer")
    llm.chat(USER, TOOLS, on_delta=lambda d: None)
    llm.chat(USER, TOOLS, "none", on_delta=lambda d: None)
    llm.chat(USER, on_delta=lambda d: None)
    assert [r.get("stream") for r in model.requests] == [None, True, True]
    with pytest.raises(Exception, match="stream must be"):
        OpenAIChatClient(base_url=model.base_url, stream="sometimes").resolved()


# -- the SSE parser -----------------------------------------------------------------------------------


def test_sse_parser_takes_bytes_split_anywhere() -> None:
    body = 'id: 4:1-0\r\nevent: token\r\ndata: {"text": "Ça"}\r\n\r\n: keep-alive\n\ndata: a\ndata: b\n\ndata: [DONE]'
    raw_bytes = body.encode()
    whole = list(parse_sse([raw_bytes]))
    for size in (1, 2, 3, 7):
        assert list(parse_sse(raw_bytes[i : i + size] for i in range(0, len(raw_bytes), size))) == whole
    assert whole == [
        SseEvent("token", '{"text": "Ça"}', "4:1-0"),
        SseEvent("message", "a\nb", None),
        SseEvent("message", "[DONE]", None),  # no blank line at the end: still read
    ]
    parser = SseParser()
    parser.feed(b": one\n\n: two\n\n")
    assert parser.comments == 2
