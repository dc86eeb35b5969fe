"""The step tasks: ``agent_platform.step.start|llm|tool|finish`` (one step per task)."""

from __future__ import annotations

from typing import Any

from agent_platform.engine.dispatch import STEP_KINDS, StepMessage
from agent_platform.engine.runner import run_step

from .dispatch import task_name


def register_steps(app: Any, runtime: Any) -> None:
    """Register one Celery task per step kind on ``app``.

    Each task runs :func:`agent_platform.engine.runner.run_step`; its keyword arguments
    (agent, workflow_id, kind, step_seq, call_index, attempt, tool) show in Flower. A
    bug in a step marks the workflow FAILED and re-raises, so the task shows as failed.
    """
    for kind in STEP_KINDS:
        _register(app, runtime, kind)


def _register(app: Any, runtime: Any, kind: str) -> None:
    def step(
        self: Any,
        agent: str,
        workflow_id: str,
        kind: str,
        step_seq: int,
        call_index: int | None = None,
        attempt: int = 1,
        tool: str | None = None,
    ) -> str:
        message = StepMessage(agent, workflow_id, kind, int(step_seq), call_index, int(attempt), tool)
        return run_step(runtime, message, worker=self.request.hostname or "")

    step.__name__ = f"step_{kind}"
    step.__doc__ = f"Run the {kind} step of a workflow (see agent_platform.engine.steps.run_{kind})."
    app.task(
        name=task_name(kind),
        bind=True,
        ignore_result=True,
        acks_late=True,
        reject_on_worker_lost=True,
        typing=False,
        shared=False,
    )(step)
