"""The Dapr shapes of the HTTP API (issue 11): the sidecar's workflow API
(``/v1.0/workflows/<component>/...``, status body and control routes), Dapr Agents'
legacy service fields (``POST /start-workflow`` ``message``, ``GET /status``) and
``AgentRunner.serve``'s routes. Real workers, real Redis, real HTTP; the model is scripted.
"""

from __future__ import annotations

import dataclasses
import json

from agent_platform.dapr_shapes import runner_status, sidecar_status
from agent_platform.store.state import RuntimeStatus, WorkflowState
from agent_platform.testing import ScriptedModel, delay, error, text

from .helpers import Api


def _sidecar(api: Api, wf: str, component: str = "dapr") -> dict:
    response = api.http.get(f"/v1.0/workflows/{component}/{wf}")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_failed_workflow_carries_the_failure_properties_and_no_output(api: Api, model: ScriptedModel) -> None:
    """Issue 11, shown 3: FAILED -> ``dapr.workflow.failure.error_type`` and
    ``error_message``, and no ``dapr.workflow.output``, as dapr/dapr's GetWorkflow builds
    it; the AgentRunner shape carries ``failure_details`` and no serialized output."""
    model.add(error(400))
    wf = api.start_turn("I want to find flights to Paris", session_id="dapr-failed")
    assert api.wait_status(wf)["runtime_status"] == "FAILED"

    body = _sidecar(api, wf, "durableTaskHub")
    assert body["runtimeStatus"] == "FAILED" and body["instanceID"] == wf
    props = body["properties"]
    assert props["dapr.workflow.failure.error_type"] == "LLMError"
    assert "400" in props["dapr.workflow.failure.error_message"]
    assert "dapr.workflow.output" not in props
    assert json.loads(props["dapr.workflow.input"]) == {"task": "I want to find flights to Paris"}
    assert all(isinstance(v, str) for v in props.values())  # a map of strings, as the sidecar's

    state = api.http.get(f"/agent/instances/{wf}").json()
    assert state["runtime_status"] == "FAILED" and state["serialized_output"] is None
    assert state["failure_details"]["error_type"] == "LLMError"
    assert "400" in state["failure_details"]["message"]


def test_a_completed_workflow_in_both_dapr_shapes(api: Api, model: ScriptedModel) -> None:
    """COMPLETED: camelCase sidecar body with the output as JSON text; ``POST
    /start-workflow`` answers Dapr Agents' ``message``; ``GET /status`` is ``{"ok": true}``."""
    model.add(text("Paris it is."))
    reply = api.http.post("/start-workflow", json={"task": "Paris?", "session_id": "dapr-done"})
    assert reply.status_code == 202
    assert reply.json()["message"] == "Workflow initiated successfully."
    wf = reply.json()["workflow_instance_id"]
    api.wait_status(wf)

    body = _sidecar(api, wf)
    assert set(body) == {"instanceID", "workflowName", "createdAt", "lastUpdatedAt", "runtimeStatus", "properties"}
    assert body["runtimeStatus"] == "COMPLETED" and body["workflowName"] == "TravelBuddy"
    assert json.loads(body["properties"]["dapr.workflow.output"]) == "Paris it is."
    assert not any(k.startswith("dapr.workflow.failure") for k in body["properties"])
    assert api.http.get("/status").json() == {"ok": True}
    assert api.http.get("/v1.0/workflows/dapr/no-such-id").status_code == 404


def test_the_sidecar_control_routes(api: Api, model: ScriptedModel) -> None:
    """``start?instanceID=`` -> 202 ``{"instanceID"}``; pause, resume, raiseEvent,
    terminate and purge -> 202 with the sidecar's empty body, and each takes effect."""
    model.add(delay(3, text("late")))
    started = api.http.post(
        "/v1.0/workflows/dapr/TravelBuddy/start?instanceID=dapr-ctl-1", json={"task": "Slowly, please"}
    )
    assert started.status_code == 202 and started.json() == {"instanceID": "dapr-ctl-1"}
    api.wait_status("dapr-ctl-1", ("RUNNING",))
    assert api.http.post("/v1.0/workflows/dapr/dapr-ctl-1/pause").status_code == 202
    assert _sidecar(api, "dapr-ctl-1")["runtimeStatus"] == "SUSPENDED"
    assert api.http.post("/v1.0/workflows/dapr/dapr-ctl-1/resume").status_code == 202
    assert api.http.post("/v1.0/workflows/dapr/dapr-ctl-1/raiseEvent/nudge", json={"x": 1}).status_code == 202
    terminated = api.http.post("/v1.0/workflows/dapr/dapr-ctl-1/terminate")
    assert terminated.status_code == 202 and terminated.content == b""
    assert _sidecar(api, "dapr-ctl-1")["runtimeStatus"] == "TERMINATED"
    assert api.http.post("/v1.0/workflows/dapr/dapr-ctl-1/purge").status_code == 202
    assert api.http.get("/v1.0/workflows/dapr/dapr-ctl-1").status_code == 404
    assert api.http.post("/v1.0/workflows/dapr/NoSuchAgent/start", json={"task": "x"}).status_code == 404
    assert api.http.post("/v1.0/workflows/dapr/TravelBuddy/start", json={"nope": 1}).status_code == 400


def test_agent_runner_terminate_route(api: Api, model: ScriptedModel) -> None:
    """``POST /agent/instances/<id>/terminate`` -> ``{"instance_id", "status": "terminated"}``."""
    model.add(delay(3, text("late")))
    wf = api.http.post("/agent/run", json={"task": "Slowly", "session_id": "runner-term"}).json()["instance_id"]
    answer = api.http.post(f"/agent/instances/{wf}/terminate")
    assert answer.json() == {"instance_id": wf, "status": "terminated"}
    assert api.http.get(f"/agent/instances/{wf}").json()["runtime_status"] == "TERMINATED"


def test_the_shapes_follow_the_sidecar_rules() -> None:
    """Pure shapes: custom status only when set; output never beside a failure."""
    meta = WorkflowState.decode(
        {
            "instance_id": "w1",
            "agent": "A",
            "session_id": "s",
            "runtime_status": "FAILED",
            "input": "hi",
            "output": "partial",  # a failed workflow never reports an output
            "failure_details": json.dumps({"type": "ToolError", "message": "boom", "step": 3}),
            "created_at": "2026-01-01T00:00:00.000Z",
            "last_updated_at": "2026-01-01T00:00:01.000Z",
        }
    )
    props = sidecar_status(meta)["properties"]
    assert props == {
        "dapr.workflow.input": '{"task": "hi"}',
        "dapr.workflow.failure.error_type": "ToolError",
        "dapr.workflow.failure.error_message": "boom",
    }
    assert runner_status(meta)["serialized_output"] is None
    running = dataclasses.replace(
        meta, runtime_status=RuntimeStatus.RUNNING, output=None, failure_details=None, custom_status="x"
    )
    assert sidecar_status(running)["properties"] == {
        "dapr.workflow.input": '{"task": "hi"}',
        "dapr.workflow.custom_status": '"x"',
    }
