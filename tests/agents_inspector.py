"""The agent of the run inspector's browser tests (``tests/test_inspector.py``).

``note_keeper`` has three tools: ``save_note(text)`` returns its text as the tool result
(so a test controls what a tool result holds, markup included), ``publish_note(text)``
needs a person's approval before it runs, and ``Archivist(task)`` asks an agent that no
process serves, so the turn waits for an event (``response.<stage>.<index>``) that only
a person raises.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from agent_platform import AssistantAgent, tool
from agent_platform.bus import AgentTool
from agent_platform.memory import ConversationRedisMemory


class NoteSchema(BaseModel):
    """Arguments of the note tools."""

    text: str = Field(description="The note's text")


@tool(args_model=NoteSchema)
def save_note(text: str) -> dict[str, str]:
    """Save a note; returns what was saved."""
    return {"saved": text}


@tool(args_model=NoteSchema, requires_approval=True)
def publish_note(text: str) -> dict[str, str]:
    """Publish a note to everyone (a person must approve it)."""
    return {"published": text}


note_keeper = AssistantAgent(
    name="NoteKeeper",
    role="Note keeper",
    goal="Save and publish the notes the user dictates.",
    instructions=["Save or publish the note with your tools, then say what you did."],
    tools=[save_note, publish_note, AgentTool("Archivist", timeout=None)],
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
)  # the stores and bus are the defaults, TravelBuddy's: one deployment serves both
