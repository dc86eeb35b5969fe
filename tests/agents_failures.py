"""An agent for the failure, retry, control and chaos tests: ``AGENT_APP=tests.agents_failures:ops_buddy``.

OpsBuddy's tools leave a trace in the Redis of ``TEST_TRACE_REDIS_URL`` (default
``REDIS_URL``; the scaling tests keep the state on a Redis Cluster or Sentinel and the
trace on a plain Redis) so a test can tell what really ran, in which process, with which
idempotency key (:data:`EVENTS_KEY`):

- ``slow_task(seconds, label)``: sleeps ``seconds`` (the model chooses), recording its
  start and its end;
- ``flaky_lookup(query)`` (``retries=2``): raises on every odd call, counted by the Redis
  counter :data:`FLAKY_COUNTER_KEY` (so a first attempt fails and its retry succeeds);
- ``broken_service(query)`` (``retries=1``): always raises ``TimeoutError``;
- ``hanging_task()`` (``timeout=1``): sleeps 10 s, so its time limit stops it;
- ``wire_money(amount, to)`` (``requires_approval``, no timeout) and
  ``delete_records(table)`` (``requires_approval``, ``approval_timeout=1.5`` s).

``max_iterations`` is 3, so a model that keeps calling tools is cut short.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from pydantic import BaseModel, Field

from agent_platform import AssistantAgent, ToolContext, tool
from agent_platform.memory import ConversationRedisMemory

#: Redis list of what the tools did (JSON objects), oldest first.
EVENTS_KEY = "test:ops:events"
#: Redis counter of flaky_lookup's calls.
FLAKY_COUNTER_KEY = "test:ops:flaky-counter"
APPROVAL_TIMEOUT = 1.5


def _client() -> redis.Redis:
    url = os.environ.get("TEST_TRACE_REDIS_URL") or os.environ["REDIS_URL"]
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)


def record(event: str, context: ToolContext, **extra: Any) -> None:
    """Append one tool event to :data:`EVENTS_KEY`."""
    client = _client()
    try:
        entry = {
            "event": event,
            "workflow_id": context.workflow_id,
            "call_id": context.call_id,
            "idempotency_key": context.idempotency_key,
            "attempt": context.attempt,
            "pid": os.getpid(),
            **extra,
        }
        client.rpush(EVENTS_KEY, json.dumps(entry))
    finally:
        client.close()


def tool_events(client: redis.Redis, event: str | None = None) -> list[dict[str, Any]]:
    """The recorded tool events (all, or those named ``event``), oldest first."""
    entries = [json.loads(raw) for raw in client.lrange(EVENTS_KEY, 0, -1)]
    return [e for e in entries if event is None or e["event"] == event]


class SlowArgs(BaseModel):
    """Arguments of slow_task."""

    seconds: float = Field(ge=0, le=60, description="How long the task takes, in seconds")
    label: str = Field(default="", description="A label echoed in the result")


@tool(args_model=SlowArgs)
def slow_task(seconds: float, label: str, context: ToolContext) -> dict[str, Any]:
    """Run a slow task that takes the given number of seconds."""
    record("slow_task:start", context, label=label)
    time.sleep(seconds)
    record("slow_task:end", context, label=label)
    return {"slept": seconds, "label": label}


@tool(retries=2)
def flaky_lookup(query: str, context: ToolContext) -> dict[str, Any]:
    """Look something up in a flaky service (fails every other call)."""
    client = _client()
    try:
        n = int(client.incr(FLAKY_COUNTER_KEY))
    finally:
        client.close()
    record("flaky_lookup:call", context, n=n)
    if n % 2 == 1:
        raise ConnectionError(f"flaky service failed on call {n}")
    return {"query": query, "answer": f"the answer to {query}"}


@tool(retries=1)
def broken_service(query: str, context: ToolContext) -> dict[str, Any]:
    """Query a service that is down (always fails)."""
    record("broken_service:call", context)
    raise TimeoutError("the broken service timed out")


@tool(timeout=1.0)
def hanging_task(context: ToolContext) -> dict[str, Any]:
    """Run a task that hangs (its 1 s timeout stops it)."""
    record("hanging_task:start", context)
    time.sleep(10)
    record("hanging_task:end", context)
    return {"finished": True}


@tool(requires_approval=True)
def wire_money(amount: float, to: str, context: ToolContext) -> dict[str, Any]:
    """Wire money to someone (a person must approve it)."""
    record("wire_money:call", context, amount=amount, to=to)
    return {"wired": amount, "to": to}


@tool(requires_approval=True, approval_timeout=APPROVAL_TIMEOUT)
def delete_records(table: str, context: ToolContext) -> dict[str, Any]:
    """Delete every record of a table (a person must approve it within 1.5 s)."""
    record("delete_records:call", context, table=table)
    return {"deleted": table}


ops_buddy = AssistantAgent(
    name="OpsBuddy",
    role="Operations assistant",
    goal="Run operational tasks with the tools you have.",
    instructions=["Use the tools to do what the user asks, then report the result."],
    tools=[slow_task, flaky_lookup, broken_service, hanging_task, wire_money, delete_records],
    message_bus_name="messagepubsub",
    state_store_name="workflowstatestore",
    state_key="workflow_state",
    agents_registry_store_name="registrystatestore",
    agents_registry_key="agents_registry",
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    max_iterations=3,
)
