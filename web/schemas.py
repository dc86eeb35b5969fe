"""Request and response models of the HTTP API (pydantic; they make /openapi.json)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from agent_platform.ids import ID_RE
from agent_platform.store.state import RuntimeStatus

ID_PATTERN = ID_RE.pattern


class StartWorkflowRequest(BaseModel):
    """Body of ``POST /start-workflow``."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(min_length=1, max_length=100_000, description="The user's message for this turn")
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Conversation session (default: the agent's)"
    )
    agent: str | None = Field(default=None, description="Agent name when the process serves several")
    metadata: dict[str, Any] | None = Field(default=None, description="Free JSON kept with the workflow")
    callback_url: HttpUrl | None = Field(default=None, description="Receives one POST with the final status")


class StartWorkflowResponse(BaseModel):
    """202 reply of ``POST /start-workflow`` (Dapr Agents' fields plus ``status_url``)."""

    message: str = "Workflow initiated successfully."
    workflow_instance_id: str
    status_url: str


class WorkflowPath(BaseModel):
    """Path parameter ``<workflow_id>``."""

    workflow_id: str = Field(pattern=ID_PATTERN)


class EventPath(WorkflowPath):
    """Path parameters of ``raise-event``."""

    event_name: str = Field(pattern=ID_PATTERN)


class DaprPath(WorkflowPath):
    """Path parameters of the Dapr-shaped status route."""

    component: str = Field(pattern=ID_PATTERN)


class ListQuery(BaseModel):
    """Query of ``GET /workflows``."""

    status: RuntimeStatus | None = Field(default=None, description="Only workflows with this runtime status")
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    limit: int = Field(default=50, ge=1, le=500)
    cursor: int = Field(default=0, ge=0, le=10**12)


class TerminateRequest(BaseModel):
    """Optional body of ``POST /workflows/<id>/terminate``."""

    reason: str | None = Field(default=None, max_length=1000)


class Usage(BaseModel):
    """Token usage summed over the turn's model calls."""

    prompt_tokens: int
    completion_tokens: int


class WorkflowStatus(BaseModel):
    """``GET /workflows/<id>``."""

    instance_id: str
    agent: str | None = None
    session_id: str | None = None
    runtime_status: RuntimeStatus
    input: str | None = None
    output: str | None = None
    stop_reason: str | None = None
    failure_details: dict[str, Any] | None = None
    created_at: str | None = None
    last_updated_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    steps_completed: int = 0
    iteration: int = 0
    usage: Usage
    pending_event: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The inside of every error reply."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx reply: ``{"error": {"code", "message"}}``."""

    error: ErrorBody
