"""Conversation memory in a Redis list, one per (agent, session).

Keys: ``<prefix>conversation:{<agent>:<session>}`` (a list of JSON messages) and
``...:writers`` (a set of workflow ids that appended), in one hash tag so the
idempotent append is one atomic script (``append_turn.lua``), also on Redis Cluster.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .. import keys
from ..ids import validate_id
from ..store.plans import ScriptCall


def append_turn_script() -> str:
    """The Lua source of the idempotent append (``memory/append_turn.lua``)."""
    return resources.files(__package__).joinpath("append_turn.lua").read_text(encoding="utf-8")


class ConversationRedisMemory:
    """Conversation history in the ``state.redis`` component named ``store_name``.

    Args:
        store_name: the component holding the history.
        session_id: the default session; each start may name its own.
    """

    def __init__(self, store_name: str = "conversationstore", session_id: str = "default") -> None:
        self.store_name = store_name
        self.session_id = validate_id(session_id, "session_id")

    def bind(self, runtime: Any, agent_name: str) -> RedisSessionHistory:
        """Bind to the runtime's connection for ``store_name``.

        Raises:
            ComponentError: the component is missing or not ``state.redis``.
        """
        client, prefix = runtime.redis_for(self.store_name)
        return RedisSessionHistory(client, prefix, agent_name)


class RedisSessionHistory:
    """The bound form of :class:`ConversationRedisMemory` (see :class:`SessionHistory`)."""

    def __init__(self, client: Any, prefix: str, agent_name: str) -> None:
        self.client = client
        self.prefix = prefix
        self.agent = agent_name
        self._append = client.register_script(append_turn_script())

    def key(self, session_id: str) -> str:
        """The list key of a session (the id is validated first)."""
        return keys.conversation(self.prefix, self.agent, session_id)

    def length(self, session_id: str) -> int:
        """Number of stored messages (LLEN)."""
        return int(self.client.llen(self.key(session_id)))

    def messages(self, session_id: str, stop: int | None = None) -> list[dict[str, Any]]:
        """The first ``stop`` messages (LRANGE), decoded."""
        if stop == 0:
            return []
        end = -1 if stop is None else stop - 1
        return self.decode(self.client.lrange(self.key(session_id), 0, end))

    @staticmethod
    def decode(raw: list[str]) -> list[dict[str, Any]]:
        """Stored entries (JSON text, as LRANGE returns them) as messages."""
        return [json.loads(m) for m in raw]

    def key_on(self, client: Any, session_id: str) -> str | None:
        """The session's list key when this memory lives on ``client`` (a caller may then
        read or write it in a round trip of its own, as the engine does at a turn's start
        and finish); None when it lives elsewhere."""
        return self.key(session_id) if client is self.client else None

    def append_call(
        self, session_id: str, workflow_id: str, messages: list[dict[str, Any]], leave: str | None = None
    ) -> ScriptCall:
        """:meth:`append_turn` as a script call, to run in a caller's pipeline; its reply is
        1 (appended) or 0 (appended before).

        Args:
            leave: the session's queue of unfinished turns (``WorkflowKeys.session``, the
                same hash tag): the workflow also leaves it in the same script, whose reply
                is then ``[1 or 0, the queue's new head or None]``.
        """
        key = self.key(session_id)
        payload = [json.dumps({**m, "workflow_id": workflow_id}) for m in messages]
        writers = keys.conversation_writers(self.prefix, self.agent, session_id)
        return ScriptCall(self._append, [key, writers, *([leave] if leave else [])], [workflow_id, *payload])

    def forget_writer(self, session_id: str, workflow_id: str) -> None:
        """Forget that ``workflow_id`` appended (it was purged): a new workflow given the
        same id appends its own turn (SREM of the writers set; the messages stay)."""
        self.client.srem(keys.conversation_writers(self.prefix, self.agent, session_id), workflow_id)

    def append_turn(self, session_id: str, workflow_id: str, messages: list[dict[str, Any]]) -> bool:
        """Append once per workflow (one Lua script: SADD of the writer, then RPUSH)."""
        call = self.append_call(session_id, workflow_id, messages)
        return bool(call.run(self.client))


class ConversationDaprStateMemory(ConversationRedisMemory):
    """Dapr Agents' name for conversation memory in a state store: the history lives in the
    ``state.redis`` component named ``store_name`` (the same keys as
    :class:`ConversationRedisMemory`, which it is).

    Args:
        store_name: the ``state.redis`` component (Dapr Agents' default ``statestore``
            names none of ours; the tutorial's is ``conversationstore``).
        session_id: the default session; each start may name its own.
    """

    def __init__(self, store_name: str = "conversationstore", session_id: str = "default") -> None:
        super().__init__(store_name=store_name, session_id=session_id)
