"""TravelBuddy in the Dapr Agents 1.x form: a ``DurableAgent`` built inside a function and
served by ``AgentRunner.serve`` (dev mode: Redis, model, worker and web in one command).

    python examples/durable_agent_runner.py
    curl -s -XPOST localhost:8001/agent/run -H 'Content-Type: application/json' \\
         -d '{"task": "I want to find flights to Paris"}'
    curl -s localhost:8001/agent/instances/<instance_id>

From Dapr Agents, only the imports changed (``dapr_agents`` ->
``agent_platform``; ``StateStoreService`` is exported by ``agent_platform`` itself).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from agent_platform import (
    AgentExecutionConfig,
    AgentMemoryConfig,
    AgentRunner,
    AgentStateConfig,
    DurableAgent,
    StateStoreService,
    tool,
)
from agent_platform.memory import ConversationDaprStateMemory


class DestinationSchema(BaseModel):
    """Arguments of search_flights."""

    destination: str = Field(description="Destination city name")


def build_agent() -> DurableAgent:
    """The agent, built inside a function: nothing needs to import it by name."""

    @tool(args_model=DestinationSchema)
    def search_flights(destination: str) -> list[dict]:
        """Search for flights to the specified destination."""
        return [{"airline": "SkyHighAir", "price": 450.00}, {"airline": "GlobalWings", "price": 375.50}]

    return DurableAgent(
        name="TravelBuddy",
        role="Travel Planner",
        goal="Help users find flights and remember preferences",
        instructions=["Find flights to destinations", "Provide clear flight info"],
        tools=[search_flights],
        memory=AgentMemoryConfig(store=ConversationDaprStateMemory(store_name="conversationstore")),
        state=AgentStateConfig(store=StateStoreService(store_name="workflowstatestore")),
        execution=AgentExecutionConfig(max_iterations=5),
    )


def main() -> None:
    runner = AgentRunner()
    try:
        runner.serve(build_agent(), port=8001)
    finally:
        runner.shutdown()


if __name__ == "__main__":
    main()
