"""In-process memory, for unit tests of pure logic and single-process use."""

from __future__ import annotations

import threading
from typing import Any


class ConversationListMemory:
    """Memory held in a Python dict; lost when the process ends.

    Args:
        session_id: the default session of the agent.
    """

    def __init__(self, session_id: str = "default") -> None:
        self.session_id = session_id
        self._sessions: dict[str, list[dict[str, Any]]] = {}
        self._written: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def bind(self, runtime: Any, agent_name: str) -> ConversationListMemory:
        """Already bound: returns self."""
        return self

    def length(self, session_id: str) -> int:
        """Number of messages of ``session_id``."""
        with self._lock:
            return len(self._sessions.get(session_id, []))

    def messages(self, session_id: str, stop: int | None = None) -> list[dict[str, Any]]:
        """The first ``stop`` messages of ``session_id`` (copies)."""
        with self._lock:
            return [dict(m) for m in self._sessions.get(session_id, [])[:stop]]

    def forget_writer(self, session_id: str, workflow_id: str) -> None:
        """Forget that ``workflow_id`` appended (it was purged); the messages stay."""
        with self._lock:
            self._written.discard((session_id, workflow_id))

    def append_turn(self, session_id: str, workflow_id: str, messages: list[dict[str, Any]]) -> bool:
        """Append once per (session, workflow); False when already appended."""
        with self._lock:
            if (session_id, workflow_id) in self._written:
                return False
            self._written.add((session_id, workflow_id))
            self._sessions.setdefault(session_id, []).extend({**m, "workflow_id": workflow_id} for m in messages)
            return True
