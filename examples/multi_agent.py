"""Three agents that talk over the bus: a flight finder, a hotel finder and a round-robin
orchestrator that asks both and reports their answers (DESIGN section 5).

Run it with the Procfile (web, worker, bus)::

    AGENT_APP=examples.multi_agent:agents honcho start
    curl -s localhost:8000/start-workflow -H 'Content-Type: application/json' \\
        -d '{"agent": "TravelOrchestrator", "task": "Plan a trip to Paris in May"}'
    curl -s localhost:8000/agents            # the registry, with each agent's heartbeat

The orchestrator's turn triggers FlightFinder, waits (SUSPENDED) for its answer, then
triggers HotelFinder with the task and the first answer, then answers with a summary.
An agent that does not answer within ``response_timeout`` seconds is named in the
summary instead (the turn always ends). Scale out by starting one worker per agent:
``celery -A tasks worker -Q agent.FlightFinder`` and so on.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from agent_platform import AssistantAgent, tool
from agent_platform.memory import ConversationRedisMemory
from agent_platform.orchestrators import RoundRobinOrchestrator

COMPONENTS = {
    "message_bus_name": "messagepubsub",
    "state_store_name": "workflowstatestore",
    "state_key": "workflow_state",
    "agents_registry_store_name": "registrystatestore",
    "agents_registry_key": "agents_registry",
}


class Destination(BaseModel):
    """Arguments of the search tools."""

    destination: str = Field(description="Destination city name")


class FlightOption(BaseModel):
    """One flight offer."""

    airline: str = Field(description="Airline name")
    price: float = Field(description="Price in USD")


class HotelOption(BaseModel):
    """One hotel offer."""

    hotel: str = Field(description="Hotel name")
    price_per_night: float = Field(description="Price per night in USD")


@tool(args_model=Destination)
def search_flights(destination: str) -> list[FlightOption]:
    """Search for flights to the specified destination."""
    return [FlightOption(airline="SkyHighAir", price=450.00), FlightOption(airline="GlobalWings", price=375.50)]


@tool(args_model=Destination)
def search_hotels(destination: str) -> list[HotelOption]:
    """Search for hotels in the specified destination."""
    return [
        HotelOption(hotel="Hotel Lumiere", price_per_night=120.0),
        HotelOption(hotel="Le Petit", price_per_night=95.0),
    ]


flight_finder = AssistantAgent(
    name="FlightFinder",
    role="Flight Finder",
    goal="Find flights to the destination of the trip.",
    instructions=["Use search_flights for the destination.", "Answer with the airlines and prices."],
    tools=[search_flights],
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    **COMPONENTS,
)

hotel_finder = AssistantAgent(
    name="HotelFinder",
    role="Hotel Finder",
    goal="Find hotels at the destination of the trip.",
    instructions=["Use search_hotels for the destination.", "Answer with the hotels and prices per night."],
    tools=[search_hotels],
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    **COMPONENTS,
)

travel_orchestrator = RoundRobinOrchestrator(
    "TravelOrchestrator",
    agents=[flight_finder, hotel_finder],
    max_rounds=4,  # each agent once, and once more for one that did not answer
    response_timeout=120.0,
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    **COMPONENTS,
)

#: What ``AGENT_APP=examples.multi_agent:agents`` loads in every process.
agents = [flight_finder, hotel_finder, travel_orchestrator]
