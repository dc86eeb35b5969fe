"""The memory protocol: a per-session, append-only list of chat messages."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SessionHistory(Protocol):
    """Memory bound to one agent and its store; what the engine calls.

    Every entry is an OpenAI-shaped message plus ``workflow_id`` (the turn that wrote it).
    """

    def length(self, session_id: str) -> int:
        """Number of messages stored for ``session_id``."""
        ...

    def messages(self, session_id: str, stop: int | None = None) -> list[dict[str, Any]]:
        """The first ``stop`` messages (all when None), oldest first."""
        ...

    def append_turn(self, session_id: str, workflow_id: str, messages: list[dict[str, Any]]) -> bool:
        """Append one turn's messages once: False (and nothing written) when
        ``workflow_id`` already appended (DESIGN section 3, rule 8)."""
        ...


@runtime_checkable
class ConversationMemory(Protocol):
    """What an agent's ``memory=`` is: a default session and a way to bind to a store."""

    session_id: str

    def bind(self, runtime: Any, agent_name: str) -> SessionHistory:
        """Return the history bound to the runtime's store for ``agent_name``."""
        ...
