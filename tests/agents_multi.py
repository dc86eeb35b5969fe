"""Agents of the multi-agent tests, loadable as ``AGENT_APP=tests.agents_multi:agents``.

Two plain agents (no tools: one model call per turn, answered by the scripted model's
:func:`respond`), and orchestrators over them:

- ``TripPlanner``: round robin, a long response timeout (both agents answer);
- ``QuickPlanner``: round robin, a 3 s response timeout (case C10: one agent is silent);
- ``Coordinator``: an LLM orchestrator whose model is the scripted model too.
"""

from __future__ import annotations

import json
from typing import Any

from agent_platform import AssistantAgent
from agent_platform.memory import ConversationRedisMemory
from agent_platform.orchestrators import LLMOrchestrator, RoundRobinOrchestrator
from agent_platform.testing import Reply, text, tool_calls

FLIGHT_ANSWER = "FlightFinder: SkyHighAir flies to Paris for $450."
HOTEL_ANSWER = "HotelFinder: Hotel Lumiere in Paris costs $120 a night."
QUICK_TIMEOUT = 3.0


def _agent(name: str, role: str, goal: str) -> AssistantAgent:
    return AssistantAgent(
        name=name,
        role=role,
        goal=goal,
        instructions=["Answer in one sentence."],
        memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    )


flight_finder = _agent("FlightFinder", "Flight finder", "Find flights for the trip.")
hotel_finder = _agent("HotelFinder", "Hotel finder", "Find hotels for the trip.")
trip_planner = RoundRobinOrchestrator("TripPlanner", agents=[flight_finder, hotel_finder], response_timeout=60.0)
quick_planner = RoundRobinOrchestrator(
    "QuickPlanner", agents=[flight_finder, hotel_finder], max_rounds=2, response_timeout=QUICK_TIMEOUT
)
coordinator = LLMOrchestrator("Coordinator", agents=[flight_finder, hotel_finder], max_rounds=2, response_timeout=60.0)

agents = [flight_finder, hotel_finder, trip_planner, quick_planner, coordinator]


def respond(body: dict[str, Any]) -> Reply:
    """The scripted model: each agent recognised by its system prompt.

    The Coordinator first asks both agents at once, then summarises the tool results.
    """
    messages = body["messages"]
    system = messages[0]["content"]
    if "Your name is FlightFinder" in system:
        return text(FLIGHT_ANSWER)
    if "Your name is HotelFinder" in system:
        return text(HOTEL_ANSWER)
    if "Your name is Coordinator" in system:
        results = [m["content"] for m in messages if m["role"] == "tool"]
        if not results:
            task = {"task": messages[-1]["content"]}
            return tool_calls(("FlightFinder", task), ("HotelFinder", task))
        return text("Summary: " + " | ".join(results))
    return text(f"unexpected prompt: {json.dumps(system)[:200]}")
