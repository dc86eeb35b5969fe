"""``AgentRunner``: Dapr Agents 1.x's way to run and serve a ``DurableAgent``, on dev mode.

Dapr Agents' runner (``dapr_agents/workflow/runners/agent.py``) hosts the agent's
workflow in the calling process beside a Dapr sidecar. Here the runner starts dev mode
for the agent object (:class:`~agent_platform.dev_service.DevService`: Redis, the model
when none is configured, a forked Celery worker, and for :meth:`AgentRunner.serve` the
web app with the ``/agent/...`` routes), so the agent may be built anywhere.

Example:
    >>> runner = AgentRunner()  # doctest: +SKIP
    >>> answer = await runner.run(agent, {"task": "What is the weather in London?"})  # doctest: +SKIP
    >>> runner.shutdown()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

from .agent import AssistantAgent
from .dev_service import DevService
from .devmode import app_port, give_dispatcher
from .errors import ValidationError
from .follow import follow_steps
from .runtime import Runtime
from .store.state import RuntimeStatus

__all__ = ["AgentRunner"]


def _task(payload: str | dict[str, Any] | None) -> tuple[str, str | None]:
    """``(task, session_id)`` from a Dapr Agents payload: a string or ``{"task", "session_id"?}``."""
    if isinstance(payload, str) and payload:
        return payload, None
    if isinstance(payload, dict) and isinstance(payload.get("task"), str) and payload["task"]:
        return payload["task"], payload.get("session_id")
    raise ValidationError('the payload must be a task string or {"task": "..."}')


class AgentRunner:
    """Runs and serves agents in dev mode, with Dapr Agents' ``AgentRunner`` methods.

    Args:
        name: a name for log lines (Dapr Agents' default ``agent-runner``).
        timeout_in_seconds: how long :meth:`run` waits for an answer by default.
        **_: Dapr-only options (``wf_client``, ``auto_install_signals``...), ignored.
    """

    def __init__(self, *, name: str = "agent-runner", timeout_in_seconds: int = 600, **_: Any) -> None:
        self.name = name
        self.timeout_in_seconds = timeout_in_seconds
        self._services: dict[str, DevService] = {}
        self._clients: dict[str, Runtime] = {}

    def _service(self, agent: AssistantAgent, port: int = 0, host: str = "127.0.0.1") -> DevService:
        service = self._services.get(agent.name)
        if service is None or service.finished:
            service = self._services[agent.name] = DevService([agent], port=port, host=host)
        return service

    def _client(self, agent: AssistantAgent) -> Runtime:
        """A runtime in this process that can dispatch (a Celery app on the dev broker)."""
        dev = self._service(agent).start_background().wait_ready(timeout=300)
        runtime = self._clients.get(agent.name)
        if runtime is None or dev.runtime is not runtime:
            assert dev.runtime is not None
            runtime = self._clients[agent.name] = give_dispatcher(dev.runtime)
        return runtime

    async def run(
        self,
        agent: AssistantAgent,
        payload: str | dict[str, Any] | None = None,
        *,
        instance_id: str | None = None,
        wait: bool = True,
        timeout_in_seconds: float | None = None,
        **_: Any,
    ) -> str | None:
        """Start one turn of ``agent`` (dev mode starts on first use).

        Args:
            agent: the agent object.
            payload: the task, as a string or ``{"task": "...", "session_id"?: "..."}``.
            instance_id: the workflow id (default: a new one).
            wait: wait for the end of the turn (else return the instance id at once).
            timeout_in_seconds: the longest wait (default the runner's).

        Returns:
            With ``wait``: the answer (``output``), or None when the turn did not
            complete (FAILED, TERMINATED) or did not end in time, as Dapr Agents returns
            None on timeout or error. Without: the instance id.

        Raises:
            ValidationError: the payload names no task.
            WorkflowExists: a workflow ``instance_id`` exists (purge it first).
            ConfigurationError: dev mode could not start.
        """
        task, session_id = _task(payload)
        runtime = await asyncio.to_thread(self._client, agent)
        wf_id, _created = runtime.start_workflow(agent.name, task, session_id=session_id, workflow_id=instance_id)
        if not wait:
            return wf_id
        timeout = timeout_in_seconds or self.timeout_in_seconds
        return await asyncio.to_thread(self._answer, runtime, agent, wf_id, timeout)

    @staticmethod
    def _answer(runtime: Runtime, agent: AssistantAgent, wf_id: str, timeout: float) -> str | None:
        store = runtime.store_for(agent)
        try:
            for _record in follow_steps(store, wf_id, timeout=timeout):
                pass
        except TimeoutError:
            return None
        state = store.state(wf_id)
        return state.output if state.runtime_status == RuntimeStatus.COMPLETED else None

    def run_sync(self, agent: AssistantAgent, payload: str | dict[str, Any] | None = None, **kwargs: Any) -> str | None:
        """:meth:`run` with ``wait=True`` from synchronous code (no event loop running)."""
        return asyncio.run(self.run(agent, payload, wait=True, **kwargs))  # type: ignore[return-value]

    def serve(self, agent: AssistantAgent, *, host: str = "127.0.0.1", port: int = 8001, **_: Any) -> DevService:
        """Serve ``agent`` over HTTP: ``POST /agent/run``, ``GET /agent/instances/<id>``,
        ``.../terminate``, ``.../purge`` (and the rest of the API), until Ctrl-C or SIGTERM.

        Blocks like Dapr Agents' ``serve()`` when no event loop runs; inside one it serves
        in the background and returns the (awaitable) service. ``$AGENT_PLATFORM_APP_PORT``
        overrides ``port``. Dapr Agents binds ``0.0.0.0`` by default; dev mode binds
        127.0.0.1 unless ``host`` says otherwise.

        Returns:
            The :class:`DevService` (stopped once this returns in the blocking form).
        """
        service = self._service(agent, port=app_port(port), host=host)
        return service.launch()

    def shutdown(self, agent: AssistantAgent | None = None) -> None:
        """Stop dev mode of ``agent`` (default: of every agent this runner started)."""
        names = [agent.name] if agent is not None else list(self._services)
        for name in names:
            service = self._services.pop(name, None)
            self._clients.pop(name, None)
            if service is not None:
                service.stop()
