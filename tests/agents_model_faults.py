"""Agents for the model and tool field faults (cases C12, C13, C15, C19):
``AGENT_APP=tests.agents_model_faults:faults_buddy,tests.agents_model_faults:slow_model_buddy``.

FaultsBuddy's tools leave a trace in the Redis of ``REDIS_URL`` (:data:`RUNS_KEY`: one
entry per run of a tool function, with the keyword arguments it got), so a test can tell
how often, and with what, each function really ran:

- ``get_server_time()``: no arguments (C12);
- ``score_report()``: returns a NaN and infinities (C15 a);
- ``issue_receipt()`` (``retries=1``): returns bytes that are not UTF-8 (C15 b);
- ``lookup_city(city)``: one required argument.

SlowModelBuddy has no tools and a model client with a 3 s deadline (C13);
SlowUnstreamedBuddy is the same with its calls never streamed (``stream="off"``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from agent_platform import AssistantAgent, tool
from agent_platform.llm import OpenAIChatClient
from agent_platform.memory import ConversationRedisMemory

#: Redis list of the tool runs (JSON objects ``{"tool", "arguments"}``), oldest first.
RUNS_KEY = "test:model-faults:runs"
#: Seconds of SlowModelBuddy's model call deadline.
SLOW_MODEL_DEADLINE = 3


def record_run(name: str, **arguments: Any) -> None:
    """Append one run of tool ``name`` with the keyword ``arguments`` it got."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=5)
    try:
        client.rpush(RUNS_KEY, json.dumps({"tool": name, "arguments": arguments}))
    finally:
        client.close()


def tool_runs(client: redis.Redis, name: str | None = None) -> list[dict[str, Any]]:
    """The recorded runs (of tool ``name``, or all), oldest first."""
    runs = [json.loads(raw) for raw in client.lrange(RUNS_KEY, 0, -1)]
    return [r for r in runs if name is None or r["tool"] == name]


@tool
def get_server_time() -> dict[str, Any]:
    """Tell the server's current time."""
    record_run("get_server_time")
    return {"time": "12:00:00Z"}


@tool
def score_report() -> dict[str, Any]:
    """Score the last report."""
    record_run("score_report")
    return {"score": float("nan"), "ceiling": float("inf"), "floor": float("-inf"), "weight": 0.5}


@tool(retries=1)
def issue_receipt() -> dict[str, Any]:
    """Issue a receipt (a side effect: must run once)."""
    record_run("issue_receipt")
    return {"receipt": b"\xff\x00", "text": b"paid"}


@tool
def lookup_city(city: str) -> dict[str, Any]:
    """Look up a city."""
    record_run("lookup_city", city=city)
    return {"city": city, "country": "somewhere"}


faults_buddy = AssistantAgent(
    name="FaultsBuddy",
    role="Assistant",
    goal="Answer with the tools you have.",
    instructions=["Use the tools, then answer."],
    tools=[get_server_time, score_report, issue_receipt, lookup_city],
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
)

slow_model_buddy = AssistantAgent(
    name="SlowModelBuddy",
    role="Assistant",
    goal="Answer briefly.",
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    llm=OpenAIChatClient(timeout=SLOW_MODEL_DEADLINE),
)

slow_unstreamed_buddy = AssistantAgent(
    name="SlowUnstreamedBuddy",
    role="Assistant",
    goal="Answer briefly.",
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    llm=OpenAIChatClient(timeout=SLOW_MODEL_DEADLINE, stream="off"),
)
