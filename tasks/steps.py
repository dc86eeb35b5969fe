"""The step tasks: ``agent_platform.step.llm`` (a model call, with the turn's ``start``
before it and ``finish`` after it) and ``agent_platform.step.tool`` (a tool call)."""

from __future__ import annotations

from typing import Any

from agent_platform.engine.dispatch import LEGACY_TASK_KINDS, TASK_KINDS, StepMessage, task_kind
from agent_platform.engine.records import current_task_id
from agent_platform.engine.runner import Verdict, run_step

from .dispatch import task_name


def register_steps(app: Any, runtime: Any) -> None:
    """Register the step tasks on ``app``: ``llm`` and ``tool`` (and the names of an
    earlier version's ``start`` and ``finish`` tasks, so their queued messages still run).

    Each task runs :func:`agent_platform.engine.runner.run_step`; its keyword arguments
    (agent, workflow_id, kind, step_seq, call_index, attempt, tool) show in Flower, and its
    result names the steps it ran (``done: start llm``). A step that ends its workflow FAILED fails its task too (a bug re-raises; other failures
    raise :class:`StepFailed` with the failure details), so Flower shows it failed.
    """
    for kind in (*TASK_KINDS, *LEGACY_TASK_KINDS):
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
        kind = task_kind(kind)  # a message of an earlier version's start/finish task runs as llm
        message = StepMessage(agent, workflow_id, kind, int(step_seq), call_index, int(attempt), tool)
        token = current_task_id.set(self.request.id)  # step records name their Celery task
        try:
            report = run_step(runtime, message, worker=self.request.hostname or "")
        finally:
            current_task_id.reset(token)
        if report.verdict == Verdict.FAILED:
            raise StepFailed(_failure_text(runtime, message))
        return str(report)

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
        throws=(StepFailed,),  # an expected failure: logged without a traceback
    )(step)


class StepFailed(Exception):
    """This step ended its workflow FAILED (LLM retries exhausted, a refused request...):
    the Celery task fails with the failure details, so Flower shows it failed."""


def _failure_text(runtime: Any, message: StepMessage) -> str:
    try:
        details = runtime.store_for(message.agent).state(message.workflow_id).failure_details or {}
    except Exception:  # the status cannot be read: still fail the task
        details = {}
    what = f"{details.get('type', 'error')}: {details.get('message', 'see the workflow status')}"
    step = f"{details.get('step', message.kind)} step {details.get('step_seq', message.step_seq)}"
    return f"workflow {message.workflow_id} FAILED at {step}: {what}"
