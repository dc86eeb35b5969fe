"""Run one step durably: check the fence, take the lease, heartbeat, checkpoint, dispatch.

This is DESIGN section 3, rules 1 and 2: a step whose ``step_seq`` is not the cursor,
whose lease is held by a live owner, or that is already checkpointed returns at once
and writes nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import redis

from ..errors import WorkflowNotFound
from ..store.workflows import TERMINAL, WorkflowStore
from .dispatch import StepMessage
from .leases import keeper, new_token
from .steps import STEP_FUNCTIONS, Outcome, StepContext, fail

log = logging.getLogger("agent_platform.engine")


def run_step(runtime: Any, message: StepMessage, worker: str = "") -> str:
    """Run ``message``'s step if it is still due; return what happened (for logs and tests).

    Returns:
        ``done``, ``retry``, ``failed`` (this step ended the workflow FAILED), or why
        nothing ran: ``missing``, ``finished``, ``suspended``, ``stale``, ``waiting`` (its
        session is busy), ``duplicate``, ``leased``, ``fenced``.

    Raises:
        Exception: a bug inside a step, after the workflow was marked FAILED (so Celery
            and Flower show the task as failed).
    """
    agent = runtime.agent(message.agent)
    store = runtime.store_for(agent)
    token = new_token()
    ttl = runtime.settings.lease_ttl
    leased, done, meta = store.open_step(message.workflow_id, message.step_seq, message.call_index, token, ttl)
    if not leased:
        return "leased"
    released = False
    error: BaseException | None = None
    try:
        verdict = (
            "missing" if meta is None else (_precheck(runtime, store, meta, message) or ("duplicate" if done else ""))
        )
        if verdict:
            return verdict
        assert meta is not None
        ctx = StepContext(agent, store, runtime.history_for(agent), runtime.settings, meta, message, worker)
        keeper().hold(store, message, token, ttl)
        try:
            outcome = STEP_FUNCTIONS[message.kind](ctx)
        except Exception as exc:
            if _infrastructure_error(exc):
                raise  # Redis away: not the workflow's fault; the sweeper runs the step again
            log.exception("step %s of %s failed", message.kind, message.workflow_id)
            error = exc
            outcome = fail(ctx, exc)
        finally:
            keeper().drop(token)
        released = True  # the checkpoint script releases the lease
        result = _commit(runtime, store, message, outcome, meta, token)
    finally:
        if not released:
            store.release_lease(message.workflow_id, message.step_seq, message.call_index, token)
    if error is not None:
        raise error
    return result


def _infrastructure_error(exc: BaseException) -> bool:
    """True for a Redis connection failure or timeout that outlasted redis-py's retries."""
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


def _precheck(runtime: Any, store: WorkflowStore, meta: dict[str, Any], message: StepMessage) -> str:
    status = meta["runtime_status"]
    if status in TERMINAL:
        return "finished"
    if status == "SUSPENDED":
        return "suspended"
    if meta["cursor"] != message.step_seq or meta["next"].get("kind") != message.kind:
        return "stale"
    if message.kind == "start" and not _session_turn(runtime, store, meta):
        return "waiting"
    return ""


def _session_turn(runtime: Any, store: WorkflowStore, meta: dict[str, Any]) -> bool:
    """True when the workflow is the oldest unfinished turn of its session; heals a
    session whose head finished without leaving it (a crash between the two writes)."""
    agent, session = meta["agent"], meta["session_id"]
    while True:
        head = store.session_head(agent, session)
        if head is None or head == meta["instance_id"]:
            return True
        try:
            head_status = store.meta(head)["runtime_status"]
        except WorkflowNotFound:  # purged: it only holds the session
            store.leave_session(agent, session, head)
            continue
        if head_status not in TERMINAL:
            store.set_due(meta["instance_id"], runtime.settings.dispatch_grace)
            return False
        if head_status == "COMPLETED":
            finish_workflow(runtime, store, head)
        else:
            store.leave_session(agent, session, head)


