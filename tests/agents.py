"""Agents for the test suite, loadable as ``AGENT_APP=tests.agents:<name>``.

``travel_buddy`` is the TravelBuddy agent of DESIGN section 1 with one difference a test
can observe: ``search_flights`` records every call it really receives (its validated
arguments and idempotency key) in the Redis list :data:`TOOL_CALLS_KEY` of
``TEST_TRACE_REDIS_URL`` (default ``REDIS_URL``),
so a test can tell how often, and with what, the function itself ran.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from pydantic import BaseModel, Field

from agent_platform import AssistantAgent, ToolContext, tool
from agent_platform.memory import ConversationRedisMemory

#: Redis list of the tool calls that reached a tool function (JSON objects).
TOOL_CALLS_KEY = "test:tool_calls"


class FlightOption(BaseModel):
    """One flight offer."""

    airline: str = Field(description="Airline name")
    price: float = Field(description="Price in USD")


class DestinationSchema(BaseModel):
    """Arguments of search_flights."""

    destination: str = Field(description="Destination city name")


def record_call(name: str, arguments: dict[str, Any], context: ToolContext) -> None:
    """Append one call of a tool function to :data:`TOOL_CALLS_KEY` (no-op without a trace Redis)."""
    url = os.environ.get("TEST_TRACE_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        return
    client = redis.Redis.from_url(url)
    try:
        entry = {
            "tool": name,
            "arguments": arguments,
            "workflow_id": context.workflow_id,
            "call_id": context.call_id,
            "idempotency_key": context.idempotency_key,
            "attempt": context.attempt,
            "session_id": context.session_id,
        }
        client.rpush(TOOL_CALLS_KEY, json.dumps(entry))
    finally:
        client.close()


def recorded_calls(client: redis.Redis) -> list[dict[str, Any]]:
    """The tool calls recorded so far, oldest first."""
    return [json.loads(raw) for raw in client.lrange(TOOL_CALLS_KEY, 0, -1)]


@tool(args_model=DestinationSchema)
def search_flights(destination: str, context: ToolContext) -> list[FlightOption]:
    """Search for flights to the specified destination."""
    record_call("search_flights", {"destination": destination}, context)
    return [
        FlightOption(airline="SkyHighAir", price=450.00),
        FlightOption(airline="GlobalWings", price=375.50),
    ]


travel_buddy = AssistantAgent(
    name="TravelBuddy",
    role="Travel Planner",
    goal="Help users find flights to their desired destinations.",
    instructions=[
        "Find flights to the destination the user names, with the search_flights tool.",
        "Answer with the airlines and prices you found.",
    ],
    tools=[search_flights],
    message_bus_name="messagepubsub",
    state_store_name="workflowstatestore",
    state_key="workflow_state",
    agents_registry_store_name="registrystatestore",
    agents_registry_key="agents_registry",
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
)
