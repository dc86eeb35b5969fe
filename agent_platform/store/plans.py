"""What one step reads and writes: the opened step, the checkpoint plan and its result.

These are the values passed to and returned by the ``open_step`` and ``checkpoint`` Lua
scripts of :class:`agent_platform.store.workflows.WorkflowStore` (``store/lua``), with
the time helpers their records use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .state import WorkflowState
from .turn_messages import TurnMessages


def now_iso() -> str:
    """The current UTC time in ISO 8601 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return int(time.time() * 1000)


def _record(fields: dict[str, str]) -> dict[str, Any]:
    record = json.loads(fields["r"])
    return {"seq": int(fields["seq"]), **record}


@dataclass(frozen=True)
class ScriptCall:
    """A script of another writer (the token side channel) to run in a checkpoint's round
    trip, just before the checkpoint script (so what it writes comes first).

    Attributes:
        script: a redis-py ``Script`` (``client.register_script``) whose keys share the
            workflow's hash tag.
        keys: its KEYS.
        args: its ARGV.
    """

    script: Any
    keys: list[str]
    args: list[Any]

    def add_to(self, pipe: Any) -> None:
        """Queue it in a redis-py pipeline as ``EVALSHA`` (the caller handles NOSCRIPT)."""
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)

    def run(self, client: Any) -> Any:
        """Run it on its own round trip (redis-py loads the script when Redis lacks it)."""
        return self.script(keys=self.keys, args=self.args, client=client)


@dataclass(frozen=True)
class OpenedStep:
    """What opening a step found.

    Attributes:
        verdict: ``open`` (the lease is ours: run the step), or why not: ``leased`` (a
            live or dead owner holds it: see ``owner``), ``missing``, ``finished``,
            ``suspended``, ``stale`` (not the workflow's step_seq), ``duplicate`` (this
            tool call is already checkpointed).
        owner: the lease's owner token when ``leased``.
        state: the workflow's state (``open`` only).
        lost: runs of this step whose worker died before their checkpoint (each one is
            now a ``lost`` record).
        attempt: the attempt this run is (retries and lost runs counted).
        messages: the turn's messages folded so far (when asked for).
        records: the step records after those folded (when asked for).
    """

    verdict: str
    owner: str | None = None
    state: WorkflowState | None = None
    lost: int = 0
    attempt: int = 1
    messages: list[dict[str, Any]] | None = None
    records: list[dict[str, Any]] | None = None

    @classmethod
    def decode(cls, reply: Sequence[Any], turns: TurnMessages, workflow_id: str) -> OpenedStep:
        """Read ``open_step``'s reply; the messages are merged with those ``turns`` holds
        (None when they do not match: the step then folds the whole step log)."""
        if reply[0] != "open":
            return cls(reply[0], owner=reply[1] or None)
        flat = reply[2]
        state = WorkflowState.decode(dict(zip(flat[0::2], flat[1::2], strict=True)))
        messages = turns.merge(workflow_id, int(reply[7]), reply[5]) if len(reply) > 7 else None
        records = (
            [_record(dict(zip(f[0::2], f[1::2], strict=True))) for _, f in reply[6]] if messages is not None else None
        )
        return cls("open", None, state, int(reply[3]), int(reply[4]), messages, records)


@dataclass(frozen=True)
class Chain:
    """Open the next step in the checkpoint's round trip (a local step, DESIGN section 3).

    Attributes:
        token, ttl: the next step's lease; call_index: its tool call (None for ``llm``).
        worker: the Celery hostname; with_messages: read the turn's messages too.
    """

    token: str
    ttl: float
    worker: str
    call_index: int | None = None
    with_messages: bool = False


@dataclass(frozen=True)
class CheckpointPlan:
    """How a checkpoint moves the workflow (see ``store/lua/checkpoint.lua``).

    Attributes:
        mode: ``advance`` (step_seq + ``advance_by``), ``tool`` (one call of a group; the last
            one advances), ``stay`` (a retry or a wait: step_seq unchanged), ``end``
            (advances; the workflow leaves the sweeper's set in ``finish_workflow``).
        updates: status fields to set (JSON-encoded when not strings).
        incr: integer fields to increment.
        next: the next step (its JSON), stored when the workflow advances.
        advance_by: how far step_seq moves when it advances (one per record of the chain).
        extra_records: records appended after the step's own (a ``finish`` after ``llm``).
        messages: chat messages appended to the turn's messages (an ``llm`` step folds the
            tool results before it and its own reply).
        suspend: ``{"name", "pending"}``: wait for an event (SUSPENDED), unless raised already.
    """

    mode: str
    updates: dict[str, Any] = field(default_factory=dict)
    incr: dict[str, int] = field(default_factory=dict)
    next: dict[str, Any] | None = None
    advance_by: int = 1
    extra_records: tuple[dict[str, Any], ...] = ()
    messages: tuple[dict[str, Any], ...] | None = None
    suspend: dict[str, Any] | None = None

    def to_json(self, chain: Chain | None, have: int = 0) -> str:
        """The script's ``plan`` argument; ``have``: the messages held of the turn (the chained step's)."""
        plan: dict[str, Any] = {"mode": self.mode}
        if self.updates:
            plan["updates"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.updates.items()}
        if self.incr:
            plan["incr"] = self.incr
        if self.next is not None:
            plan["next"] = json.dumps(self.next)
        if self.advance_by != 1:
            plan["advance_by"] = self.advance_by
        if self.extra_records:
            plan["extra_records"] = [json.dumps(r) for r in self.extra_records]
        if self.messages is not None:
            plan["messages"] = [json.dumps(m) for m in self.messages]
        if self.suspend is not None:
            plan["suspend"] = {"name": self.suspend["name"], "pending": json.dumps(self.suspend["pending"])}
        if chain is not None:
            plan["chain"] = {
                "token": chain.token,
                "ttl_ms": int(chain.ttl * 1000),
                "call_index": "" if chain.call_index is None else str(chain.call_index),
                "worker": chain.worker,
                "with_messages": "1" if chain.with_messages else "",
                "have": have,
            }
        return json.dumps(plan)


@dataclass(frozen=True)
class CheckpointResult:
    """What a checkpoint did.

    Attributes:
        accepted: the record was appended (False: fenced, and nothing was written).
        seq: the record's sequence number in the step log (-1 when refused).
        status: the workflow's runtime status after the checkpoint.
        advanced: step_seq moved to the next stage.
        reason: why it was refused: ``finished``, ``stale``, ``duplicate``, ``missing``.
        woke_early: a wait's event was raised already: the workflow stays RUNNING.
        opened: the next step, opened by the same script (a :class:`Chain` was given and
            the workflow advanced and is RUNNING).
    """

    accepted: bool
    seq: int
    status: str
    advanced: bool
    reason: str = ""
    woke_early: bool = False
    opened: OpenedStep | None = None
