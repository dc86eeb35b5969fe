"""A workflow's status in the shapes Dapr users read (DESIGN section 6).

- :func:`sidecar_status`: the Dapr sidecar's workflow API
  (``GET /v1.0/workflows/<component>/<instanceID>``), as dapr/dapr's
  ``GetWorkflow`` builds it: camelCase fields, ``properties`` a map of strings.
- :func:`runner_status`: Dapr Agents' ``AgentRunner.serve`` status route
  (``GET /agent/instances/<instance_id>``), which returns the Dapr Python SDK's
  ``WorkflowState.to_json()``: snake_case fields, ``serialized_*`` as JSON text.

Both read a :class:`~agent_platform.store.state.WorkflowState`.
"""

from __future__ import annotations

import json
from typing import Any

from .store.state import WorkflowState

__all__ = ["serialized_input", "serialized_output", "runner_status", "sidecar_status"]


def serialized_input(state: WorkflowState) -> str:
    """The workflow input as Dapr stores it: the JSON text of the start body a Dapr Agents
    service receives, ``{"task": <input>}``."""
    return json.dumps({"task": state.input})


def serialized_output(state: WorkflowState) -> str | None:
    """The workflow output as Dapr stores it: the JSON text of the answer (None without one)."""
    output = state.output
    return None if output is None else json.dumps(output)


def sidecar_status(state: WorkflowState) -> dict[str, Any]:
    """The Dapr sidecar's workflow status.

    Returns:
        ``{instanceID, workflowName, createdAt, lastUpdatedAt, runtimeStatus, properties}``;
        ``properties`` values are strings: ``dapr.workflow.input`` (JSON text),
        ``dapr.workflow.custom_status`` when set, ``dapr.workflow.output`` (JSON text) only
        when the workflow did not fail and has an output, and on failure
        ``dapr.workflow.failure.error_type`` and ``dapr.workflow.failure.error_message``
        (no output then, as the sidecar does).
    """
    properties: dict[str, str] = {"dapr.workflow.input": serialized_input(state)}
    if state.custom_status is not None:
        properties["dapr.workflow.custom_status"] = json.dumps(state.custom_status)
    failure = state.failure_details
    output = serialized_output(state)
    if failure:
        properties["dapr.workflow.failure.error_type"] = str(failure.get("type") or "")
        properties["dapr.workflow.failure.error_message"] = str(failure.get("message") or "")
    elif output is not None:
        properties["dapr.workflow.output"] = output
    return {
        "instanceID": state.instance_id,
        "workflowName": state.agent,
        "createdAt": state.created_at,
        "lastUpdatedAt": state.last_updated_at,
        "runtimeStatus": state.runtime_status.value,
        "properties": properties,
    }


def runner_status(state: WorkflowState) -> dict[str, Any]:
    """``WorkflowState.to_json()`` of the Dapr Python SDK, as ``AgentRunner`` serves it.

    Returns:
        ``{instance_id, name, runtime_status, created_at, last_updated_at,
        serialized_input, serialized_output, serialized_custom_status, failure_details}``;
        ``failure_details`` is ``{message, error_type, stack_trace}`` or None.
    """
    failure = state.failure_details
    custom = state.custom_status
    return {
        "instance_id": state.instance_id,
        "name": state.agent,
        "runtime_status": state.runtime_status.value,
        "created_at": state.created_at,
        "last_updated_at": state.last_updated_at,
        "serialized_input": serialized_input(state),
        "serialized_output": None if failure else serialized_output(state),
        "serialized_custom_status": None if custom is None else json.dumps(custom),
        "failure_details": (
            {"message": failure.get("message"), "error_type": failure.get("type"), "stack_trace": None}
            if failure
            else None
        ),
    }
