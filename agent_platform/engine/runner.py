"""Run one step durably: check the fence, take the lease, heartbeat, checkpoint, dispatch.

This is DESIGN section 3, rules 1 and 2: a step whose ``step_seq`` is not the cursor,
whose lease is held by a live owner, or that is already checkpointed returns at once
and writes nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from typing import Any

from ..errors import WorkflowNotFound
from ..store.workflows import TERMINAL, WorkflowStore
from .dispatch import StepMessage
from .steps import STEP_FUNCTIONS, Outcome, StepContext, fail

log = logging.getLogger("agent_platform.engine")


class Heartbeat:
    """Renews a step lease every ``ttl / 3`` seconds in a daemon thread while the step runs."""

    def __init__(self, store: WorkflowStore, message: StepMessage, token: str, ttl: float) -> None:
        self.store, self.message, self.token, self.ttl = store, message, token, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{message.workflow_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        m = self.message
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.renew_lease(m.workflow_id, m.step_seq, m.call_index, self.token, self.ttl):
                    log.warning("lease of %s step %s/%s was lost", m.workflow_id, m.kind, m.step_seq)
                self.store.set_due(m.workflow_id, self.ttl)
            except Exception as exc:  # Redis restarting: keep trying; fencing keeps us safe
                log.warning("heartbeat of %s failed: %s", m.workflow_id, exc)


def run_step(runtime: Any, message: StepMessage, worker: str = "") -> str:
    """Run ``message``'s step if it is still due; return what happened (for logs and tests).

    Returns:
        ``done``, ``retry``, or why nothing ran: ``missing``, ``finished``, ``suspended``,
        ``stale``, ``waiting`` (its session is busy), ``duplicate``, ``leased``, ``fenced``.

    Raises:
        Exception: a bug inside a step, after the workflow was marked FAILED (so Celery
            and Flower show the task as failed).
    """
    agent = runtime.agent(message.agent)
    store = runtime.store_for(agent)
    try:
        meta = store.meta(message.workflow_id)
    except WorkflowNotFound:
        return "missing"
    verdict = _precheck(runtime, store, meta, message)
    if verdict:
        return verdict
    token = uuid.uuid4().hex
    ttl = runtime.settings.lease_ttl
    if not store.acquire_lease(message.workflow_id, message.step_seq, message.call_index, token, ttl):
        return "leased"
    error: BaseException | None = None
    try:
        store.set_due(message.workflow_id, ttl)
        # Re-read under the lease: the holder before us may have checkpointed meanwhile.
        meta = store.meta(message.workflow_id)
        verdict = _precheck(runtime, store, meta, message)
        if verdict:
            return verdict
        ctx = StepContext(agent, store, runtime.history_for(agent), runtime.settings, meta, message, worker)
        with Heartbeat(store, message, token, ttl):
            try:
                outcome = STEP_FUNCTIONS[message.kind](ctx)
            except Exception as exc:  # a bug in a step, or an unreachable store: FAILED
                log.exception("step %s of %s failed", message.kind, message.workflow_id)
                error = exc
                outcome = fail(ctx, exc)
        result = _commit(runtime, store, message, outcome)
    finally:
        store.release_lease(message.workflow_id, message.step_seq, message.call_index, token)
    if error is not None:
        raise error
    return result


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
    if message.kind == "tool" and store.is_done(message.workflow_id, message.step_seq, message.call_index or 0):
        return "duplicate"
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
        except WorkflowNotFound:
            head_status = "COMPLETED"
        if head_status not in TERMINAL:
            store.set_due(meta["instance_id"], runtime.settings.dispatch_grace)
            return False
        if head_status == "COMPLETED":
            finish_workflow(runtime, store, head)
        else:
            store.leave_session(agent, session, head)


def _commit(runtime: Any, store: WorkflowStore, message: StepMessage, outcome: Outcome) -> str:
    delay = outcome.due_in if outcome.due_in is not None else (outcome.countdown or 0.0)
    result = store.checkpoint(
        message.workflow_id,
        message.step_seq,
        outcome.record,
        mode=outcome.mode,
        call_index=message.call_index,
        updates=outcome.updates,
        incr=outcome.incr,
        next_step=outcome.next_step,
        due_in=delay + runtime.settings.dispatch_grace,
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
        "workflow=%s agent=%s step=%s seq=%s attempt=%s status=%s duration_ms=%s",
        message.workflow_id,
        message.agent,
        message.kind,
        message.step_seq,
        outcome.record["attempt"],
        outcome.record["status"],
        outcome.record["duration_ms"],
    )
    _fault(runtime, message)
    if outcome.ended:
        finish_workflow(runtime, store, message.workflow_id)
        return "done"
    if result.status == "RUNNING" and (result.advanced or outcome.mode == "stay"):
        runtime.dispatch_many(outcome.dispatch, countdown=outcome.countdown)
    return "retry" if outcome.mode == "stay" else "done"


def finish_workflow(runtime: Any, store: WorkflowStore, workflow_id: str) -> None:
    """After a final status: append a COMPLETED turn to memory (once: the append is
    idempotent per workflow), free the session, start its next turn, run the finish
    hooks. Safe to run again; a crash before it is healed by the session's next turn."""
    meta = store.meta(workflow_id)
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
