"""The workflow state store on Redis: status hash, append-only step log, leases, fencing.

Keys are built by :class:`agent_platform.keys.WorkflowKeys` (every key of a workflow
carries the hash tag ``{<workflow_id>}``). Each write of a workflow is one Lua script
(``store/lua``) over that workflow's keys only; the sweeper's index ``<base>:active``
holds every unfinished workflow from its creation until ``finish_workflow`` removes it,
and a script's caller moves its due time beside the script (one pipeline, one round trip):
a crash between the two leaves an earlier due time, so the sweeper only looks sooner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from typing import Any

from redis.exceptions import NoScriptError

from ..connections import block_ms_within, is_cluster, stream_entries
from ..errors import IdempotencyConflict, InvalidTransition, TooManyEvents, WorkflowExists, WorkflowNotFound
from ..ids import validate_id
from ..keys import WorkflowKeys
from .plans import Chain, CheckpointPlan, CheckpointResult, OpenedStep, ScriptCall, _record, now_iso, now_ms
from .queries import WorkflowQueries
from .scripts import source
from .sessions import SessionQueues
from .state import TERMINAL, RuntimeStatus, WorkflowState
from .turn_messages import TurnMessages

IDEMPOTENCY_TTL = 24 * 3600


def now_us() -> int:
    """Microseconds since the epoch: the listing index's score (creation order; two
    creations within one millisecond, one round trip each, still list in order)."""
    return time.time_ns() // 1000


log = logging.getLogger("agent_platform.store")


class WorkflowStore(WorkflowQueries, SessionQueues):
    """Workflow state of the agents that share one ``state.redis`` component and state_key.

    Args:
        client: a ``redis.Redis`` with ``decode_responses=True``.
        prefix: the component's key prefix ("" for none).
        state_key: the agent's ``state_key``.
    """

    def __init__(self, client: Any, prefix: str = "", state_key: str = "workflow_state") -> None:
        self.client = client
        self.keys = WorkflowKeys(prefix, state_key)
        self.base = self.keys.base
        names = ("create", "open_step", "checkpoint", "renew", "release", "void_lease", "control", "raise_event")
        self._scripts = {name: client.register_script(source(name)) for name in names}
        self.turns = TurnMessages()

    def key(self, workflow_id: str, part: str) -> str:
        """Key ``part`` of a workflow (see :mod:`agent_platform.keys`)."""
        return self.keys.part(workflow_id, part)

    def _step_keys(self, workflow_id: str) -> list[str]:
        return [self.key(workflow_id, p) for p in ("meta", "steps", "done", "runs", "messages")]

    def _run(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        due: tuple[str, float] | None = None,
        before: ScriptCall | None = None,
    ) -> Any:
        """Run a script; with ``due`` (workflow id, seconds), move the workflow's due time
        in the sweeper's index in the same round trip, after the script; with ``before``,
        run that script call first, in the same round trip.

        ``before`` is a side channel's write (the token stream): its failure never fails
        this script. A server that forgot the scripts (restarted) gets them loaded and the
        round trip made again, without the side call if that one ran.
        """
        if due is None and before is None:
            return self._scripts[name](keys=keys, args=args)
        script = self._scripts[name]
        if is_cluster(self.client):  # redis-py refuses EVALSHA in a cluster pipeline: one round trip each
            if before is not None:
                _side_call(before, self.client)
            reply = script(keys=keys, args=args)
            if due is not None:
                self.client.zadd(self.keys.active, {due[0]: now_ms() + int(due[1] * 1000)}, xx=True)
            return reply
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            if before is not None:
                before.add_to(pipe)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            if due is not None:
                pipe.zadd(self.keys.active, {due[0]: now_ms() + int(due[1] * 1000)}, xx=True)
            replies = pipe.execute(raise_on_error=False)
            side, reply = (replies[0], replies[1]) if before is not None else (None, replies[0])
            if isinstance(side, NoScriptError):
                self.client.script_load(before.script.script)  # type: ignore[union-attr]
            elif isinstance(side, Exception):
                log.warning("side write before %s failed: %s: %s", name, type(side).__name__, side)
            if isinstance(reply, NoScriptError):  # a restarted Redis forgot its scripts
                self.client.script_load(script.script)
                if not isinstance(side, NoScriptError):
                    before = None  # it ran (or failed for good): not twice
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(side, NoScriptError):  # this script ran: the side write comes too late, drop it
                log.info("side write before %s dropped: its script was not loaded", name)
            return reply
        raise NoScriptError(f"script {name} could not be loaded")

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
    ) -> tuple[str, bool]:
        """Create a PENDING workflow and queue it in its session.

        Returns:
            ``(workflow_id, created)``; with an ``idempotency_key`` already used for the
            same request, the earlier id and False.

        Raises:
            IdempotencyConflict: the key was used with a different request.
            WorkflowExists: a workflow ``workflow_id`` exists (any status; a purged id is free).
            ValidationError: an id is not valid.
        """
        validate_id(workflow_id, "workflow id")
        validate_id(session_id, "session_id")
        if idempotency_key is not None:
            request_hash = hashlib.sha256(
                json.dumps([task, session_id, metadata, callback_url], sort_keys=True).encode()
            ).hexdigest()
            idem = self.keys.idempotency(agent, idempotency_key)
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
            "runtime_status": RuntimeStatus.PENDING.value,
            "input": task,
            "created_at": stamp,
            "last_updated_at": stamp,
            "step_seq": 0,
            "log_seq": 0,
            "attempt": 1,
            "steps_completed": 0,
            "iteration": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "next": json.dumps({"kind": "start"}),
            # this creation's own id: a step of an earlier workflow of the same id (purged,
            # then created again) is refused at its checkpoint
            "incarnation": uuid.uuid4().hex,
            "metadata": json.dumps(metadata or {}),
            **({"callback_url": callback_url} if callback_url else {}),
        }
        args = [item for pair in fields.items() for item in pair]
        existing = self._create(workflow_id, agent, session_id, args, due_in)
        if existing != 1:
            if idempotency_key is not None:
                self.client.delete(idem)  # the key was not used: no workflow was created
            raise WorkflowExists(
                f"a workflow {workflow_id!r} exists ({existing or 'its step log'}); purge it first", existing or None
            )
        return workflow_id, True

    def _create(self, workflow_id: str, agent: str, session_id: str, args: list[Any], due_in: float) -> Any:
        """The create script, then the workflow in the listing index, the sweeper's set
        and its session's queue: one round trip (a pipeline; two on Redis Cluster, where
        the script runs first). An id that exists already had these three written too:
        what was added for it is taken back (ZADD NX tells), and the session loses its
        last copy of the id. Returns the script's reply (1: created)."""
        script_keys = [self.key(workflow_id, "meta"), self.key(workflow_id, "steps")]
        session = self.keys.session(agent, session_id)
        if is_cluster(self.client):
            existing = self._run("create", script_keys, args)
            if existing == 1:
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(self.keys.index, {workflow_id: now_us()})
                pipe.zadd(self.keys.active, {workflow_id: now_ms() + int(due_in * 1000)})
                pipe.rpush(session, workflow_id)
                pipe.execute()
            return existing
        script = self._scripts["create"]
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
            pipe.zadd(self.keys.index, {workflow_id: now_us()}, nx=True)
            pipe.zadd(self.keys.active, {workflow_id: now_ms() + int(due_in * 1000)}, nx=True)
            pipe.rpush(session, workflow_id)
            existing, indexed, activated, _ = pipe.execute(raise_on_error=False)
            if existing == 1:
                return existing
            undo = self.client.pipeline(transaction=False)
            if indexed == 1:
                undo.zrem(self.keys.index, workflow_id)
            if activated == 1:
                undo.zrem(self.keys.active, workflow_id)
            undo.lrem(session, -1, workflow_id)
            undo.execute()
            if isinstance(existing, NoScriptError):  # a restarted Redis forgot its scripts
                self.client.script_load(script.script)
                continue
            if isinstance(existing, Exception):
                raise existing
            return existing
        raise NoScriptError("script create could not be loaded")

    # -- reading ------------------------------------------------------------------------
    def state(self, workflow_id: str) -> WorkflowState:
        """The workflow's state, decoded once.

        Raises:
            WorkflowNotFound: no such workflow.
        """
        raw = self.client.hgetall(self.key(workflow_id, "meta"))
        if not raw:
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        return WorkflowState.decode(raw)

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

    def is_done(self, workflow_id: str, step_seq: int, call_index: int) -> bool:
        """True when tool call ``call_index`` of ``step_seq`` is checkpointed."""
        return bool(self.client.hexists(self.key(workflow_id, "done"), f"{step_seq}:{call_index}"))

    # -- steps --------------------------------------------------------------------------
    def open_step(
        self,
        workflow_id: str,
        step_seq: int,
        call_index: int | None,
        token: str,
        ttl: float,
        worker: str = "",
        with_messages: bool = False,
    ) -> OpenedStep:
        """Take a step's lease, fence it and read what it needs, in one round trip
        (``store/lua/open_step.lua``); a run left open by a dead worker becomes a ``lost``
        record. ``ttl`` is in seconds."""
        meta, steps, done, runs, messages = self._step_keys(workflow_id)
        keys = [meta, self.keys.lease(workflow_id, step_seq, call_index), done, runs, steps, messages]
        index = "" if call_index is None else str(call_index)
        have = self.turns.have(workflow_id) if with_messages else 0
        args = [
            token,
            int(ttl * 1000),
            step_seq,
            index,
            worker,
            now_iso(),
            now_ms(),
            "1" if with_messages else "",
            have,
        ]
        return OpenedStep.decode(self._run("open_step", keys, args), self.turns, workflow_id)

    def checkpoint(
        self,
        workflow_id: str,
        step_seq: int,
        call_index: int | None,
        token: str,
        record: dict[str, Any],
        plan: CheckpointPlan,
        due_in: float = 30.0,
        chain: Chain | None = None,
        before: ScriptCall | None = None,
        incarnation: str = "",
    ) -> CheckpointResult:
        """Append ``record`` and move the workflow by ``plan``, atomically and fenced
        (``store/lua/checkpoint.lua``); release our lease; with ``chain``, open the next
        step too. Nothing is written unless the workflow is unfinished and still at
        ``step_seq``; a tool call's result is written at most once.

        Args:
            due_in: seconds until the sweeper looks at the workflow again.
            chain: the next step to open in the same script (its lease and message).
            before: a side write to make first in the same round trip (the step's
                last batch of tokens, :meth:`TokenChannel.batch`); its failure is logged,
                never raised.
            incarnation: the ``incarnation`` field of the state the step was opened with
                ("" : not checked); a workflow purged and created again under the same id
                has a new one, and the old run's checkpoint is refused as ``missing``.
        """
        keys = self._step_keys(workflow_id)
        keys.append(self.keys.lease(workflow_id, step_seq, call_index))
        next_seq = step_seq + plan.advance_by
        keys.append(self.keys.lease(workflow_id, next_seq, chain.call_index if chain else None))
        args = [
            step_seq,
            "" if call_index is None else str(call_index),
            token,
            json.dumps(record),
            plan.to_json(chain, self.turns.have(workflow_id) if chain and chain.with_messages else 0),
            now_iso(),
            now_ms(),
            incarnation,
        ]
        reply = self._run("checkpoint", keys, args, due=(workflow_id, due_in), before=before)
        code = int(reply[0])
        if code < 0:
            reason = {-1: "finished", -2: "stale", -3: "duplicate", -4: "missing"}[code]
            return CheckpointResult(False, -1, reply[1], False, reason)
        if reply[1] in TERMINAL:
            self.turns.forget(workflow_id)
        opened = OpenedStep.decode(reply[4], self.turns, workflow_id) if len(reply) > 4 else None
        return CheckpointResult(True, code, reply[1], bool(int(reply[2])), "", bool(int(reply[3])), opened)

    def release_step(self, workflow_id: str, step_seq: int, call_index: int | None, token: str) -> None:
        """Give back a step that did not run: our lease and our run entry go."""
        field_name = f"{step_seq}:{'' if call_index is None else call_index}"
        keys = [self.keys.lease(workflow_id, step_seq, call_index), self.key(workflow_id, "runs")]
        self._run("release", keys, [token, field_name])

    # -- leases -------------------------------------------------------------------------
    def renew_lease(self, workflow_id: str, step_seq: int, call_index: int | None, token: str, ttl: float) -> bool:
        """Extend our lease by ``ttl`` seconds; False when it is no longer ours."""
        key = self.keys.lease(workflow_id, step_seq, call_index)
        return bool(self._run("renew", [key], [token, int(ttl * 1000)]))

    def void_lease(self, workflow_id: str, step_seq: int, call_index: int | None, owner: str) -> bool:
        """Delete the lease ``owner`` holds (a process that died); False when it changed."""
        return bool(self._run("void_lease", [self.keys.lease(workflow_id, step_seq, call_index)], [owner]))

    def lease_owner(self, workflow_id: str, step_seq: int, call_index: int | None) -> str | None:
        """The token of the step lease's owner, or None when nobody holds it."""
        owner: str | None = self.client.get(self.keys.lease(workflow_id, step_seq, call_index))
        return owner

    # -- the sweeper's index ------------------------------------------------------------
    def set_due(self, workflow_id: str, seconds: float) -> None:
        """Tell the sweeper to look at this workflow again in ``seconds``."""
        self.client.zadd(self.keys.active, {workflow_id: now_ms() + int(seconds * 1000)}, xx=True)

    def due_workflows(self, limit: int = 100) -> list[str]:
        """Unfinished workflows whose sweep time has come."""
        return list(self.client.zrangebyscore(self.keys.active, "-inf", now_ms(), start=0, num=limit))

    def active_workflows(self, limit: int = 10_000) -> list[str]:
        """Unfinished workflows, due or not (oldest due first)."""
        return list(self.client.zrange(self.keys.active, 0, limit - 1))

    def forget_active(self, workflow_id: str) -> None:
        """Remove a workflow from the sweeper's set (once it is finished for good)."""
        self.client.zrem(self.keys.active, workflow_id)

    def take_sweeper_lock(self, seconds: float) -> bool:
        """Try to become this store's sweeper for ``seconds`` (``SET NX PX``)."""
        return bool(self.client.set(self.keys.sweeper_lock, "1", nx=True, px=max(100, int(seconds * 1000))))

    # -- control ------------------------------------------------------------------------
    def control(self, workflow_id: str, action: str, fields: dict[str, Any] | None = None) -> RuntimeStatus:
        """Apply ``terminate``, ``pause`` or ``resume``; returns the new status.

        Raises:
            WorkflowNotFound: no such workflow.
            InvalidTransition: the action does not apply to the current status (409).
        """
        extra = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (fields or {}).items()}
        result, status = self._run("control", [self.key(workflow_id, "meta")], [action, now_iso(), json.dumps(extra)])
        if result == "missing":
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        if result == "refused":
            raise InvalidTransition(f"cannot {action} a workflow that is {status}", status)
        return RuntimeStatus(status)

    def raise_event(
        self, workflow_id: str, name: str, payload: Any, record: dict[str, Any], max_unawaited: int = 0
    ) -> bool:
        """Store event ``name`` with its JSON ``payload`` (kept even if nobody waits yet, as
        Dapr buffers events) and log ``record``; wake the workflow if it waits for it
        (``store/lua/raise_event.lua``).

        Args:
            max_unawaited: how many events the workflow may hold that it was not waiting
                for when they came (0: no limit); an awaited event is always accepted.

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
        keys = [self.key(workflow_id, "meta"), self.key(workflow_id, "steps")]
        args = [name, json.dumps(payload), json.dumps(record), now_iso(), max_unawaited]
        result, detail = self._run("raise_event", keys, args)
        if result == "missing":
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        if result == "refused":
            raise InvalidTransition(f"cannot raise an event on a workflow that is {detail}", detail)
        if result == "limit":
            raise TooManyEvents(
                f"workflow {workflow_id} already holds {detail} events it did not wait for "
                f"(AGENT_PLATFORM_MAX_EVENTS_PER_WORKFLOW={max_unawaited})"
            )
        return bool(detail == "1")

    def event(self, workflow_id: str, name: str) -> Any:
        """The payload of a raised event, or None when it was not raised."""
        raw = self.client.hget(self.key(workflow_id, "meta"), f"event:{name}")
        return None if raw is None else json.loads(raw)

    # -- crash tests --------------------------------------------------------------------
    def fire_once(self, fault: str) -> bool:
        """True the first time it is called for ``fault`` in this store (AGENT_PLATFORM_FAULT)."""
        return bool(self.client.set(self.keys.fault_fired(fault), "1", nx=True))


def _side_call(call: ScriptCall, client: Any) -> None:
    """Run a side write on its own (Redis Cluster); its failure is logged, not raised."""
    try:
        call.run(client)
    except Exception as exc:  # noqa: BLE001 - a side channel never fails the step
        log.warning("side write failed: %s: %s", type(exc).__name__, exc)
