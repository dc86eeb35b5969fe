"""The workflow state store on Redis: status hash, append-only step log, leases, fencing.

Keys of one workflow share the hash tag ``{<workflow_id>}`` (DESIGN section 3, rule 10)::

    <prefix><state_key>:{<id>}:meta       hash: status, cursor, next step, counters
    <prefix><state_key>:{<id>}:steps      stream: the step log, entry id 0-<seq+1>
    <prefix><state_key>:{<id>}:done       hash: tool calls already checkpointed
    <prefix><state_key>:{<id>}:lease:<stage>:<call>   string with a TTL: the step lease

and, outside any one workflow: ``...:index`` (zset by creation time), ``...:active``
(zset of unfinished workflows by the time the sweeper should look at them),
``...:session:{<agent>:<session>}`` (the session's turns in start order) and
``...:idem:<agent>:<sha256>`` (Idempotency-Key records).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..connections import block_ms_within, stream_entries
from ..errors import IdempotencyConflict, InvalidTransition, TooManyEvents, WorkflowNotFound
from ..ids import validate_id
from . import scripts
from .codec import TERMINAL as TERMINAL
from .codec import decode_meta
from .queries import WorkflowQueries

IDEMPOTENCY_TTL = 24 * 3600


def now_iso() -> str:
    """The current UTC time in ISO 8601 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class CheckpointResult:
    """What a checkpoint did.

    Attributes:
        accepted: the record was appended (False: fenced, and nothing was written).
        seq: the record's sequence number in the step log (-1 when refused).
        status: the workflow's runtime status after the checkpoint.
        advanced: the cursor moved to the next stage (the caller dispatches it).
        reason: why it was refused: ``finished``, ``stale``, ``duplicate``, ``missing``.
    """

    accepted: bool
    seq: int
    status: str
    advanced: bool
    reason: str = ""


