"""The agent definition: who it is (role, goal, instructions), its tools, memory and model."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .keys import queue_name
from .llm.openai_client import OpenAIChatClient
from .memory.base import ConversationMemory
from .memory.redis_memory import ConversationRedisMemory
from .tool import Tool
from .tool import tool as make_tool

if TYPE_CHECKING:
    from .dev_service import DevService

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AssistantAgent:
    """A tool-calling assistant whose turns run as durable workflows.

    Args:
        name: unique agent name (letters, digits, ``_ . -``; at most 64); it names the
            Celery queue ``agent.<name>`` and the agent's bus topic.
        role: the role line of the system prompt.
        goal: the goal line of the system prompt.
        instructions: one instruction per item (a single string is accepted).
        tools: :class:`Tool` objects (plain functions are wrapped with ``@tool``).
        message_bus_name: the ``pubsub.redis`` component for messages between agents.
        state_store_name: the ``state.redis`` component holding workflows and checkpoints.
        state_key: key prefix of workflow state inside that store.
        agents_registry_store_name: the ``state.redis`` component of the agent registry.
        agents_registry_key: key prefix of the registry inside that store.
        memory: conversation memory; its ``session_id`` is only the default session.
        max_iterations: model calls allowed in one turn (the last is made with
            ``tool_choice="none"`` so every turn ends in an answer).
        llm: the model client (default :class:`OpenAIChatClient` from the environment).
        system_prompt: replaces the prompt built from role, goal and instructions.
        local_steps: run the turn's sequential steps (a single tool call, the model call
            after it) in the task that checkpointed the step before them, still one
            checkpoint per step (None: the deployment's ``AGENT_PLATFORM_LOCAL_STEPS``).

    Raises:
        ConfigurationError: an invalid name, duplicate tool names, max_iterations < 1.
    """

    def __init__(
        self,
        name: str,
        role: str = "Assistant",
        goal: str = "Help the user.",
        instructions: str | Sequence[str] = (),
        tools: Iterable[Tool | Any] = (),
        message_bus_name: str = "messagepubsub",
        state_store_name: str = "workflowstatestore",
        state_key: str = "workflow_state",
        agents_registry_store_name: str = "registrystatestore",
        agents_registry_key: str = "agents_registry",
        memory: ConversationMemory | None = None,
        max_iterations: int = 10,
        llm: OpenAIChatClient | None = None,
        system_prompt: str | None = None,
        local_steps: bool | None = None,
    ) -> None:
        if not NAME_RE.match(name or ""):
            raise ConfigurationError(f"agent name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        if max_iterations < 1:
            raise ConfigurationError(f"agent {name}: max_iterations must be >= 1")
        self.name = name
        self.role = role
        self.goal = goal
        self.instructions = [instructions] if isinstance(instructions, str) else list(instructions)
        self.tools: dict[str, Tool] = {}
        for t in tools:
            t = t if isinstance(t, Tool) else make_tool(t)
            if t.name in self.tools:
                raise ConfigurationError(f"agent {name}: two tools are named {t.name!r}")
            self.tools[t.name] = t
        self.message_bus_name = message_bus_name
        self.state_store_name = state_store_name
        self.state_key = state_key
        self.agents_registry_store_name = agents_registry_store_name
        self.agents_registry_key = agents_registry_key
        self.memory = memory if memory is not None else ConversationRedisMemory()
        self.max_iterations = max_iterations
        self.llm = llm if llm is not None else OpenAIChatClient()
        self._system_prompt = system_prompt
        self.local_steps = local_steps
        self.service_port: int | None = None
        self.service_host = "127.0.0.1"
        self._service: DevService | None = None

    def __repr__(self) -> str:
        return f"<AssistantAgent {self.name} tools={list(self.tools)}>"

    @property
    def queue(self) -> str:
        """The Celery queue of this agent's steps: ``agent.<name>``."""
        return queue_name(self.name)

    @property
    def topic(self) -> str:
        """The bus topic (Redis Stream) this agent consumes: its name."""
        return self.name

    @property
    def default_session_id(self) -> str:
        """The session used when a start names none (the memory's ``session_id``)."""
        return getattr(self.memory, "session_id", None) or "default"

    def system_prompt(self) -> str:
        """The system message: name, role, goal and instructions (or ``system_prompt``)."""
        if self._system_prompt is not None:
            return self._system_prompt
        lines = [f"Your name is {self.name}.", f"Your role: {self.role}.", f"Your goal: {self.goal}"]
        if self.instructions:
            lines.append("Instructions:")
            lines.extend(f"- {item}" for item in self.instructions)
        return "\n".join(lines)

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` parameter for this agent (empty list when it has no tools)."""
        return [t.schema() for t in self.tools.values()]

    def describe(self) -> dict[str, Any]:
        """A JSON description for the registry: name, role, goal, topic, queue, tool names."""
        return {
            "name": self.name,
            "role": self.role,
            "goal": self.goal,
            "topic": self.topic,
            "queue": self.queue,
            "tools": list(self.tools),
        }

    def as_service(self, port: int = 8001, host: str = "127.0.0.1") -> AssistantAgent:
        """Choose where :meth:`start` serves the HTTP API (``host:port``); returns self."""
        self.service_port = port
        self.service_host = host
        return self

    def start(self) -> DevService:
        """Dev mode: Redis (the components' or an embedded one), the embedded model when
        none is configured, a Celery worker and the web app, all for this agent object.

        The worker and the web app are forked from this process, so the agent may be
        built anywhere (inside ``async def main()``, a notebook cell, a test). Usable
        plainly (no event loop running: serves until Ctrl-C or SIGTERM, then returns)
        and with ``await`` (serves until stopped); while an event loop runs and nothing
        awaits it, it serves in the background until :meth:`stop`. The web app listens on
        the port given to :meth:`as_service` (``$AGENT_PLATFORM_APP_PORT`` overrides it),
        the Dapr workflow API also on ``$AGENT_PLATFORM_DAPR_HTTP_PORT`` (default 3500).

        Returns:
            The :class:`~agent_platform.dev_service.DevService` (awaitable).

        Raises:
            ConfigurationError: dev mode could not start (when serving in the foreground).
        """
        from .dev_service import DevService  # launcher: imports tasks/web lazily, in its children
        from .devmode import app_port

        if self._service is None or self._service.finished:
            self._service = DevService([self], port=app_port(self.service_port or 8001), host=self.service_host)
        return self._service.launch()

    def stop(self) -> None:
        """Stop what :meth:`start` started (every process), waiting until they exited."""
        if self._service is not None:
            self._service.stop()
