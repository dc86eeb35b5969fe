"""The routes of Dapr Agents 1.x's ``AgentRunner.serve`` (``dapr_agents/workflow/runners/agent.py``):

- ``POST /agent/run`` (body: the workflow payload, ``{"task": "..."}``) ->
  ``{"instance_id", "status_url"}``;
- ``GET /agent/instances/<instance_id>`` -> the Dapr SDK's ``WorkflowState.to_json()``
  (:func:`runner_status`);
- ``POST /agent/instances/<instance_id>/terminate`` -> ``{"instance_id", "status": "terminated"}``;
- ``POST /agent/instances/<instance_id>/purge`` -> ``{"instance_id", "status": "purged"}``.

Dapr Agents answers ``POST /agent/run`` with 200; so do we (it schedules, like 202).
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from agent_platform.dapr_shapes import runner_status
from agent_platform.engine import control

from .routes import choose_agent, idempotency_key
from .schemas import ID_PATTERN, ErrorResponse

runner_tag = Tag(name="agent-runner", description="Dapr Agents' AgentRunner.serve routes")
api = APIBlueprint("agent_runner", __name__, abp_tags=[runner_tag], abp_responses={"4XX": ErrorResponse})


class RunRequest(BaseModel):
    """Body of ``POST /agent/run``: the payload a Dapr Agents workflow entry receives."""

    task: str = Field(min_length=1, max_length=100_000, description="The user's message for this turn")
    session_id: str | None = Field(default=None, pattern=ID_PATTERN, description="Conversation session")
    agent: str | None = Field(default=None, description="Agent name when the service runs several")


class InstancePath(BaseModel):
    """Path parameter ``<instance_id>``."""

    instance_id: str = Field(pattern=ID_PATTERN)


def _runtime() -> Any:
    return current_app.extensions["agent_platform"]


@api.post("/agent/run")
def agent_run(body: RunRequest) -> Any:
    """Schedule one turn of the served agent; ``{instance_id, status_url}``."""
    wf_id, _ = _runtime().start_workflow(
        choose_agent(body.agent), body.task, session_id=body.session_id, idempotency_key=idempotency_key()
    )
    return {"instance_id": wf_id, "status_url": f"/agent/instances/{wf_id}"}


@api.get("/agent/instances/<instance_id>")
def agent_instance(path: InstancePath) -> Any:
    """The instance's status as the Dapr SDK's ``WorkflowState.to_json()`` (snake_case)."""
    return runner_status(_runtime().find_store(path.instance_id).state(path.instance_id))


@api.post("/agent/instances/<instance_id>/terminate")
def agent_terminate(path: InstancePath) -> Any:
    """Terminate the instance."""
    control.terminate(_runtime(), path.instance_id, "Terminated by user request")
    return {"instance_id": path.instance_id, "status": "terminated"}


@api.post("/agent/instances/<instance_id>/purge")
def agent_purge(path: InstancePath) -> Any:
    """Purge a finished instance's keys (409 while it runs)."""
    control.purge(_runtime(), path.instance_id)
    return {"instance_id": path.instance_id, "status": "purged"}
