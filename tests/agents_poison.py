"""An agent whose steps kill their own worker (case C14): ``tests.agents_poison:poison_buddy``.

- ``explode()`` SIGKILLs the process that runs it, every time;
- its model client SIGKILLs the process when the turn's user message says ``KILL THE MODEL
  WORKER``, before the request is sent (an ``llm`` step that dies every time); any other
  turn talks to the scripted model as usual.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from agent_platform import AssistantAgent, OpenAIChatClient, tool
from agent_platform.llm.reply import AssistantReply
from agent_platform.memory import ConversationRedisMemory

POISON = "KILL THE MODEL WORKER"


@tool
def explode() -> str:
    """Run the exploding task (it kills its own worker process)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


@tool
def echo(text: str) -> str:
    """Echo the text back."""
    return text


class ExplodingClient(OpenAIChatClient):
    """The scripted model's client, but the process dies on a poisoned turn."""

    def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> AssistantReply:
        if any(m["role"] == "user" and POISON in (m.get("content") or "") for m in messages):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().chat(messages, tools, tool_choice, config)


poison_buddy = AssistantAgent(
    name="PoisonBuddy",
    role="Tester",
    goal="Run the tools the user names.",
    tools=[explode, echo],
    memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    llm=ExplodingClient(),
)
