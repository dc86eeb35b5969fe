"""The engine's seam: what it needs from the process that runs it (a small Protocol).

:class:`agent_platform.runtime.Runtime` implements it; unit tests pass a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..agent import AssistantAgent
    from ..memory.base import SessionHistory
    from ..settings import Settings
    from ..store.state import WorkflowState
    from ..store.workflows import WorkflowStore
    from .dispatch import StepMessage

#: Called as ``hook(runtime, state)`` once a workflow has its final status (after its
#: session is freed): the callback POST, the answer to a calling agent.
FinishHook = Callable[["Runtime", "WorkflowState"], None]


class Runtime(Protocol):
    """What the engine calls: settings, agents, their stores and memory, the dispatcher."""

    settings: Settings
    worker: str
    finish_hooks: list[FinishHook]

    @property
    def agents(self) -> Mapping[str, AssistantAgent]:
        """The loaded agents by name."""
        ...

    def agent(self, name: str) -> AssistantAgent:
        """A loaded agent (raises AgentNotFound)."""
        ...

    def store_for(self, agent: AssistantAgent | str) -> WorkflowStore:
        """The workflow store of an agent."""
        ...

    def stores(self) -> list[WorkflowStore]:
        """The distinct stores of the loaded agents."""
        ...

    def find_store(self, workflow_id: str) -> WorkflowStore:
        """The store holding ``workflow_id`` (raises WorkflowNotFound)."""
        ...

    def history_for(self, agent: AssistantAgent) -> SessionHistory:
        """The agent's conversation memory."""
        ...

    def dispatch(self, message: StepMessage, countdown: float | None = None) -> None:
        """Enqueue one step (after ``countdown`` seconds)."""
        ...

    def dispatch_many(self, messages: Sequence[StepMessage], countdown: float | None = None) -> None:
        """Enqueue several steps (parallel tool calls go as one group)."""
        ...
