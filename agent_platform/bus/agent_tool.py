"""Calling another agent from a workflow: a tool whose answer arrives over the bus.

:class:`AgentTool` is a :class:`~agent_platform.tool.WaitingTool`: its ``tool`` step
publishes a :class:`~agent_platform.bus.messages.TriggerAction` to the target agent's
topic (``begin``), then the engine suspends the caller (SUSPENDED, ``pending_event``
``response.<stage>.<index>``), durable across restarts. The target's turn answers with an
:class:`~agent_platform.bus.messages.AgentTaskResponse` on the caller's topic; the bus
raises the event and the caller's step runs again and reads the answer (``complete``).
After ``timeout`` seconds the sweeper delivers a timeout instead, which the model reads
as the tool's error (``Error: timed out waiting for <agent>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from ..tool import ToolContext, WaitingTool
from .messages import ReplyTo, TriggerAction, envelope
from .responses import current_runtime, source_of
from .streams import bus_for

_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


class AgentTask(BaseModel):
    """Arguments of an agent tool."""

    task: str = Field(description="The complete task for the agent, with every detail it needs")


def tool_name_for(agent_name: str) -> str:
    """The tool name for an agent (OpenAI's ``^[A-Za-z0-9_-]{1,64}$``: other characters become ``_``)."""
    return _TOOL_NAME.sub("_", agent_name)[:64]


class AgentTool(WaitingTool):
    """A tool that asks agent ``agent`` to run a turn and returns its answer.

    Agents that call each other must share one ``pubsub.redis`` component: the message
    goes to the target's topic on the caller's ``message_bus_name``.

    Args:
        agent: the target agent's name (its topic), or the agent itself (its role and
            goal then go into the tool's description).
        timeout: seconds to wait for the answer (None: forever).
        description: what the model reads (default: built from the agent).
        session_per_caller: the target runs the call in session ``<caller workflow id>``
            (each calling turn is one conversation for it; several calls of one turn
            share it). False: the target's default session.
    """

    def __init__(
        self,
        agent: Any,
        timeout: float | None = 60.0,
        description: str | None = None,
        session_per_caller: bool = True,
    ) -> None:
        name = agent if isinstance(agent, str) else agent.name
        if description is None:
            about = "" if isinstance(agent, str) else f" ({agent.role}: {agent.goal})"
            description = f"Ask the agent {name}{about} to do a task; returns its answer."
        super().__init__(tool_name_for(name), description, AgentTask, event_timeout=timeout, target=name)
        self.agent_name = name
        self.session_per_caller = session_per_caller

    def __repr__(self) -> str:
        return f"<AgentTool {self.agent_name}>"

    def begin(self, arguments: dict[str, Any], context: ToolContext, event_name: str) -> None:
        """Publish the TriggerAction; its id is the call's idempotency key, so a re-run of
        the step publishes a duplicate that the target's bus drops.

        Raises:
            ConfigurationError: no runtime is installed in this process.
            redis.RedisError: the bus is unreachable (after redis-py's own retries). The
                engine turns either into the tool's error, which the model reads.
        """
        runtime = current_runtime()
        message = TriggerAction(
            task=arguments["task"],
            session_id=context.workflow_id if self.session_per_caller else None,
            metadata={"caller": {"agent": context.agent, "workflow_id": context.workflow_id}},
            reply_to=ReplyTo(agent=context.agent, workflow_id=context.workflow_id, event=event_name),
        )
        event = envelope(message, source_of(context.agent), message_id=context.idempotency_key)
        bus_for(runtime, runtime.agent(context.agent)).publish(self.agent_name, event, group=self.agent_name)


def call_agent_tool(agents: Iterable[Any], timeout: float | None = 60.0) -> list[AgentTool]:
    """One :class:`AgentTool` per agent (names or agents), with one response timeout (s)."""
    return [AgentTool(agent, timeout=timeout) for agent in agents]
