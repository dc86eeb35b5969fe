"""Pure-logic tests: reading servers' replies defensively, tools, the public API."""

from __future__ import annotations

import inspect
import json

import pytest
from pydantic import BaseModel

import agent_platform
from agent_platform import errors
from agent_platform.errors import LLMError, ToolArgumentsError
from agent_platform.llm.openai_client import OpenAIChatClient, retry_after, tool_results_as_user
from agent_platform.llm.reply import AssistantReply, parse_chat_completion
from agent_platform.tool import parse_arguments, tool


def completion(message: dict, **extra) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message, **extra}], **{}}


def test_llama_cpp_legacy_function_call_beside_tool_calls_is_not_echoed() -> None:
    body = completion(
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "search_flights:", "arguments": '{"destination": "Paris" }'},
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search_flights", "arguments": '{"destination": "Paris" }'},
                }
            ],
        },
        finish_reason="tool_calls",
    )
    reply = parse_chat_completion(body)
    assert [(c.id, c.name) for c in reply.tool_calls] == [("call_1", "search_flights")]
    message = reply.to_message()
    assert message["content"] == "" and "function_call" not in message
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"destination": "Paris"}


def test_only_legacy_function_call_becomes_a_tool_call_with_clean_name() -> None:
    reply = parse_chat_completion(
        completion({"role": "assistant", "function_call": {"name": "lookup: ", "arguments": "{}"}})
    )
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("lookup", "{}")]


def test_ollama_object_arguments_and_missing_ids_are_kept() -> None:
    body = completion(
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "a", "arguments": {"x": 1}}}, {"function": {"name": "b"}}],
        }
    )
    reply = parse_chat_completion(body)
    assert [c.id for c in reply.tool_calls] == ["call_0", "call_1"]
    assert json.loads(reply.tool_calls[0].arguments) == {"x": 1}
    assert reply.tool_calls[1].arguments == "{}"
    assert reply.usage == {"prompt_tokens": 0, "completion_tokens": 0}


def test_content_parts_and_round_trip() -> None:
    reply = parse_chat_completion(
        completion(
            {"role": "assistant", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}
        )
    )
    assert reply.content == "Hi there"
    assert AssistantReply.from_dict(reply.to_dict()) == reply


def test_a_body_without_choices_is_an_llm_error() -> None:
    with pytest.raises(LLMError, match="choices"):
        parse_chat_completion({"error": "overloaded"})


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({}) is None


def test_tool_results_as_user_names_the_tool() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "[1]"},
    ]
    out = tool_results_as_user(messages)
    assert out[2] == {"role": "user", "content": "Result of f: [1]"}
    assert out[:2] == messages[:2]


def test_conversation_component_values_are_defaults_below_the_environment(monkeypatch) -> None:
    client = OpenAIChatClient()
    client.component_defaults = {"key": "k", "model": "m1", "endpoint": "http://127.0.0.1:9/v1", "temperature": "0.5"}
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "AGENT_PLATFORM_LLM_TEMPERATURE"):
        monkeypatch.delenv(var, raising=False)
    cfg = client.resolved()
    assert (cfg["model"], cfg["base_url"], cfg["temperature"]) == ("m1", "http://127.0.0.1:9/v1", 0.5)
    monkeypatch.setenv("OPENAI_MODEL", "m2")
    assert client.resolved()["model"] == "m2"
    assert "k" not in repr(client)


class Dest(BaseModel):
    destination: str


def test_tool_validation_names_the_field_and_never_calls_the_function() -> None:
    calls = []

    @tool(args_model=Dest)
    def search(destination: str) -> str:
        calls.append(destination)
        return destination

    with pytest.raises(ToolArgumentsError, match="destination"):
        search.validate({"destination": ["Paris", "Rome"]})
    assert search.validate('{"destination": "Paris"}') == {"destination": "Paris"}
    assert calls == []
    assert search.schema()["function"]["parameters"]["required"] == ["destination"]


def test_a_tool_schema_is_built_once_and_each_caller_gets_its_own_copy() -> None:
    """Issue 15: the ``tools`` entry is not rebuilt by pydantic at every model call; a
    caller that changes its copy changes nothing for the next one; a new description shows."""

    @tool(args_model=Dest)
    def search(destination: str) -> str:
        """Search flights."""
        return destination

    first = search.schema()
    first["function"]["parameters"]["properties"].clear()
    assert search.schema()["function"]["parameters"]["properties"] == {
        "destination": {"title": "Destination", "type": "string"}
    }
    search.description = "Search trains."
    assert search.schema()["function"]["description"] == "Search trains."


def test_arguments_parsing_is_defensive() -> None:
    assert parse_arguments(None) == {} and parse_arguments("") == {}
    assert parse_arguments('"{\\"a\\": 1}"') == {"a": 1}  # JSON encoded twice
    with pytest.raises(ToolArgumentsError, match="not valid JSON"):
        parse_arguments("{destination: Paris")
    with pytest.raises(ToolArgumentsError, match="object"):
        parse_arguments("[1, 2]")


def test_every_public_error_is_exported_and_rooted() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    for cls in classes:
        assert issubclass(cls, errors.AgentPlatformError), cls
        assert cls.__name__ in agent_platform.__all__, cls
        assert getattr(agent_platform, cls.__name__) is cls
        assert (cls.__doc__ or "").startswith("Raised"), cls
