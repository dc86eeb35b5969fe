"""``python -m agent_platform.demo``: one TravelBuddy turn end to end, on the embedded defaults.

Starts dev mode for the TravelBuddy agent defined here (the agent of
``examples/travel_planner.py``; the demo ships with the package), sends "I want to find
flights to Paris" over HTTP, prints the model's answer as it is written and each step as
it is checkpointed (what ``agent-platform run`` shows: :func:`~agent_platform.timeline.print_live`)
and the answer, then stops everything and says how to keep the services (and the run
inspector's URL) up: ``agent-platform dev examples.travel_planner:travel_planner``. Exit
status 0 only when the turn is COMPLETED.
"""

from __future__ import annotations

import sys
import time

import httpx
from pydantic import BaseModel, Field

from .agent import AssistantAgent
from .devmode import DevMode
from .memory import ConversationRedisMemory
from .processes import free_port
from .status import public_status
from .timeline import print_live
from .tool import tool

TASK = "I want to find flights to Paris"


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
    return [FlightOption(airline="SkyHighAir", price=450.00), FlightOption(airline="GlobalWings", price=375.50)]


def travel_planner() -> AssistantAgent:
    """The TravelBuddy agent of DESIGN section 1."""
    return AssistantAgent(
        name="TravelBuddy",
        role="Travel Planner",
        goal="Help users find flights to their desired destinations.",
        instructions=[
            "Find flights to the destination the user names, with the search_flights tool.",
            "Answer with the airlines and prices you found.",
        ],
        tools=[search_flights],
        memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    agent = travel_planner()
    with (
        DevMode([agent], port=free_port(), dapr_port=0) as dev,
        httpx.Client(base_url=dev.base_url, timeout=30) as http,
    ):
        reply = http.post("/start-workflow", json={"task": TASK, "session_id": f"demo-{int(time.time())}"})
        reply.raise_for_status()
        wf = reply.json()["workflow_instance_id"]
        print(f"\nPOST /start-workflow {{'task': {TASK!r}}} -> 202, workflow {wf}\n", flush=True)
        assert dev.runtime is not None
        store = dev.runtime.store_for(agent)
        try:
            print_live(store, wf, timeout=300)
        except TimeoutError:
            print("the turn did not end within 300 s", file=sys.stderr)
            return 1
        status = public_status(store.state(wf))
    print(f"\nstatus: {status['runtime_status']}")
    if status.get("failure_details"):
        print(f"failure: {status['failure_details']}")
    print(f"answer: {status.get('output')}")
    # The URLs printed at the start no longer answer: say so, and how to keep them up.
    print(
        f"\n[agent-platform] stopped: the worker and the web app ({dev.base_url}/ui/) ended with the demo;"
        " to keep them up: .venv/bin/agent-platform dev examples.travel_planner:travel_planner  (Ctrl-C stops)"
    )
    return 0 if status["runtime_status"] == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
