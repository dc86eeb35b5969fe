"""The token side channel: a model's deltas on a short-lived Redis Stream per workflow.

DESIGN section 3, rule 12: an ``llm`` step publishes what the model streams for live
clients; nothing here is part of the checkpoint, which holds only the complete reply.
Keys (the workflow's hash tag, so the scripts run on Redis Cluster)::

    <prefix><state_key>:{<id>}:tokens       stream: delta and retry entries (MAXLEN ~, TTL)
    <prefix><state_key>:{<id>}:tokens:run   string: the run (one model call) that may publish

Each entry records ``after``, the seq of the last step record when it was written (read
in the same script as the ``XADD``), so a reader merges tokens and steps in the order
they happened: the entries with ``after = n`` come after step ``n`` and before step
``n + 1``. A run claims the channel with its first entry; an older run of the same step
(a worker that lost its lease but still reads its model) is fenced off. When a run
claims the channel while the last entry is a delta of another run of the same stage,
or a run's call fails after publishing, a ``retry`` entry tells clients to clear the
partial text.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .plans import ScriptCall
from .scripts import source

#: The scripts (``store/lua/token_publish.lua``, ``token_abandon.lua``; headers name KEYS and ARGV).
PUBLISH = source("token_publish")
ABANDON = source("token_abandon")


@dataclass(frozen=True)
class TokenEntry:
    """One entry of the token stream.

    Attributes:
        id: the Redis Stream entry id (``<ms>-<n>``).
        type: ``delta`` (text, tool call fragments, finish_reason) or ``retry`` (the
            partial output of an earlier run of the step is void).
        after: seq of the last step record when the entry was written (-1: none).
        stage: the step's stage (the workflow cursor it ran at).
        attempt: the attempt that published (for ``retry``: the one whose output is void).
        delta: ``{"text"?, "tool_calls"?, "finish_reason"?}`` for a delta; ``{}`` otherwise.
    """

    id: str
    type: str
    after: int
    stage: int
    attempt: int
    delta: dict[str, Any]

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of its SSE event: ``seq`` (the seq the step's record takes unless
        another record, e.g. a raised event, lands first), ``attempt``, and the delta."""
        return {"seq": self.after + 1, "attempt": self.attempt, **self.delta}


class TokenChannel:
    """Writer and reader of the token streams of one workflow store.

    Args:
        store: the :class:`~agent_platform.store.workflows.WorkflowStore` (its keys and client).
        ttl: seconds a stream lives after its last entry (Redis ``PEXPIRE``).
        maxlen: approximate cap on entries per stream (``XADD MAXLEN ~``).
    """

    def __init__(self, store: Any, ttl: float = 300.0, maxlen: int = 5000) -> None:
        self.store = store
        self.client = store.client
        self.ttl_ms = max(1, int(ttl * 1000))
        self.maxlen = maxlen
        self._publish, self._abandon = _scripts(self.client)

    def key(self, workflow_id: str) -> str:
        """The token stream of a workflow (the id is validated)."""
        return self.store.key(workflow_id, "tokens")

    def _keys(self, workflow_id: str) -> list[str]:
        return [self.key(workflow_id), self.store.key(workflow_id, "tokens:run"), self.store.key(workflow_id, "meta")]

    def publish(self, workflow_id: str, run: str, stage: int, attempt: int, delta: dict[str, Any], first: bool) -> int:
        """Append a delta entry for ``run``; ``first`` claims the channel for it.

        Returns:
            1 published, 0 another run owns the channel (stop publishing), -1 the
            workflow does not exist (purged).
        """
        call = self.batch(workflow_id, run, stage, attempt, delta, first)
        return int(call.run(self.client))

    def batch(
        self, workflow_id: str, run: str, stage: int, attempt: int, delta: dict[str, Any], first: bool
    ) -> ScriptCall:
        """The publish of :meth:`publish` as a script call, for the step's checkpoint to
        run in its own round trip (``WorkflowStore.checkpoint(..., before=...)``): the
        last batch of a model call costs no round trip of its own."""
        args = [run, "1" if first else "0", stage, attempt, json.dumps(delta), self.ttl_ms, self.maxlen]
        return ScriptCall(self._publish, self._keys(workflow_id), args)

    def abandon(self, workflow_id: str, run: str, stage: int, attempt: int) -> bool:
        """Void ``run``'s partial output (its call failed): a ``retry`` entry, if it still owns the channel."""
        args = [run, stage, attempt, self.ttl_ms, self.maxlen]
        return bool(self._abandon(keys=self._keys(workflow_id), args=args))

    def read(self, workflow_id: str, after_id: str = "0-0", count: int = 1000) -> list[TokenEntry]:
        """Entries after ``after_id``, oldest first (XRANGE)."""
        entries = self.client.xrange(self.key(workflow_id), f"({after_id}", "+", count=count)
        return [_entry(entry_id, fields) for entry_id, fields in entries]

    def wait(self, workflow_id: str, after_step: int, after_id: str | None, block_ms: int) -> bool:
        """Block up to ``block_ms`` until a step record after ``after_step`` or a token entry
        after ``after_id`` (None: steps only) exists (one ``XREAD BLOCK`` on both streams);
        True when one does."""
        streams = {self.store.key(workflow_id, "steps"): f"0-{after_step + 1}"}
        if after_id is not None:
            streams[self.key(workflow_id)] = after_id
        return bool(self.client.xread(streams, count=1, block=block_ms))


#: The scripts of each client, per process: ``(pid, id(client)) -> (publish, abandon)``.
_SCRIPTS: dict[tuple[int, int], tuple[Any, Any]] = {}


def _scripts(client: Any) -> tuple[Any, Any]:
    """This client's publish and abandon scripts; the publish script is loaded into Redis
    the first time (one ``SCRIPT LOAD`` per process and client). A batch written in a
    checkpoint's pipeline (:meth:`TokenChannel.batch`) is sent as ``EVALSHA`` beside the
    checkpoint script: were its script missing while the checkpoint's is loaded, the
    batch could only be dropped. A restarted Redis forgets both, and the checkpoint's
    pipeline then loads them and runs both again."""
    key = (os.getpid(), id(client))
    scripts = _SCRIPTS.get(key)
    if scripts is None or scripts[0].registered_client is not client:
        scripts = (client.register_script(PUBLISH), client.register_script(ABANDON))
        client.script_load(PUBLISH)
        _SCRIPTS[key] = scripts
    return scripts


def _entry(entry_id: str, fields: dict[str, str]) -> TokenEntry:
    return TokenEntry(
        id=entry_id,
        type=fields.get("type", "delta"),
        after=int(fields.get("after", -1)),
        stage=int(fields.get("stage", 0)),
        attempt=int(fields.get("attempt", 1)),
        delta=json.loads(fields["d"]) if fields.get("d") else {},
    )
