"""TravelBuddy: the travel planner agent of DESIGN section 1.

Serve it with ``AGENT_APP=examples.travel_planner:travel_planner`` (worker, web, bus), or
run this file for dev mode (embedded Redis and model when none is configured).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from agent_platform import AssistantAgent, tool
from agent_platform.memory import ConversationRedisMemory


class FlightOption(BaseModel):
    """One flight offer."""

    airline: str = Field(description="Airline name")
    price: float = Field(description="Price in USD")


class DestinationSchema(BaseModel):
    """Arguments of search_flights."""

    destination: str = Field(description="Destination city name")


@tool(args_model=DestinationSchema)
def search_flights(destination: str) -> list[FlightOption]:
    """Search for flights to the specified destination."""
    return [
        FlightOption(airline="SkyHighAir", price=450.00),
        FlightOption(airline="GlobalWings", price=375.50),
    ]


travel_planner = AssistantAgent(
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

if __name__ == "__main__":
    travel_planner.as_service(port=8001)
    travel_planner.start()
