"""The ``callback_url`` POST: a Celery task retried with backoff, never blocking the turn."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from agent_platform.keys import queue_name
from agent_platform.status import public_status
from agent_platform.store.state import WorkflowState

log = logging.getLogger("agent_platform.callbacks")

CALLBACK_TASK = "agent_platform.callback"


class CallbackRefused(Exception):
    """Raised when the callback endpoint answers 429 or 5xx (worth another attempt)."""


def register_callbacks(app: Any, runtime: Any) -> None:
    """Register the callback task and the finish hook that sends it once per workflow.

    Retries use Celery's ``autoretry_for`` with exponential backoff and jitter
    (``retry_backoff``), up to 8 attempts over about 10 minutes.
    """

    @app.task(
        name=CALLBACK_TASK,
        bind=True,
        ignore_result=True,
        acks_late=True,
        autoretry_for=(httpx.HTTPError, CallbackRefused),
        retry_backoff=2,
        retry_backoff_max=300,
        retry_jitter=True,
        max_retries=8,
        shared=False,
    )
    def deliver_callback(self: Any, agent: str, workflow_id: str) -> int:
        """POST the final status JSON to the workflow's ``callback_url``; returns the HTTP status."""
        state = runtime.store_for(agent).state(workflow_id)
        url = state.callback_url
        if not url:
            return 0
        response = httpx.post(
            url,
            json=public_status(state),
            timeout=10.0,
            headers={"Idempotency-Key": f"{workflow_id}:callback", "User-Agent": "agent-platform"},
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise CallbackRefused(f"callback answered {response.status_code}")
        if response.status_code >= 400:
            log.warning("callback for %s answered %s; not retried", workflow_id, response.status_code)
        return response.status_code

    def send_callback(rt: Any, state: WorkflowState) -> None:
        if not state.callback_url:
            return
        store = rt.store_for(state.agent)
        if store.client.set(store.key(state.instance_id, "callback"), "1", nx=True, ex=7 * 24 * 3600):
            app.send_task(
                CALLBACK_TASK,
                kwargs={"agent": state.agent, "workflow_id": state.instance_id},
                queue=queue_name(state.agent),
            )

    runtime.finish_hooks.append(send_callback)
