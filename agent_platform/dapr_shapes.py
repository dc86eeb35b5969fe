"""A workflow's status in the shapes Dapr users read (DESIGN section 6).

- :func:`sidecar_status`: the Dapr sidecar's workflow API
  (``GET /v1.0/workflows/<component>/<instanceID>``), as dapr/dapr's
  ``GetWorkflow`` builds it: camelCase fields, ``properties`` a map of strings.
- :func:`runner_status`: Dapr Agents' ``AgentRunner.serve`` status route
  (``GET /agent/instances/<instance_id>``), which returns the Dapr Python SDK's
  ``WorkflowState.to_json()``: snake_case fields, ``serialized_*`` as JSON text.

Both read the decoded status hash of :meth:`WorkflowStore.meta`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["serialized_input", "serialized_output", "runner_status", "sidecar_status"]


def serialized_input(meta: dict[str, Any]) -> str:
    """The workflow input as Dapr stores it: the JSON text of the start body a Dapr Agents
    service receives, ``{"task": <input>}``."""
    return json.dumps({"task": meta.get("input")})


def serialized_output(meta: dict[str, Any]) -> str | None:
    """The workflow output as Dapr stores it: the JSON text of the answer (None without one)."""
    output = meta.get("output")
    return None if output is None else json.dumps(output)


def sidecar_status(meta: dict[str, Any]) -> dict[str, Any]:
    """The Dapr sidecar's workflow status.

    Returns:
        ``{instanceID, workflowName, createdAt, lastUpdatedAt, runtimeStatus, properties}``;
        ``properties`` values are strings: ``dapr.workflow.input`` (JSON text),
        ``dapr.workflow.custom_status`` when set, ``dapr.workflow.output`` (JSON text) only
        when the workflow did not fail and has an output, and on failure
        ``dapr.workflow.failure.error_type`` and ``dapr.workflow.failure.error_message``
        (no output then, as the sidecar does).
    """
    properties: dict[str, str] = {"dapr.workflow.input": serialized_input(meta)}
    if meta.get("custom_status") is not None:
        properties["dapr.workflow.custom_status"] = json.dumps(meta["custom_status"])
    failure = meta.get("failure_details")
    output = serialized_output(meta)
    if failure:
        properties["dapr.workflow.failure.error_type"] = str(failure.get("type") or "")
        properties["dapr.workflow.failure.error_message"] = str(failure.get("message") or "")
    elif output is not None:
        properties["dapr.workflow.output"] = output
    return {
        "instanceID": meta["instance_id"],
        "workflowName": meta.get("agent"),
        "createdAt": meta.get("created_at"),
        "lastUpdatedAt": meta.get("last_updated_at"),
        "runtimeStatus": meta.get("runtime_status"),
        "properties": properties,
    }


def runner_status(meta: dict[str, Any]) -> dict[str, Any]:
    """``WorkflowState.to_json()`` of the Dapr Python SDK, as ``AgentRunner`` serves it.

    Returns:
        ``{instance_id, name, runtime_status, created_at, last_updated_at,
        serialized_input, serialized_output, serialized_custom_status, failure_details}``;
        ``failure_details`` is ``{message, error_type, stack_trace}`` or None.
    """
    failure = meta.get("failure_details")
    custom = meta.get("custom_status")
    return {
        "instance_id": meta["instance_id"],
        "name": meta.get("agent"),
        "runtime_status": meta.get("runtime_status"),
        "created_at": meta.get("created_at"),
        "last_updated_at": meta.get("last_updated_at"),
        "serialized_input": serialized_input(meta),
        "serialized_output": None if failure else serialized_output(meta),
        "serialized_custom_status": None if custom is None else json.dumps(custom),
        "failure_details": (
            {"message": failure.get("message"), "error_type": failure.get("type"), "stack_trace": None}
            if failure
            else None
        ),
    }
