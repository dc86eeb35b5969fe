"""Workflow routes: start, status, steps, control, list, purge (DESIGN section 6)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for
from flask_openapi3 import APIBlueprint, Tag

from agent_platform.egress import check_at_start
from agent_platform.engine import control
from agent_platform.errors import AgentNotFound, ValidationError
from agent_platform.status import public_status
from agent_platform.store import queries

from .schemas import (
    ErrorResponse,
    EventPath,
    ListQuery,
    StartWorkflowRequest,
    StartWorkflowResponse,
    TerminateRequest,
    WorkflowPath,
    WorkflowStatus,
)

workflows_tag = Tag(name="workflows", description="Start turns and follow them")
api = APIBlueprint("workflows", __name__, abp_tags=[workflows_tag], abp_responses={"4XX": ErrorResponse})


def runtime() -> Any:
    """The process's :class:`agent_platform.runtime.Runtime` (set by ``create_app``)."""
    return current_app.extensions["agent_platform"]


def choose_agent(name: str | None) -> str:
    """The agent a start names, or the only one served.

    Raises:
        AgentNotFound, ValidationError (several agents and none named).
    """
    agents = runtime().agents
    if name:
        if name not in agents:
            raise AgentNotFound(f"no agent {name!r} is served here; served: {', '.join(agents)}")
        return name
    if len(agents) != 1:
        raise ValidationError(f"this service runs several agents ({', '.join(agents)}): name one in 'agent'")
    return next(iter(agents))


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header (1-255 characters) or None.

    Raises:
        ValidationError: the header is empty or too long.
    """
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 255):
        raise ValidationError("Idempotency-Key must be 1-255 characters")
    return key


@api.post("/start-workflow", responses={202: StartWorkflowResponse})
def start_workflow(body: StartWorkflowRequest) -> Any:
    """Start one conversation turn; 202 with its id. Honours an ``Idempotency-Key`` header."""
    key = idempotency_key()
    callback_url = str(body.callback_url) if body.callback_url else None
    if callback_url:  # 422 for an internal address known now; names are checked again at send time
        check_at_start(callback_url, runtime().settings.callback_allow)
    wf_id, created = runtime().start_workflow(
        choose_agent(body.agent),
        body.task,
        session_id=body.session_id,
        metadata=body.metadata,
        callback_url=callback_url,
        idempotency_key=key,
    )
    status_url = url_for("workflows.get_workflow", workflow_id=wf_id, _external=True)
    # Dapr Agents' legacy agent service answers {message, workflow_instance_id}.
    reply = {"message": "Workflow initiated successfully.", "workflow_instance_id": wf_id, "status_url": status_url}
    return reply, 202, {"Location": status_url, **({} if created else {"Idempotent-Replayed": "true"})}


@api.get("/workflows/<workflow_id>", responses={200: WorkflowStatus})
def get_workflow(path: WorkflowPath) -> Any:
    """The workflow's status, input, output, failure details, counters and usage."""
    return public_status(runtime().find_store(path.workflow_id).state(path.workflow_id))


@api.get("/workflows/<workflow_id>/steps")
def get_steps(path: WorkflowPath) -> Any:
    """The checkpoint log: one record per step attempt, in order."""
    store = runtime().find_store(path.workflow_id)
    return {"workflow_instance_id": path.workflow_id, "steps": store.steps(path.workflow_id)}


@api.get("/workflows")
def list_workflows(query: ListQuery) -> Any:
    """Workflows newest first, by status and session; ``next_cursor`` pages on."""
    found, next_cursor = queries.list_workflows(
        runtime().stores(), query.status, query.session_id, query.limit, query.cursor
    )
    return {"workflows": [public_status(s) for s in found], "next_cursor": next_cursor}


@api.post("/workflows/<workflow_id>/terminate")
def terminate_workflow(path: WorkflowPath) -> Any:
    """Terminate: no further step runs, an in-flight step's checkpoint is refused."""
    body = TerminateRequest.model_validate(request.get_json(silent=True) or {})
    status = control.terminate(runtime(), path.workflow_id, body.reason)
    return {"workflow_instance_id": path.workflow_id, "runtime_status": status}, 202


@api.post("/workflows/<workflow_id>/pause")
def pause_workflow(path: WorkflowPath) -> Any:
    """Pause (SUSPENDED): the next step is not dispatched until resume."""
    status = control.pause(runtime(), path.workflow_id)
    return {"workflow_instance_id": path.workflow_id, "runtime_status": status}, 202


@api.post("/workflows/<workflow_id>/resume")
def resume_workflow(path: WorkflowPath) -> Any:
    """Resume a paused workflow."""
    status = control.resume(runtime(), path.workflow_id)
    return {"workflow_instance_id": path.workflow_id, "runtime_status": status}, 202


@api.post("/workflows/<workflow_id>/raise-event/<event_name>")
def raise_event(path: EventPath) -> Any:
    """Deliver a named event with a JSON body (e.g. ``{"approved": true}`` for a tool approval)."""
    payload = request.get_json(silent=True) if request.get_data(cache=True) else None
    woke = control.raise_event(runtime(), path.workflow_id, path.event_name, payload)
    return {"workflow_instance_id": path.workflow_id, "event": path.event_name, "woke": woke}, 202


@api.delete("/workflows/<workflow_id>")
def purge_workflow(path: WorkflowPath) -> Any:
    """Purge a finished workflow's keys; 409 while it runs."""
    control.purge(runtime(), path.workflow_id)
    return "", 204
