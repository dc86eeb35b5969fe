"""The ``callback_url`` POST: a Celery task retried with backoff, never blocking the turn."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from agent_platform.egress import resolve
from agent_platform.errors import CallbackNotAllowed
from agent_platform.keys import queue_name
from agent_platform.status import public_status
from agent_platform.store.state import WorkflowState

log = logging.getLogger("agent_platform.callbacks")

CALLBACK_TASK = "agent_platform.callback"


class CallbackRefused(Exception):
    """Raised when the callback endpoint answers 429 or 5xx (worth another attempt)."""


def post_checked(url: str, payload: Any, headers: dict[str, str], allow: str, timeout: float = 10.0) -> httpx.Response:
    """POST ``payload`` as JSON to ``url`` at the address :func:`agent_platform.egress.resolve`
    checked, so the connection goes where the check looked (no second DNS lookup).

    The request keeps the URL's host in its ``Host`` header and, for https, as the TLS
    server name (httpcore's ``sni_hostname``), so certificates are verified for that name.
    Redirects are not followed; proxies from the environment are not used (the request
    would go to the proxy, not to the checked address).

    Raises:
        CallbackNotAllowed: the URL's host is, or resolves to, an address not allowed.
        httpx.HTTPError: the connection failed (a name that does not resolve too).
    """
    try:
        target = resolve(url, allow)
    except OSError as exc:  # the resolver failed (perhaps for a moment): worth another attempt
        raise httpx.ConnectError(f"cannot resolve the callback host: {exc}") from exc
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as client:
        request = client.build_request("POST", url, json=payload, headers=headers)
        request.url = request.url.copy_with(host=target.address)
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": target.host}
        return client.send(request)


def register_callbacks(app: Any, runtime: Any) -> None:
    """Register the callback task and the finish hook that sends it once per workflow.

    Retries use Celery's ``autoretry_for`` with exponential backoff and jitter
    (``retry_backoff``), up to 8 attempts over about 10 minutes: connection errors, 429
    and 5xx. A target that is not allowed (:mod:`agent_platform.egress`), a redirect and
    other 4xx answers are final.
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
        """POST the final status JSON to the workflow's ``callback_url``; returns the HTTP
        status (0: nothing sent: no URL, or its address is not allowed)."""
        state = runtime.store_for(agent).state(workflow_id)
        url = state.callback_url
        if not url:
            return 0
        headers = {"Idempotency-Key": f"{workflow_id}:callback", "User-Agent": "agent-platform"}
        try:
            response = post_checked(url, public_status(state), headers, runtime.settings.callback_allow)
        except CallbackNotAllowed as exc:  # a refusal is final: never retried
            log.warning("callback for %s not sent: %s", workflow_id, exc)
            return 0
        if response.status_code == 429 or response.status_code >= 500:
            raise CallbackRefused(f"callback answered {response.status_code}")
        if response.is_redirect:
            log.warning("callback for %s answered %s; redirects are not followed", workflow_id, response.status_code)
        elif response.status_code >= 400:
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
