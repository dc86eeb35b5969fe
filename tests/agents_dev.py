"""Agents for the dev-mode tests (``AGENT_APP=tests.agents_dev:<name>``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

from agent_platform import AssistantAgent, tool


class WaitArgs(BaseModel):
    """Arguments of slow_lookup."""

    city: str = Field(description="City name")


@tool(args_model=WaitArgs)
def slow_lookup(city: str) -> dict:
    """Look a city up, slowly; touches $DEV_TEST_MARKER when it starts."""
    marker = os.environ.get("DEV_TEST_MARKER")
    if marker:
        with Path(marker).open("a") as handle:
            handle.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("DEV_TEST_TOOL_SECONDS", "20")))
    return {"city": city, "found": True}


sleepy = AssistantAgent(
    name="Sleepy",
    role="Researcher",
    goal="Look cities up.",
    tools=[slow_lookup],
)
