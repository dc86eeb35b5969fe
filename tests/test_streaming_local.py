"""The embedded model streams for real (issue 14): llama-cpp-python's server with
``chatml-function-calling``, through the platform's client, as dev mode configures it.

Measured facts these tests hold to: the server streams a text answer token by token
(no ``usage`` while streaming: it has no ``stream_options``), and answers a streamed call
with an automatic tool choice 200 with no data ("Automatic streaming tool choice is not
supported" is raised after the headers), which the client takes as a refusal.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from agent_platform.devmode import LOCAL_MODEL_PROFILE
from agent_platform.llm.openai_client import OpenAIChatClient
from agent_platform.local_model import LocalModelServer

from .test_embedded import TRAVEL_MESSAGES as MESSAGES
from .test_embedded import TRAVEL_TOOLS as TOOLS
from .test_stream_assembly import _collect

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def local_model() -> Iterator[LocalModelServer]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install -e .[local]")
    with LocalModelServer() as server:
        yield server


@pytest.fixture
def clients() -> Iterator[list[OpenAIChatClient]]:
    made: list[OpenAIChatClient] = []
    yield made
    for client in made:
        client.close()  # the server keeps connections alive: close them before the loop goes


def _client(server: LocalModelServer, stream: str, made: list[OpenAIChatClient]) -> OpenAIChatClient:
    client = OpenAIChatClient(
        model=server.model_name, base_url=server.base_url, api_key="local", timeout=120.0, temperature=0,
        max_tokens=40, stream=stream,
    )  # fmt: skip
    made.append(client)
    return client


def test_the_embedded_model_streams_its_answer_token_by_token(
    local_model: LocalModelServer, clients: list[OpenAIChatClient]
) -> None:
    assert LOCAL_MODEL_PROFILE["AGENT_PLATFORM_LLM_STREAM"] == "text"
    llm = _client(local_model, "text", clients)
    deltas: list[dict[str, Any]] = []

    reply = llm.chat(MESSAGES, TOOLS, "none", on_delta=_collect(deltas))
    unstreamed = llm.chat(MESSAGES, TOOLS, "none")

    texts = [d["text"] for d in deltas if "text" in d]
    assert len(texts) > 5  # token by token, not one piece
    assert "".join(texts) == reply.content == unstreamed.content  # temperature 0: the same answer
    assert reply.finish_reason == unstreamed.finish_reason
    assert unstreamed.usage["completion_tokens"] > 0  # the server reports usage only unstreamed


def test_a_refused_streamed_tool_choice_is_asked_again_unstreamed(
    local_model: LocalModelServer, caplog: pytest.LogCaptureFixture, clients: list[OpenAIChatClient]
) -> None:
    llm = _client(local_model, "on", clients)
    with caplog.at_level(logging.WARNING, logger="agent_platform.llm"):
        first = llm.chat(MESSAGES, TOOLS, on_delta=lambda d: None)
        second = llm.chat(MESSAGES, TOOLS, on_delta=lambda d: None)

    for reply in (first, second):
        assert [(c.name, c.arguments.replace(" ", "")) for c in reply.tool_calls] == [
            ("search_flights", '{"destination":"Paris"}')
        ]
    refusals = [r for r in caplog.records if "refused a streamed call with tools" in r.getMessage()]
    assert len(refusals) == 1  # remembered: the second call was not streamed
