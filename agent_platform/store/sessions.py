"""A session's queue of unfinished turns (``<base>:session:{<agent>:<session>}``): turns of
one session run in order, one at a time (DESIGN section 3, rule 8). The queue shares its
hash tag with the session's memory (``conversation:{<agent>:<session>}``), so a turn's start
reads both in one round trip and its finish writes both in one script.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import NoScriptError

from ..connections import is_cluster
from ..keys import WorkflowKeys
from .plans import ScriptCall, now_ms


class SessionQueues:
    """Mixed into :class:`~agent_platform.store.workflows.WorkflowStore` (uses its client and keys)."""

    client: Any
    keys: WorkflowKeys

    def forget_active(self, workflow_id: str) -> None:  # provided by WorkflowStore
        raise NotImplementedError

    def session_head(self, agent: str, session_id: str) -> str | None:
        """The session's oldest unfinished turn, or None."""
        head: str | None = self.client.lindex(self.keys.session(agent, session_id), 0)
        return head

    def leave_session(self, agent: str, session_id: str, workflow_id: str) -> str | None:
        """Remove a finished turn from its session; return the new head (to start), or None."""
        pipe = self.client.pipeline(transaction=False)
        key = self.keys.session(agent, session_id)
        pipe.lrem(key, 0, workflow_id)
        pipe.lindex(key, 0)
        head: str | None = pipe.execute()[1]
        return head

    def session_head_and_list(self, agent: str, session_id: str, key: str) -> tuple[str | None, list[str]]:
        """The session's oldest unfinished turn and, in the same round trip, the whole list
        ``key`` of the same hash tag (the session's memory: a turn's start reads both)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lindex(self.keys.session(agent, session_id), 0)
        pipe.lrange(key, 0, -1)
        head, entries = pipe.execute()
        return head, list(entries)

    def finish_turn(
        self, agent: str, session_id: str, workflow_id: str, memory: ScriptCall | None = None
    ) -> str | None:
        """A finished turn leaves its session and the sweeper's set, in one round trip:
        ``memory`` (the turn's append to the session's memory on this client, which also
        leaves the session: ``append_call(..., leave=keys.session(...))``) or LREM and
        LINDEX, then ZREM. Returns the session's new head (to start), or None.

        A restarted Redis that forgot the memory script has run the ZREM alone: the
        workflow goes back into the sweeper's set before the script is loaded and run
        again, so a crash meanwhile still leaves the finish to the sweeper.
        """
        key = self.keys.session(agent, session_id)
        if is_cluster(self.client):  # no EVALSHA in a cluster pipeline; the ZREM comes last
            if memory is not None:
                new_head = memory.run(self.client)[1]
            else:
                new_head = self.leave_session(agent, session_id, workflow_id)
            self.forget_active(workflow_id)
            return new_head or None
        pipe = self.client.pipeline(transaction=False)
        if memory is not None:
            memory.add_to(pipe)
        else:
            pipe.lrem(key, 0, workflow_id)
            pipe.lindex(key, 0)
        pipe.zrem(self.keys.active, workflow_id)
        replies = pipe.execute(raise_on_error=False)
        if memory is not None and isinstance(replies[0], NoScriptError):
            self.client.zadd(self.keys.active, {workflow_id: now_ms()})
            memory.run(self.client)  # loads it, runs it
            self.forget_active(workflow_id)
            return self.session_head(agent, session_id)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        head: str | None = replies[0][1] if memory is not None else replies[1]
        return head
