"""The public shape of a workflow's status (the Dapr shapes: :mod:`agent_platform.dapr_shapes`)."""

from __future__ import annotations

from typing import Any

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


def public_status(meta: dict[str, Any]) -> dict[str, Any]:
    """The status JSON of ``GET /workflows/<id>`` (DESIGN section 3, "Records").

    Args:
        meta: the decoded status hash from :meth:`WorkflowStore.meta`.

    Returns:
        A dict with every field of ``PUBLIC_FIELDS`` (None when unset) and ``usage``
        ``{"prompt_tokens": int, "completion_tokens": int}``.
    """
    status = {name: meta.get(name) for name in PUBLIC_FIELDS}
    status["steps_completed"] = meta.get("steps_completed", 0)
    status["iteration"] = meta.get("iteration", 0)
    status["metadata"] = meta.get("metadata") or {}
    status["usage"] = {
        "prompt_tokens": meta.get("prompt_tokens", 0),
        "completion_tokens": meta.get("completion_tokens", 0),
    }
    return status
