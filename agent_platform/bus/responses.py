"""Publishing a triggered turn's answer to its caller, as a finish hook (DESIGN section 5).

A workflow started by a :class:`~agent_platform.bus.messages.TriggerAction` carries
``metadata.reply_to = {agent, workflow_id, event}``. When it reaches a final status
(COMPLETED, FAILED or TERMINATED: a finish hook of :func:`engine.lifecycle.finish_workflow`),
an :class:`~agent_platform.bus.messages.AgentTaskResponse` goes to the caller's topic. The
hook runs at most once per workflow (a ``SET NX`` marker, like the callback's), and the
message id is derived from the workflow id, so a duplicate is dropped by the receiver.

:func:`install` also makes the process's runtime known to agent tools (their ``begin``
publishes through it); ``tasks.create_celery`` calls it in workers, the web app and the bus.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ConfigurationError
from ..store.state import RuntimeStatus, WorkflowState
from .messages import AgentTaskResponse, envelope
from .streams import bus_for

log = logging.getLogger("agent_platform.bus")

MARKER_TTL = 7 * 24 * 3600
_current: Any = None


def install(runtime: Any) -> None:
    """Register :func:`publish_response` as a finish hook of ``runtime`` (once) and make
    it the runtime agent tools publish through."""
    global _current
    _current = runtime
    if publish_response not in runtime.finish_hooks:
        runtime.finish_hooks.append(publish_response)


def current_runtime() -> Any:
    """The runtime given to :func:`install` in this process.

    Raises:
        ConfigurationError: nothing was installed (no Celery app was built here).
    """
    if _current is None:
        raise ConfigurationError("the message bus is not installed in this process (tasks.create_celery does it)")
    return _current


def source_of(agent: str) -> str:
    """The CloudEvents ``source`` of messages an agent sends: ``agent-platform/<agent>``."""
    return f"agent-platform/{agent}"


def response_for(state: WorkflowState) -> AgentTaskResponse | None:
    """The answer of a finished workflow to its caller, or None when nobody called it."""
    reply_to = state.metadata.get("reply_to")
    if not isinstance(reply_to, dict) or not reply_to.get("workflow_id"):
        return None
    status = state.runtime_status
    error = None
    if status == RuntimeStatus.FAILED:
        details = state.failure_details or {}
        error = f"agent {state.agent} failed: {details.get('type', 'Error')}: {details.get('message', '')}"
    elif status == RuntimeStatus.TERMINATED:
        reason = state.termination_reason
        error = f"agent {state.agent}'s turn was terminated" + (f": {reason}" if reason else "")
    return AgentTaskResponse(
        workflow_id=reply_to["workflow_id"],
        event=reply_to["event"],
        agent=state.agent,
        source_workflow_id=state.instance_id,
        status=status.value,
        result=state.output if status == RuntimeStatus.COMPLETED else None,
        error=error,
    )


def publish_response(runtime: Any, state: WorkflowState) -> None:
    """Finish hook: send the :class:`AgentTaskResponse` of a triggered turn, once.

    The caller's consumer group is created first if missing, so the answer waits for a
    bus that is not running yet.
    """
    response = response_for(state)
    if response is None:
        return
    store = runtime.store_for(state.agent)
    if not store.client.set(store.key(state.instance_id, "bus-response"), "1", nx=True, ex=MARKER_TTL):
        return
    caller = state.metadata["reply_to"]["agent"]
    event = envelope(response, source_of(state.agent), message_id=f"{state.instance_id}:response")
    bus_for(runtime, runtime.agent(state.agent)).publish(caller, event, group=caller)
    log.info(
        "published the %s answer of %s (workflow %s) to %s for workflow %s",
        response.status,
        state.agent,
        state.instance_id,
        caller,
        response.workflow_id,
    )
