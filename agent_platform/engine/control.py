"""Workflow control: terminate, pause, resume, purge (DESIGN section 3, rule 7).

Each is a state in the store that every step checks before it runs and when it
checkpoints, so it holds while no worker runs (no Celery revoke is involved).
"""

from __future__ import annotations

from typing import Any

from ..store.workflows import now_iso
from .records import StepClock
from .runner import finish_workflow
from .sweeper import redispatch


def terminate(runtime: Any, workflow_id: str, reason: str | None = None) -> str:
    """Mark the workflow TERMINATED; an in-flight step's checkpoint will be refused.

    Raises:
        WorkflowNotFound: no such workflow.
        InvalidTransition: it already ended.
    """
    store = runtime.find_store(workflow_id)
    fields = {"stop_reason": "terminated", **({"termination_reason": reason} if reason else {})}
    status = store.control(workflow_id, "terminate", fields)
    finish_workflow(runtime, store, workflow_id)
    return status


def pause(runtime: Any, workflow_id: str) -> str:
    """SUSPENDED: the step in flight may checkpoint, but no next step is dispatched.

    Raises:
        WorkflowNotFound, InvalidTransition (not PENDING or RUNNING).
    """
    return runtime.find_store(workflow_id).control(workflow_id, "pause", {"paused_at": now_iso()})


def resume(runtime: Any, workflow_id: str) -> str:
    """Back to the status it had before the pause, and dispatch its pending step.

    Raises:
        WorkflowNotFound, InvalidTransition (not SUSPENDED).
    """
    store = runtime.find_store(workflow_id)
    status = store.control(workflow_id, "resume")
    meta = store.meta(workflow_id)
    if status == "RUNNING" or (
        status == "PENDING" and store.session_head(meta["agent"], meta["session_id"]) == workflow_id
    ):
        redispatch(runtime, store, meta, reason="resumed")
    return status


def purge(runtime: Any, workflow_id: str) -> None:
    """Delete a finished workflow's keys.

    Raises:
        WorkflowNotFound, InvalidTransition (it has not finished).
    """
    runtime.find_store(workflow_id).purge(workflow_id)


def raise_event(runtime: Any, workflow_id: str, name: str, payload: Any, worker: str = "api") -> bool:
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
    store = runtime.find_store(workflow_id)
    record = StepClock().record("event", "ok", 1, worker, {"name": name, "payload": payload})
    woke = store.raise_event(workflow_id, name, payload, record, runtime.settings.max_events_per_workflow)
    if woke:
        redispatch(runtime, store, store.meta(workflow_id), reason=f"event {name}")
    return woke
