"""Workflow control: terminate, pause, resume, purge, raise-event (DESIGN section 3, rule 7).

Each is a state in the store that every step checks when it opens and when it
checkpoints, so it holds while no worker runs (no Celery revoke is involved).
"""

from __future__ import annotations

from typing import Any

from ..store.state import RuntimeStatus
from ..store.workflows import now_iso
from . import lifecycle
from .seam import Runtime


def terminate(runtime: Runtime, workflow_id: str, reason: str | None = None) -> RuntimeStatus:
    """Mark the workflow TERMINATED; an in-flight step's checkpoint will be refused.

    Raises:
        WorkflowNotFound: no such workflow.
        InvalidTransition: it already ended.
    """
    store = runtime.find_store(workflow_id)
    fields = {"stop_reason": "terminated", **({"termination_reason": reason} if reason else {})}
    status = store.control(workflow_id, "terminate", fields)
    lifecycle.finish_workflow(runtime, store, store.state(workflow_id))
    return status


def pause(runtime: Runtime, workflow_id: str) -> RuntimeStatus:
    """SUSPENDED: the step in flight may checkpoint, but no next step is dispatched.

    Raises:
        WorkflowNotFound, InvalidTransition (not PENDING or RUNNING).
    """
    return runtime.find_store(workflow_id).control(workflow_id, "pause", {"paused_at": now_iso()})


def resume(runtime: Runtime, workflow_id: str) -> RuntimeStatus:
    """Back to the status it had before the pause, and dispatch its pending step.

    Raises:
        WorkflowNotFound, InvalidTransition (not SUSPENDED).
    """
    store = runtime.find_store(workflow_id)
    status = store.control(workflow_id, "resume")
    state = store.state(workflow_id)
    if status == RuntimeStatus.RUNNING or (
        status == RuntimeStatus.PENDING and store.session_head(state.agent, state.session_id) == workflow_id
    ):
        lifecycle.redispatch(runtime, store, state, reason="resumed")
    return status


def purge(runtime: Runtime, workflow_id: str) -> None:
    """Delete a finished workflow's keys; its session's memory forgets that it appended
    (the messages stay), so that a workflow created again under the same id is remembered.

    Raises:
        WorkflowNotFound, InvalidTransition (it has not finished).
    """
    store = runtime.find_store(workflow_id)
    state = store.state(workflow_id)
    store.purge(workflow_id)
    forget = getattr(runtime.history_for(runtime.agent(state.agent)), "forget_writer", None)
    if forget is not None:
        forget(state.session_id, workflow_id)


def raise_event(runtime: Runtime, workflow_id: str, name: str, payload: Any, worker: str = "api") -> bool:
    """Deliver event ``name`` (a tool approval, another agent's response...); if the
    workflow waits for it, it is RUNNING again and its pending step is dispatched.

    An event nobody waits for yet is stored with the workflow (as Dapr buffers events)
    and logged as an ``event`` record: a later wait for that name reads it at once;
    raising the name again replaces its payload. It stays until the workflow is purged.
    A workflow holds at most ``settings.max_events_per_workflow`` such events (each
    raise that did not wake it counts); the events it waits for always pass.

    Returns:
        True when the event woke the workflow (False: stored for a later wait).

    Raises:
        WorkflowNotFound, InvalidTransition (the workflow has ended), ValidationError (name),
        TooManyEvents (the cap of events nobody waited for is reached).
    """
    return lifecycle.deliver_event(runtime, runtime.find_store(workflow_id), workflow_id, name, payload, worker)
