#!/usr/bin/env python3
"""
The Dapr Agents tutorial's durable TravelBuddy agent (its ``04_assistant_agent.py``
quickstart) ported to agent-platform: only the two ``dapr_agents`` imports changed.

It shows:
1. Memory - the conversation outlives the process
2. Tool use - a flight search
3. Durable execution - every model call and tool call is a checkpointed step

Run it (dev mode: Redis, model, worker and web in one command; Ctrl-C stops):
    python examples/dapr_tutorial.py
    curl -i -X POST http://localhost:8001/start-workflow \\
      -H "Content-Type: application/json" -d '{"task": "I want to find flights to Paris"}'
    curl -i -X GET http://localhost:3500/v1.0/workflows/durableTaskHub/WORKFLOW_ID
"""
import asyncio
import logging
from typing import List
from pydantic import BaseModel, Field
from agent_platform import tool, AssistantAgent
from agent_platform.memory import ConversationDaprStateMemory
from dotenv import load_dotenv


# What the tool returns
class FlightOption(BaseModel):
    airline: str = Field(description="Airline name")
    price: float = Field(description="Price in USD")


# What the tool takes
class DestinationSchema(BaseModel):
    destination: str = Field(description="Destination city name")


# The tool the model may call
@tool(args_model=DestinationSchema)
def search_flights(destination: str) -> List[FlightOption]:
    """Search for flights to the specified destination."""
    # Fixed offers stand in for a flight API
    return [
        FlightOption(airline="SkyHighAir", price=450.00),
        FlightOption(airline="GlobalWings", price=375.50),
    ]


async def main():
    try:
        # The agent is built here, inside main(): dev mode serves it as an object
        travel_planner = AssistantAgent(
            name="TravelBuddy",
            role="Travel Planner",
            goal="Help users find flights and remember preferences",
            instructions=[
                "Find flights to destinations",
                "Remember user preferences",
                "Provide clear flight info",
            ],
            tools=[search_flights],
            message_bus_name="messagepubsub",
            state_store_name="workflowstatestore",
            state_key="workflow_state",
            agents_registry_store_name="registrystatestore",
            agents_registry_key="agents_registry",
            memory=ConversationDaprStateMemory(
                store_name="conversationstore", session_id="my-unique-id"
            ),
        )

        travel_planner.as_service(port=8001)
        await travel_planner.start()
        print("Travel Planner Agent is running")

    except Exception as e:
        print(f"Error starting service: {e}")


if __name__ == "__main__":
    load_dotenv()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
