"""``DurableAgent`` and its configuration objects, as Dapr Agents 1.x names them.

A :class:`DurableAgent` is an :class:`~agent_platform.agent.AssistantAgent` (every turn is
already a durable workflow here) that also accepts Dapr Agents' grouped configuration
(``dapr_agents/agents/configs.py``): ``pubsub=AgentPubSubConfig(...)``,
``state=AgentStateConfig(...)``, ``registry=AgentRegistryConfig(...)``,
``memory=AgentMemoryConfig(...)``, ``execution=AgentExecutionConfig(...)``. Each maps to
the flat keywords; options with no counterpart here are accepted and ignored, as Dapr
components' Dapr-only fields are.

Example:
    >>> agent = DurableAgent(  # doctest: +SKIP
    ...     name="WeatherAgent", role="Weather Assistant", tools=[slow_weather_func],
    ...     memory=AgentMemoryConfig(store=ConversationDaprStateMemory(store_name="agent-memory")),
    ...     state=AgentStateConfig(store=StateStoreService(store_name="agent-workflow")),
    ... )
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .agent import AssistantAgent
from .memory.base import ConversationMemory
from .memory.list_memory import ConversationListMemory

__all__ = [
    "AgentExecutionConfig",
    "AgentMemoryConfig",
    "AgentPubSubConfig",
    "AgentRegistryConfig",
    "AgentStateConfig",
    "DurableAgent",
    "StateStoreService",
]


@dataclass
class StateStoreService:
    """A state store named by its component (Dapr Agents' ``StateStoreService``).

    Attributes:
        store_name: the ``state.redis`` component.
        key_prefix: key prefix inside the store (``state_key`` / ``agents_registry_key``).
    """

    store_name: str
    key_prefix: str | None = None


@dataclass
class AgentPubSubConfig:
    """Messages between agents: ``pubsub_name`` is the ``pubsub.redis`` component (the
    agent's topic is its name here; ``agent_topic``/``broadcast_topic`` are ignored)."""

    pubsub_name: str
    agent_topic: str | None = None
    broadcast_topic: str | None = None


@dataclass
class AgentStateConfig:
    """Where workflows and checkpoints live: ``store`` (a :class:`StateStoreService` or a
    component name) and ``state_key_prefix`` (the ``state_key``)."""

    store: StateStoreService | str
    state_key_prefix: str | None = None


@dataclass
class AgentRegistryConfig:
    """The agent registry's store (``team_name`` is ignored: one registry per store)."""

    store: StateStoreService | str
    team_name: str | None = None


@dataclass
class AgentMemoryConfig:
    """Conversation memory: ``store`` is a memory object (default in-process, as in Dapr
    Agents; use ``ConversationDaprStateMemory`` for history that outlives processes)."""

    store: Any = field(default_factory=ConversationListMemory)


@dataclass
class AgentExecutionConfig:
    """Turn execution: ``max_iterations`` model calls at most (the last one with
    ``tool_choice="none"``); ``tool_choice`` other than ``"auto"`` is not supported."""

    max_iterations: int = 10
    tool_choice: str | None = "auto"


def _store_name(store: StateStoreService | str) -> tuple[str, str | None]:
    if isinstance(store, StateStoreService):
        return store.store_name, store.key_prefix
    return str(store), None


class DurableAgent(AssistantAgent):
    """An agent whose turns are durable workflows, with Dapr Agents 1.x's keywords.

    Takes every keyword of :class:`AssistantAgent`, plus ``pubsub``, ``state``,
    ``registry``, ``execution`` (config objects) and ``memory`` as an
    :class:`AgentMemoryConfig` or a memory object. A config object wins over the flat
    keyword it replaces. Serve it with :class:`~agent_platform.agent_runner.AgentRunner`
    or ``start()``.

    Raises:
        ConfigurationError: as :class:`AssistantAgent`.
    """

    def __init__(
        self,
        name: str,
        *,
        pubsub: AgentPubSubConfig | None = None,
        state: AgentStateConfig | None = None,
        registry: AgentRegistryConfig | None = None,
        memory: AgentMemoryConfig | ConversationMemory | None = None,
        execution: AgentExecutionConfig | None = None,
        **kwargs: Any,
    ) -> None:
        for unsupported in ("agent_metadata", "hooks", "mcp", "agent_observability", "retry_policy", "profile"):
            kwargs.pop(unsupported, None)
        if pubsub is not None:
            kwargs["message_bus_name"] = pubsub.pubsub_name
        if state is not None:
            kwargs["state_store_name"], prefix = _store_name(state.store)
            kwargs["state_key"] = state.state_key_prefix or prefix or kwargs.get("state_key", "workflow_state")
        if registry is not None:
            kwargs["agents_registry_store_name"], prefix = _store_name(registry.store)
            kwargs["agents_registry_key"] = prefix or kwargs.get("agents_registry_key", "agents_registry")
        if execution is not None:
            kwargs["max_iterations"] = execution.max_iterations
        store = memory.store if isinstance(memory, AgentMemoryConfig) else memory
        super().__init__(name, memory=store, **kwargs)

    def __repr__(self) -> str:
        return f"<DurableAgent {self.name} tools={list(self.tools)}>"
