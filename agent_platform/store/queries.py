"""Listing and purging workflows: the read-mostly, many-workflow operations."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidTransition
from ..keys import WORKFLOW_PARTS, WorkflowKeys
from .state import WorkflowState

if TYPE_CHECKING:
    from .workflows import WorkflowStore


class WorkflowQueries:
    """Mixed into :class:`~agent_platform.store.workflows.WorkflowStore` (uses its keys)."""

    client: Any
    keys: WorkflowKeys

    def state(self, workflow_id: str) -> WorkflowState:  # provided by WorkflowStore
        raise NotImplementedError

    def newest_first(
        self, status: str | None = None, session_id: str | None = None, agent: str | None = None
    ) -> Iterator[WorkflowState]:
        """Every workflow of this store, newest first, filtered by status, session and
        agent (read in batches of 100: ZREVRANGE of the index, then HGETALLs in one pipeline)."""
        offset, batch = 0, 100
        while True:
            ids = self.client.zrevrange(self.keys.index, offset, offset + batch - 1)
            if not ids:
                return
            pipe = self.client.pipeline(transaction=False)
            for wf in ids:
                pipe.hgetall(self.keys.part(wf, "meta"))
            for raw in pipe.execute():
                if not raw:
                    continue  # purged meanwhile
                state = WorkflowState.decode(raw)
                if status and state.runtime_status != status:
                    continue
                if session_id and state.session_id != session_id:
                    continue
                if agent and state.agent != agent:
                    continue
                yield state
            offset += len(ids)

    def status_counts(
        self, session_id: str | None = None, agent: str | None = None, scan: int = 10_000
    ) -> tuple[dict[str, int], bool]:
        """How many of the newest ``scan`` workflows have each runtime status (filtered
        by session and agent); returns ``(counts, complete)``, ``complete`` False when
        older workflows were left uncounted. One pipelined ``HMGET`` per workflow.
        """
        counts: dict[str, int] = {}
        total = self.client.zcard(self.keys.index)
        for offset in range(0, min(total, scan), 500):
            ids = self.client.zrevrange(self.keys.index, offset, min(offset + 500, scan) - 1)
            pipe = self.client.pipeline(transaction=False)
            for wf in ids:
                pipe.hmget(self.keys.part(wf, "meta"), "runtime_status", "session_id", "agent")
            for status, session, owner in pipe.execute():
                if status and (not session_id or session == session_id) and (not agent or owner == agent):
                    counts[status] = counts.get(status, 0) + 1
        return counts, total <= scan

    def purge(self, workflow_id: str) -> None:
        """Delete every key of a finished workflow (:data:`~agent_platform.keys.WORKFLOW_PARTS`
        and its leases) and its index entries.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidTransition: it has not finished (409).
        """
        state = self.state(workflow_id)
        if not state.finished:
            raise InvalidTransition(f"cannot purge a workflow that is {state.runtime_status}", state.runtime_status)
        leases = list(self.client.scan_iter(match=self.keys.lease_pattern(workflow_id), count=100))
        pipe = self.client.pipeline(transaction=False)
        for key in [*(self.keys.part(workflow_id, p) for p in WORKFLOW_PARTS), *leases]:
            pipe.delete(key)
        pipe.zrem(self.keys.index, workflow_id)
        pipe.zrem(self.keys.active, workflow_id)
        pipe.lrem(self.keys.session(state.agent, state.session_id), 0, workflow_id)
        pipe.execute()


def list_workflows(
    stores: Sequence[WorkflowStore],
    status: str | None = None,
    session_id: str | None = None,
    limit: int = 50,
    cursor: int = 0,
    agent: str | None = None,
) -> tuple[list[WorkflowState], int | None]:
    """Workflows of several stores merged newest first (by ``created_at``), filtered.

    Args:
        cursor: how many matching workflows earlier pages returned (0 for the first page).

    Returns:
        ``(states, next_cursor)``; ``next_cursor`` is None on the last page.
    """
    merged = heapq.merge(
        *(store.newest_first(status, session_id, agent) for store in stores),
        key=lambda s: s.created_at or "",
        reverse=True,
    )
    page = list(itertools.islice(merged, cursor, cursor + limit + 1))
    more = len(page) > limit
    return page[:limit], (cursor + limit if more else None)
