"""The inspector's actions: form POSTs that call the engine's control functions.

Each action is the API route's twin (``POST /workflows/<id>/terminate`` ...): it calls
the same function of :mod:`agent_platform.engine.control`, so the rules, and the 409
when the status forbids it, are the engine's. On success the browser is sent back to
the run page (303, Post/Redirect/Get); a refusal is an error page with the API's status.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import current_app, redirect, request, url_for
from pydantic import ValidationError as PydanticValidationError

from agent_platform.engine import control
from agent_platform.errors import ValidationError
from agent_platform.store.state import TERMINAL

from ..schemas import StartWorkflowRequest, TerminateRequest

if TYPE_CHECKING:
    from flask import Blueprint

#: Which buttons a status shows: the control script's table (``CONTROL`` in
#: agent_platform/store/scripts.py) and purge's rule. Only what is shown; the engine decides.
BUTTONS_BY_ACTION = {
    "pause": frozenset({"PENDING", "RUNNING"}),
    "resume": frozenset({"SUSPENDED"}),
    "terminate": frozenset({"PENDING", "RUNNING", "SUSPENDED"}),
    "purge": TERMINAL,
}
#: Largest JSON payload of a raised event, in characters.
MAX_PAYLOAD_CHARS = 100_000


def buttons(status: dict[str, Any]) -> dict[str, Any]:
    """What the run page offers for a public status: ``actions`` (names, in the order
    shown) and ``pending`` (the awaited event, when the workflow waits for one)."""
    runtime_status = status["runtime_status"]
    pending = status.get("pending_event") if runtime_status == "SUSPENDED" else None
    actions = [name for name, allowed in BUTTONS_BY_ACTION.items() if runtime_status in allowed]
    if pending and "resume" in actions:
        actions.remove("resume")  # it would only wait again: the event wakes it
    return {"actions": actions, "pending": pending}


def runtime() -> Any:
    """The web process's runtime (set by ``create_app``)."""
    return current_app.extensions["agent_platform"]


def _back(workflow_id: str, done: str) -> Any:
    return redirect(url_for("ui.workflow_run", workflow_id=workflow_id, done=done), 303)


def install(blueprint: Blueprint) -> None:
    """Add the action routes to the inspector's blueprint."""

    @blueprint.post("/workflows/<workflow_id>/terminate")
    def terminate(workflow_id: str) -> Any:
        """Terminate (optional ``reason``)."""
        body = TerminateRequest.model_validate({"reason": request.form.get("reason") or None})
        control.terminate(runtime(), workflow_id, body.reason)
        return _back(workflow_id, "terminate")

    @blueprint.post("/workflows/<workflow_id>/pause")
    def pause(workflow_id: str) -> Any:
        """Pause: the next step is not dispatched."""
        control.pause(runtime(), workflow_id)
        return _back(workflow_id, "pause")

    @blueprint.post("/workflows/<workflow_id>/resume")
    def resume(workflow_id: str) -> Any:
        """Resume a paused workflow."""
        control.resume(runtime(), workflow_id)
        return _back(workflow_id, "resume")

    @blueprint.post("/workflows/<workflow_id>/purge")
    def purge(workflow_id: str) -> Any:
        """Delete a finished workflow's keys, then go to the list."""
        control.purge(runtime(), workflow_id)
        return redirect(url_for("ui.workflow_list", purged=workflow_id), 303)

    @blueprint.post("/workflows/<workflow_id>/approval")
    def approval(workflow_id: str) -> Any:
        """Answer a tool approval: ``decision`` approve or deny, an optional ``reason``."""
        decision = request.form.get("decision")
        if decision not in ("approve", "deny"):
            raise ValidationError("decision must be approve or deny")
        payload: dict[str, Any] = {"approved": decision == "approve"}
        reason = (request.form.get("reason") or "").strip()
        if reason:
            payload["reason"] = reason[:1000]
        control.raise_event(runtime(), workflow_id, request.form.get("event", ""), payload, worker="ui")
        return _back(workflow_id, decision)

    @blueprint.post("/workflows/<workflow_id>/raise-event")
    def raise_event(workflow_id: str) -> Any:
        """Raise the named event with a JSON payload (empty: null)."""
        text = request.form.get("payload", "").strip()
        if len(text) > MAX_PAYLOAD_CHARS:
            raise ValidationError(f"the payload is longer than {MAX_PAYLOAD_CHARS} characters")
        try:
            payload = json.loads(text) if text else None
        except ValueError as exc:
            raise ValidationError(f"the payload is not valid JSON: {exc}") from exc
        control.raise_event(runtime(), workflow_id, request.form.get("event", ""), payload, worker="ui")
        return _back(workflow_id, "event")

    @blueprint.post("/start")
    def start() -> Any:
        """Start a turn of an agent (``agent``, ``task``, optional ``session_id``) and go to it."""
        form = {k: (request.form.get(k) or "").strip() or None for k in ("agent", "task", "session_id")}
        try:
            body = StartWorkflowRequest.model_validate(form)
        except PydanticValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValidationError(problems) from exc
        workflow_id, _ = runtime().start_workflow(body.agent or "", body.task, session_id=body.session_id)
        return redirect(url_for("ui.workflow_run", workflow_id=workflow_id), 303)
