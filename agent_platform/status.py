"""The public shape of a workflow's status (the Dapr shapes: :mod:`agent_platform.dapr_shapes`)."""

from __future__ import annotations

from typing import Any

from .store.state import WorkflowState

PUBLIC_FIELDS = (
    "instance_id",
    "agent",
    "session_id",
    "runtime_status",
    "input",
    "output",
    "stop_reason",
    "failure_details",
    "created_at",
    "last_updated_at",
    "started_at",
    "ended_at",
    "steps_completed",
    "iteration",
    "pending_event",
    "metadata",
)


def public_status(state: WorkflowState) -> dict[str, Any]:
    """The status JSON of ``GET /workflows/<id>`` (DESIGN section 3, "Records").

    Returns:
        A dict with every field of ``PUBLIC_FIELDS`` (None when unset) and ``usage``
        ``{"prompt_tokens": int, "completion_tokens": int}``.
    """
    status = {name: getattr(state, name) for name in PUBLIC_FIELDS}
    status["runtime_status"] = state.runtime_status.value
    status["metadata"] = dict(state.metadata)
    status["usage"] = {"prompt_tokens": state.prompt_tokens, "completion_tokens": state.completion_tokens}
    return status