def _commit(
    runtime: Any, store: WorkflowStore, message: StepMessage, outcome: Outcome, meta: dict[str, Any], token: str
) -> str:
    # A wait with a timeout is due exactly when it times out (the sweeper delivers the
    # timeout then); anything else once its dispatch had time to run.
    grace = runtime.settings.dispatch_grace
    due_in = outcome.due_in if outcome.due_in is not None else (outcome.countdown or 0.0) + grace
    result = store.checkpoint(
        message.workflow_id,
        message.step_seq,
        outcome.record,
        mode=outcome.mode,
        call_index=message.call_index,
        updates=outcome.updates,
        incr=outcome.incr,
        next_step=outcome.next_step,
        due_in=due_in,
        lease_token=token,
    )
    if not result.accepted:
        log.info(
            "checkpoint of %s step %s/%s refused: %s",
            message.workflow_id,
            message.kind,
            message.step_seq,
            result.reason,
        )
        return "fenced"
    log.info(
        "workflow=%s agent=%s step=%s seq=%s stage=%s attempt=%s status=%s duration_ms=%s",
        message.workflow_id,
        message.agent,
        outcome.record["kind"],
        result.seq,
        message.step_seq,
        outcome.record["attempt"],
        outcome.record["status"],
        outcome.record["duration_ms"],
    )
    _fault(runtime, message)
    if outcome.ended:
        finish_workflow(runtime, store, message.workflow_id, {**meta, **outcome.updates})
        return "failed" if result.status == "FAILED" else "done"
    pending = outcome.updates.get("pending_event")
    early = store.event(message.workflow_id, pending["name"]) if pending and result.status == "SUSPENDED" else None
    if early is not None:
        # The event arrived between the step's look and this checkpoint: raise_event saw
        # a RUNNING workflow and did not wake it, so wake it now.
        from .control import raise_event  # control imports this module

        raise_event(runtime, message.workflow_id, pending["name"], early, worker="engine")
        return "done"
    if result.status == "RUNNING" and (result.advanced or outcome.mode == "stay"):
        runtime.dispatch_many(outcome.dispatch, countdown=outcome.countdown)
    return "retry" if outcome.mode == "stay" else "done"


def finish_workflow(runtime: Any, store: WorkflowStore, workflow_id: str, meta: dict[str, Any] | None = None) -> None:
    """After a final status: append a COMPLETED turn to memory (once: the append is
    idempotent per workflow), free the session, start its next turn, run the finish
    hooks. Safe to run again; a crash before it is healed by the session's next turn.

    Args:
        meta: the final status hash when the caller has it (saves a read).
    """
    meta = meta if meta is not None else store.meta(workflow_id)
    if meta["runtime_status"] == "COMPLETED":
        agent = runtime.agent(meta["agent"])
        runtime.history_for(agent).append_turn(
            meta["session_id"],
            workflow_id,
            [{"role": "user", "content": meta["input"]}, {"role": "assistant", "content": meta.get("output") or ""}],
        )
    head = store.leave_session(meta["agent"], meta["session_id"], workflow_id)
    if head is not None:
        runtime.dispatch(StepMessage(meta["agent"], head, "start", 0))
    for hook in runtime.finish_hooks:
        try:
            hook(runtime, meta)
        except Exception:  # a hook must not undo a final status
            log.exception("finish hook %r failed for %s", hook, workflow_id)
    store.forget_active(workflow_id)


def _fault(runtime: Any, message: StepMessage) -> None:
    """Crash tests: ``AGENT_PLATFORM_FAULT=exit_after_checkpoint:<kind>`` SIGKILLs this
    process once (per Redis) between a checkpoint and the dispatch of the next step."""
    fault = runtime.settings.fault
    if not fault or fault != f"exit_after_checkpoint:{message.kind}":
        return
    store = runtime.store_for(message.agent)
    if store.client.set(f"{store.base}:fault-fired", "1", nx=True):
        log.warning("fault injection: SIGKILL after checkpoint of %s", message.kind)
        os.kill(os.getpid(), signal.SIGKILL)
