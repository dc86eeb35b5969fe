"""Listing and purging workflows: the store's read-mostly, many-workflow operations."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidTransition
from .codec import TERMINAL, decode_meta


class WorkflowQueries:
    """Mixed into :class:`~agent_platform.store.workflows.WorkflowStore` (uses its keys)."""

    client: Any
    index_key: str
    active_key: str

    def key(self, workflow_id: str, part: str) -> str:  # provided by WorkflowStore
        raise NotImplementedError

    def meta(self, workflow_id: str) -> dict[str, Any]:  # provided by WorkflowStore
        raise NotImplementedError

    def session_key(self, agent: str, session_id: str) -> str:  # provided by WorkflowStore
        raise NotImplementedError

    def list(
        self,
        status: str | None = None,
        session_id: str | None = None,
        limit: int = 50,
        cursor: int = 0,
        agent: str | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Workflows newest first, filtered; returns ``(items, next_cursor or None)``.

        ``cursor`` is an offset into the creation-time index.
        """
        items: list[dict[str, Any]] = []
        offset = cursor
        batch = max(limit, 100)
        while len(items) < limit:
            ids = self.client.zrevrange(self.index_key, offset, offset + batch - 1)
            if not ids:
                return items, None
            pipe = self.client.pipeline(transaction=False)
            for wf in ids:
                pipe.hgetall(self.key(wf, "meta"))
            for n, raw in enumerate(pipe.execute()):
                if not raw:
                    continue
                meta = decode_meta(raw)
                if status and meta.get("runtime_status") != status:
                    continue
                if session_id and meta.get("session_id") != session_id:
                    continue
                if agent and meta.get("agent") != agent:
                    continue
                items.append(meta)
                if len(items) == limit:
                    return items, offset + n + 1
            offset += len(ids)
        return items, offset

    def status_counts(
        self, session_id: str | None = None, agent: str | None = None, scan: int = 10_000
    ) -> tuple[dict[str, int], bool]:
        """How many of the newest ``scan`` workflows have each runtime status (filtered
        by session and agent); returns ``(counts, complete)``, ``complete`` False when
        older workflows were left uncounted. One pipelined ``HMGET`` per workflow.
        """
        counts: dict[str, int] = {}
        total = self.client.zcard(self.index_key)
        for offset in range(0, min(total, scan), 500):
            ids = self.client.zrevrange(self.index_key, offset, min(offset + 500, scan) - 1)
            pipe = self.client.pipeline(transaction=False)
            for wf in ids:
                pipe.hmget(self.key(wf, "meta"), "runtime_status", "session_id", "agent")
            for status, session, owner in pipe.execute():
                if status and (not session_id or session == session_id) and (not agent or owner == agent):
                    counts[status] = counts.get(status, 0) + 1
        return counts, total <= scan

    def purge(self, workflow_id: str) -> None:
        """Delete every key of a finished workflow.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidTransition: it has not finished (409).
        """
        meta = self.meta(workflow_id)
        if meta["runtime_status"] not in TERMINAL:
            raise InvalidTransition(f"cannot purge a workflow that is {meta['runtime_status']}", meta["runtime_status"])
        leases = list(self.client.scan_iter(match=self.key(workflow_id, "lease:*"), count=100))
        pipe = self.client.pipeline(transaction=False)
        for part in ("meta", "steps", "done", "callback"):
            pipe.delete(self.key(workflow_id, part))
        for lease in leases:
            pipe.delete(lease)
        pipe.zrem(self.index_key, workflow_id)
        pipe.zrem(self.active_key, workflow_id)
        pipe.lrem(self.session_key(meta["agent"], meta["session_id"]), 0, workflow_id)
        pipe.execute()