class WorkflowStore(WorkflowQueries):
    """Workflow state of the agents that share one ``state.redis`` component and state_key.

    Args:
        client: a ``redis.Redis`` with ``decode_responses=True``.
        prefix: the component's key prefix ("" for none).
        state_key: the agent's ``state_key``.
    """

    def __init__(self, client: Any, prefix: str = "", state_key: str = "workflow_state") -> None:
        self.client = client
        self.base = f"{prefix}{state_key}"
        self._checkpoint = client.register_script(scripts.CHECKPOINT)
        self._open_step = client.register_script(scripts.OPEN_STEP)
        self._renew = client.register_script(scripts.RENEW)
        self._release = client.register_script(scripts.RELEASE)
        self._control = client.register_script(scripts.CONTROL)
        self._raise_event = client.register_script(scripts.RAISE_EVENT)

    # -- keys ---------------------------------------------------------------------------
    def key(self, workflow_id: str, part: str) -> str:
        """Key ``part`` of a workflow, e.g. ``meta``; the id is validated first."""
        validate_id(workflow_id, "workflow id")
        return f"{self.base}:{{{workflow_id}}}:{part}"

    @property
    def active_key(self) -> str:
        """Zset of unfinished workflows, scored by when the sweeper should look (ms)."""
        return f"{self.base}:active"

    @property
    def index_key(self) -> str:
        """Zset of all workflows, scored by creation time (ms)."""
        return f"{self.base}:index"

    def session_key(self, agent: str, session_id: str) -> str:
        """List of a session's unfinished turns in start order."""
        validate_id(session_id, "session_id")
        return f"{self.base}:session:{{{agent}:{session_id}}}"

    def lease_key(self, workflow_id: str, stage: int, call_index: int | None) -> str:
        """The lease of one step (``call_index`` for a tool call of a parallel group)."""
        return self.key(workflow_id, f"lease:{stage}:{'' if call_index is None else call_index}")

    # -- creation -----------------------------------------------------------------------
    def create(
        self,
        workflow_id: str,
        agent: str,
        session_id: str,
        task: str,
        metadata: dict[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        due_in: float = 30.0,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        """Create a PENDING workflow and queue it in its session.

        Returns:
            ``(workflow_id, created)``; with an ``idempotency_key`` already used for the
            same request, the earlier id and False.

        Raises:
            IdempotencyConflict: the key was used with a different request.
            ValidationError: an id is not valid.
        """
        validate_id(workflow_id, "workflow id")
        validate_id(session_id, "session_id")
        if idempotency_key is not None:
            request_hash = hashlib.sha256(
                json.dumps([task, session_id, metadata, callback_url], sort_keys=True).encode()
            ).hexdigest()
            idem = f"{self.base}:idem:{agent}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"
            value = json.dumps({"workflow_id": workflow_id, "request": request_hash})
            if not self.client.set(idem, value, nx=True, ex=IDEMPOTENCY_TTL):
                earlier = json.loads(self.client.get(idem) or "{}")
                if earlier.get("request") != request_hash:
                    raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
                return earlier["workflow_id"], False
        stamp = now_iso()
        fields = {
            "instance_id": workflow_id,
            "agent": agent,
            "session_id": session_id,
            "runtime_status": "PENDING",
            "input": task,
            "created_at": stamp,
            "last_updated_at": stamp,
            "cursor": 0,
            "log_seq": 0,
            "attempt": 1,
            "steps_completed": 0,
            "iteration": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "next": json.dumps({"kind": "start"}),
            "metadata": json.dumps(metadata or {}),
            **({"callback_url": callback_url} if callback_url else {}),
            **(extra or {}),
        }
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key(workflow_id, "meta"), mapping=fields)
        pipe.zadd(self.index_key, {workflow_id: now_ms()})
        pipe.zadd(self.active_key, {workflow_id: now_ms() + int(due_in * 1000)})
        pipe.rpush(self.session_key(agent, session_id), workflow_id)
        pipe.execute()
        return workflow_id, True

    # -- reading ------------------------------------------------------------------------
    def meta(self, workflow_id: str) -> dict[str, Any]:
        """The raw status hash, decoded (ints and JSON fields).

        Raises:
            WorkflowNotFound: no such workflow.
        """
        raw = self.client.hgetall(self.key(workflow_id, "meta"))
        if not raw:
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        return decode_meta(raw)

    def exists(self, workflow_id: str) -> bool:
        """True when the workflow has a status hash."""
        return bool(self.client.exists(self.key(workflow_id, "meta")))

    def steps(self, workflow_id: str, after: int = -1, count: int | None = None) -> list[dict[str, Any]]:
        """Step records with ``seq > after``, in order (XRANGE on the step log)."""
        entries = self.client.xrange(self.key(workflow_id, "steps"), f"(0-{after + 1}", "+", count=count)
        return [_record(fields) for _, fields in entries]

    def wait_steps(self, workflow_id: str, after: int, block_ms: int) -> list[dict[str, Any]]:
        """Like :meth:`steps`, but blocks up to ``block_ms`` for new records (XREAD BLOCK;
        less when the client's socket timeout is shorter, see ``connections.block_ms_within``)."""
        block = block_ms_within(self.client, block_ms)
        reply = self.client.xread({self.key(workflow_id, "steps"): f"0-{after + 1}"}, block=block)
        return [_record(fields) for _, entries in stream_entries(reply) for _, fields in entries]

    def is_done(self, workflow_id: str, stage: int, call_index: int) -> bool:
        """True when tool call ``call_index`` of ``stage`` is checkpointed."""
        return bool(self.client.hexists(self.key(workflow_id, "done"), f"{stage}:{call_index}"))

    # -- checkpoints --------------------------------------------------------------------
    def checkpoint(
        self,
        workflow_id: str,
        stage: int,
        record: dict[str, Any],
        *,
        mode: str,
        call_index: int | None = None,
        updates: dict[str, Any] | None = None,
        incr: dict[str, int] | None = None,
        next_step: dict[str, Any] | None = None,
        due_in: float = 30.0,
        lease_token: str | None = None,
    ) -> CheckpointResult:
        """Append ``record`` to the step log and update the status, atomically and fenced.

        Fencing: nothing is written unless the workflow is unfinished and its cursor is
        still ``stage``; a tool call's result is written at most once.

        Args:
            stage: the cursor the step started from.
            record: the step record (``seq`` is assigned here).
            mode: ``advance`` (cursor + 1), ``stay`` (a retry: cursor unchanged),
                ``tool`` (one call of a parallel group; the last one advances), ``end``
                (cursor + 1; the workflow leaves the sweeper's set in ``finish_workflow``).
            call_index: the tool call's index within the stage (mode ``tool`` / retries).
            updates: status fields to set (JSON-encoded when not strings).
            incr: integer fields to increment.
            next_step: the next step description, stored when the cursor advances.
            due_in: seconds until the sweeper may re-dispatch this workflow.
            lease_token: our lease of this step, released by the same script.
        """
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (updates or {}).items()}
        reply = self._checkpoint(
            keys=[
                self.key(workflow_id, "meta"),
                self.key(workflow_id, "steps"),
                self.key(workflow_id, "done"),
                self.active_key,
                self.lease_key(workflow_id, stage, call_index),
            ],
            args=[
                str(stage),
                "" if call_index is None else str(call_index),
                json.dumps(record),
                mode,
                json.dumps(fields) if fields else "{}",
                json.dumps(incr) if incr else "{}",
                json.dumps(next_step) if next_step is not None else "",
                now_ms() + int(due_in * 1000),
                workflow_id,
                now_iso(),
                lease_token or "",
            ],
        )
        code = int(reply[0])
        if code < 0:
            reason = {-1: "finished", -2: "stale", -3: "duplicate", -4: "missing"}[code]
            return CheckpointResult(False, -1, reply[1], False, reason)
        return CheckpointResult(True, code, reply[1], bool(int(reply[2])))

    def open_step(
        self, workflow_id: str, stage: int, call_index: int | None, token: str, ttl: float
    ) -> tuple[bool, bool, dict[str, Any] | None]:
        """Take a step's lease and read what the step needs, in one round trip.

        Returns:
            ``(leased, done, meta)``: ``leased`` False when a live owner holds the lease
            (then nothing else is read); ``done`` True when this tool call is already
            checkpointed; ``meta`` the decoded status hash, None when the workflow is gone.
        """
        done_field = "" if call_index is None else f"{stage}:{call_index}"
        reply = self._open_step(
            keys=[
                self.key(workflow_id, "meta"),
                self.lease_key(workflow_id, stage, call_index),
                self.key(workflow_id, "done"),
            ],
            args=[token, int(ttl * 1000), done_field],
        )
        if not int(reply[0]):
            return False, False, None
        flat = reply[2]
        raw = dict(zip(flat[0::2], flat[1::2], strict=True))
        return True, bool(int(reply[1])), decode_meta(raw) if raw else None

    # -- leases -------------------------------------------------------------------------
    def renew_lease(self, workflow_id: str, stage: int, call_index: int | None, token: str, ttl: float) -> bool:
        """Extend our lease by ``ttl`` seconds; False when it is no longer ours."""
        key = self.lease_key(workflow_id, stage, call_index)
        return bool(self._renew(keys=[key], args=[token, int(ttl * 1000)]))

    def release_lease(self, workflow_id: str, stage: int, call_index: int | None, token: str) -> None:
        """Delete our lease (only if still ours)."""
        self._release(keys=[self.lease_key(workflow_id, stage, call_index)], args=[token])

    def lease_owner(self, workflow_id: str, stage: int, call_index: int | None) -> str | None:
        """The token of the step lease's owner, or None when nobody holds it."""
        return self.client.get(self.lease_key(workflow_id, stage, call_index))

    def set_due(self, workflow_id: str, seconds: float) -> None:
        """Tell the sweeper to look at this workflow again in ``seconds``."""
        self.client.zadd(self.active_key, {workflow_id: now_ms() + int(seconds * 1000)}, xx=True)

    def due_workflows(self, limit: int = 100) -> list[str]:
        """Unfinished workflows whose sweep time has come."""
        return list(self.client.zrangebyscore(self.active_key, "-inf", now_ms(), start=0, num=limit))

    def active_workflows(self, limit: int = 10_000) -> list[str]:
        """Unfinished workflows, due or not (oldest due first)."""
        return list(self.client.zrange(self.active_key, 0, limit - 1))

    def forget_active(self, workflow_id: str) -> None:
        """Remove a workflow from the sweeper's set."""
        self.client.zrem(self.active_key, workflow_id)

    # -- control ------------------------------------------------------------------------
    def control(self, workflow_id: str, action: str, fields: dict[str, Any] | None = None) -> str:
        """Apply ``terminate``, ``pause`` or ``resume``; returns the new status.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidTransition: the action does not apply to the current status (409).
        """
        extra = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (fields or {}).items()}
        result, status = self._control(
            keys=[self.key(workflow_id, "meta"), self.active_key],
            args=[action, now_iso(), workflow_id, now_ms(), json.dumps(extra) if extra else "{}"],
        )
        if result == "missing":
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        if result == "refused":
            raise InvalidTransition(f"cannot {action} a workflow that is {status}", status)
        return status

    def raise_event(
        self, workflow_id: str, name: str, payload: Any, record: dict[str, Any], max_unawaited: int = 0
    ) -> bool:
        """Store event ``name`` with its JSON ``payload`` (kept even if nobody waits yet, as
        Dapr buffers events) and log ``record``; wake the workflow if it waits for it.

        Args:
            max_unawaited: how many events the workflow may hold that it was not waiting
                for when they came (0: no limit); an awaited event is always accepted.

        Returns:
            True when the workflow was waiting for this event and is RUNNING again.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidTransition: it has ended (409).
            TooManyEvents: ``max_unawaited`` events nobody waited for are held already (409).
        """
        validate_id(name, "event name")
        result, detail = self._raise_event(
            keys=[self.key(workflow_id, "meta"), self.key(workflow_id, "steps"), self.active_key],
            args=[name, json.dumps(payload), json.dumps(record), now_iso(), now_ms(), workflow_id, max_unawaited],
        )
        if result == "missing":
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        if result == "refused":
            raise InvalidTransition(f"cannot raise an event on a workflow that is {detail}", detail)
        if result == "limit":
            raise TooManyEvents(
                f"workflow {workflow_id} already holds {detail} events it did not wait for "
                f"(AGENT_PLATFORM_MAX_EVENTS_PER_WORKFLOW={max_unawaited})"
            )
        return detail == "1"

    def event(self, workflow_id: str, name: str) -> Any:
        """The payload of a raised event, or None when it was not raised."""
        raw = self.client.hget(self.key(workflow_id, "meta"), f"event:{name}")
        return None if raw is None else json.loads(raw)

    # -- sessions -----------------------------------------------------------------------
    def session_head(self, agent: str, session_id: str) -> str | None:
        """The session's oldest unfinished turn, or None."""
        return self.client.lindex(self.session_key(agent, session_id), 0)

    def leave_session(self, agent: str, session_id: str, workflow_id: str) -> str | None:
        """Remove a finished turn from its session; return the new head (to start), or None."""
        key = self.session_key(agent, session_id)
        self.client.lrem(key, 0, workflow_id)
        return self.client.lindex(key, 0)


def _record(fields: dict[str, str]) -> dict[str, Any]:
    record = json.loads(fields["r"])
    return {"seq": int(fields["seq"]), **record}
