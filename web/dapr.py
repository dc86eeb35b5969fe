"""The Dapr sidecar's workflow API and the legacy Dapr Agents service's ``GET /status``.

Routes (as the sidecar serves them, ``dapr/dapr`` ``pkg/http``; any component name,
e.g. ``dapr`` or ``durableTaskHub``):

- ``GET /v1.0/workflows/<component>/<instanceID>``: :func:`sidecar_status`.
- ``POST /v1.0/workflows/<component>/<instanceID>/terminate|pause|resume|purge`` and
  ``.../raiseEvent/<eventName>`` (JSON body = the event data): 202, empty body.
- ``POST /v1.0/workflows/<component>/<workflowName>/start?instanceID=<id>``: 202
  ``{"instanceID": ...}``; ``workflowName`` is the agent's name, the body its input
  (``{"task": ...}`` or a JSON string).

Dev mode serves these on the sidecar's port too (:func:`sidecar_only`), so the Dapr
Agents tutorial's ``curl localhost:3500/v1.0/workflows/durableTaskHub/<id>`` works.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from agent_platform.dapr_shapes import sidecar_status
from agent_platform.engine import control
from agent_platform.errors import AgentNotFound, ValidationError

from .errors import error_response
from .schemas import ID_PATTERN, DaprPath, ErrorResponse

dapr_tag = Tag(name="dapr", description="The Dapr sidecar's workflow API shape")
api = APIBlueprint("dapr", __name__, abp_tags=[dapr_tag], abp_responses={"4XX": ErrorResponse})

PREFIX = "/v1.0/workflows/<component>/<workflow_id>"


class DaprEventPath(DaprPath):
    """Path parameters of ``raiseEvent``."""

    event_name: str = Field(pattern=ID_PATTERN)


class DaprStartPath(BaseModel):
    """Path parameters of ``start``."""

    component: str = Field(pattern=ID_PATTERN)
    workflow_name: str = Field(pattern=ID_PATTERN)


class DaprStartQuery(BaseModel):
    """Query of ``start``: Dapr's ``instanceID`` (a new id when absent)."""

    instanceID: str | None = Field(default=None, pattern=ID_PATTERN)  # noqa: N815 - Dapr's name


def _runtime() -> Any:
    return current_app.extensions["agent_platform"]


@api.get(PREFIX)
def dapr_workflow(path: DaprPath) -> Any:
    """The status in the sidecar's shape (``instanceID``, ``runtimeStatus``, ``properties``)."""
    return sidecar_status(_runtime().find_store(path.workflow_id).state(path.workflow_id))


@api.post(PREFIX + "/terminate")
def dapr_terminate(path: DaprPath) -> Any:
    """Terminate (202, empty body, as the sidecar answers)."""
    control.terminate(_runtime(), path.workflow_id)
    return "", 202


@api.post(PREFIX + "/pause")
def dapr_pause(path: DaprPath) -> Any:
    """Pause: SUSPENDED until resume (202)."""
    control.pause(_runtime(), path.workflow_id)
    return "", 202


@api.post(PREFIX + "/resume")
def dapr_resume(path: DaprPath) -> Any:
    """Resume a paused workflow (202)."""
    control.resume(_runtime(), path.workflow_id)
    return "", 202


@api.post(PREFIX + "/purge")
def dapr_purge(path: DaprPath) -> Any:
    """Purge a finished workflow's keys (202; 409 while it runs)."""
    control.purge(_runtime(), path.workflow_id)
    return "", 202


@api.post(PREFIX + "/raiseEvent/<event_name>")
def dapr_raise_event(path: DaprEventPath) -> Any:
    """Deliver a named event; the JSON body is its data (202)."""
    payload = request.get_json(silent=True) if request.get_data(cache=True) else None
    control.raise_event(_runtime(), path.workflow_id, path.event_name, payload)
    return "", 202


@api.post("/v1.0/workflows/<component>/<workflow_name>/start")
def dapr_start(path: DaprStartPath, query: DaprStartQuery) -> Any:
    """Start a turn of the agent named ``workflowName``; 202 ``{"instanceID"}``."""
    runtime = _runtime()
    if path.workflow_name not in runtime.agents:
        raise AgentNotFound(f"no agent (workflow) {path.workflow_name!r}; served: {', '.join(runtime.agents)}")
    wf_id, _ = runtime.start_workflow(
        path.workflow_name, task_of(request.get_data(cache=True)), workflow_id=query.instanceID
    )
    return {"instanceID": wf_id}, 202


def task_of(body: bytes) -> str:
    """The turn's task from a Dapr workflow input: ``{"task": "..."}`` or a JSON string.

    Raises:
        ValidationError: no task in the body.
    """
    try:
        value = json.loads(body) if body else None
    except ValueError:
        value = None
    if isinstance(value, dict):
        value = value.get("task")
    if not isinstance(value, str) or not value:
        raise ValidationError('the workflow input must be {"task": "..."} or a JSON string')
    return value


@api.get("/status")
def service_status() -> Any:
    """``{"ok": true}``, as Dapr Agents' legacy agent service answers."""
    return {"ok": True}


def sidecar_only(app: Any, port: int) -> Any:
    """WSGI middleware: on the sidecar's ``port`` only the Dapr workflow API
    (``/v1.0/...``) answers, as on a Dapr sidecar; every other port serves ``app`` whole.

    The port is the socket's local port (gunicorn's ``gunicorn.socket``), not the Host
    header, so a client cannot reach the app's routes through the sidecar port.
    """

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        sock = environ.get("gunicorn.socket")
        local_port = sock.getsockname()[1] if sock is not None else None
        if local_port == port and not environ.get("PATH_INFO", "").startswith("/v1.0/"):
            with app.app_context():
                response = error_response(404, "not_found", "the Dapr sidecar port serves /v1.0/workflows/... only")
            return response(environ, start_response)
        return app(environ, start_response)

    return middleware
