"""A workflow's transitions outside a step: finish, wake on an event, re-dispatch.

The runner, the sweeper and the control functions import this module; none of them
imports another (no cycle): a transition lives here once.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import WorkflowNotFound
from ..store.state import TERMINAL, NextStep, RuntimeStatus, WorkflowState
from ..store.workflows import WorkflowStore
from .dispatch import StepMessage, task_kind
from .leases import owner_is_dead
from .records import StepClock
from .seam import Runtime

log = logging.getLogger("agent_platform.engine")


def stage_messages(agent: str, workflow_id: str, step_seq: int, step: NextStep) -> list[StepMessage]:
    """The step messages of a stage: one per tool call of a ``tool`` stage (a parallel
    group), else one message for the task that runs ``step.kind``."""
    if step.kind == "tool":
        return [StepMessage(agent, workflow_id, "tool", step_seq, c.index, tool=c.name) for c in step.calls]
    return [StepMessage(agent, workflow_id, task_kind(step.kind), step_seq)]


def pending_messages(store: WorkflowStore, state: WorkflowState) -> list[StepMessage]:
    """The messages of the current stage not checkpointed yet (a tool stage's unanswered calls)."""
    messages = stage_messages(state.agent, state.instance_id, state.step_seq, state.next)
    return [
        m for m in messages if m.call_index is None or not store.is_done(state.instance_id, m.step_seq, m.call_index)
    ]


def lease_held(store: WorkflowStore, message: StepMessage) -> bool:
    """True while a live owner holds the step's lease; voids the lease of a dead process of
    this host (its heartbeat stopped, but its TTL has not run out yet)."""
    owner = store.lease_owner(message.workflow_id, message.step_seq, message.call_index)
    if owner is None:
        return False
    if owner_is_dead(owner):
        log.warning(
            "voiding the lease of %s step %s held by a dead process (%s)", message.workflow_id, message.step_seq, owner
        )
        store.void_lease(message.workflow_id, message.step_seq, message.call_index, owner)
        return False
    return True


def redispatch(runtime: Runtime, store: WorkflowStore, state: WorkflowState, reason: str = "") -> int:
    """Dispatch every pending step of a workflow whose lease nobody holds; returns how many.

    Used by the sweeper (``reason`` empty: logged as a warning, a step was lost) and by
    resume and events (``reason`` says why: logged at INFO); duplicates are harmless (fencing).
    """
    messages = [m for m in pending_messages(store, state) if not lease_held(store, m)]
    for message in messages:
        if reason:
            log.info("dispatching %s step %s/%s (%s)", message.workflow_id, message.kind, message.step_seq, reason)
        else:
            log.warning(
                "re-dispatching %s step %s/%s: no worker holds it", message.workflow_id, message.kind, message.step_seq
            )
        runtime.dispatch(message)
    return len(messages)


def deliver_event(
    runtime: Runtime, store: WorkflowStore, workflow_id: str, name: str, payload: Any, worker: str
) -> bool:
    """Raise event ``name`` (one ``event`` record); when the workflow waited for it, it is
    RUNNING again and its pending step is dispatched. Returns True when it woke it.

    An event nobody waits for yet is stored with the workflow (as Dapr buffers events): a
    later wait for that name reads it at once; raising the name again replaces its
    payload. A workflow holds at most ``settings.max_events_per_workflow`` such events;
    the events it waits for always pass.

    Raises:
        WorkflowNotFound, InvalidTransition (ended), ValidationError (name),
        TooManyEvents (the cap of events nobody waited for is reached).
    """
    record = StepClock().record("event", "ok", 1, worker, {"name": name, "payload": payload})
    woke = store.raise_event(workflow_id, name, payload, record, runtime.settings.max_events_per_workflow)
    if woke:
        redispatch(runtime, store, store.state(workflow_id), reason=f"event {name}")
    return woke


def session_turn(runtime: Runtime, store: WorkflowStore, state: WorkflowState, carry: dict[str, Any]) -> bool:
    """True when the workflow is the oldest unfinished turn of its session; heals a
    session whose head finished without leaving it (a crash between the two writes).

    When the agent's memory lives on the store's Redis, the session's memory is read in
    the same round trip and left in ``carry["history"]`` for the turn's ``start``.
    """
    history = runtime.history_for(runtime.agent(state.agent))
    key_on = getattr(history, "key_on", None)
    memory_key = key_on(store.client, state.session_id) if key_on is not None else None
    while True:
        if memory_key is not None:
            head, entries = store.session_head_and_list(state.agent, state.session_id, memory_key)
            if head is None or head == state.instance_id:
                carry["history"] = history.decode(entries)  # type: ignore[attr-defined]
                return True
        else:
            head = store.session_head(state.agent, state.session_id)
            if head is None or head == state.instance_id:
                return True
        try:
            head_state = store.state(head)
        except WorkflowNotFound:  # purged: it only holds the session
            store.leave_session(state.agent, state.session_id, head)
            continue
        if head_state.runtime_status not in TERMINAL:
            store.set_due(state.instance_id, runtime.settings.dispatch_grace)
            return False
        finish_workflow(runtime, store, head_state)


def finish_workflow(runtime: Runtime, store: WorkflowStore, state: WorkflowState) -> None:
    """After a final status: run the finish hooks, then, in one round trip when the
    agent's memory lives on the store's Redis, append a COMPLETED turn to memory (once:
    the append is idempotent per workflow), free the session and leave the sweeper's set
    (:meth:`WorkflowStore.finish_turn`); then start the session's next turn.

    Safe to run again: until the sweeper's set is left, the sweeper finds the workflow
    and runs this again; the hooks are idempotent (each sets a marker before it acts).
    The hooks run first so that leaving the sweeper's set is the last write: a crash
    before it runs everything again, after it nothing is left to do but dispatch the
    next turn, which the sweeper does too (that turn is due once its start found the
    session busy).
    """
    wf = state.instance_id
    for hook in runtime.finish_hooks:
        try:
            hook(runtime, state)
        except Exception:  # a hook must not undo a final status
            log.exception("finish hook %r failed for %s", hook, wf)
    memory = None
    if state.runtime_status == RuntimeStatus.COMPLETED:
        history = runtime.history_for(runtime.agent(state.agent))
        turn = [{"role": "user", "content": state.input}, {"role": "assistant", "content": state.output or ""}]
        key_on = getattr(history, "key_on", None)
        if key_on is not None and key_on(store.client, state.session_id) is not None:
            leave = store.keys.session(state.agent, state.session_id)
            memory = history.append_call(state.session_id, wf, turn, leave=leave)  # type: ignore[attr-defined]
        else:
            history.append_turn(state.session_id, wf, turn)
    head = store.finish_turn(state.agent, state.session_id, wf, memory)
    if head is not None:
        runtime.dispatch(StepMessage(state.agent, head, task_kind("start"), 0))
