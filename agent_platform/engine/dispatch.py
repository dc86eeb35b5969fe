"""How the engine asks for the next step to run: a protocol the Celery layer implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

#: The Celery tasks of the engine, one per kind of work (``agent_platform.step.<kind>``):
#: a model call or a tool call. ``start`` and ``finish`` ride along with the ``llm`` task
#: before and after them (no broker hop without work, DESIGN section 3).
TASK_KINDS = ("llm", "tool")
#: Task names of earlier versions, still served so that their queued messages run.
LEGACY_TASK_KINDS = ("start", "finish")


def task_kind(step_kind: str) -> str:
    """The task that runs a step of kind ``step_kind``: ``tool`` for a tool call, ``llm``
    for the rest (``start``, ``llm``, ``finish``)."""
    return "tool" if step_kind == "tool" else "llm"


@dataclass(frozen=True)
class StepMessage:
    """The body of a step task: which step of which workflow to run.

    Attributes:
        agent: the agent's name (its queue is ``agent.<name>``).
        workflow_id: the workflow instance id.
        kind: the task's kind (see :data:`TASK_KINDS`).
        step_seq: the workflow's step_seq this step runs at (the fencing token).
        call_index: the tool call's index in its assistant message (``tool`` only).
        attempt: 1 for a first attempt (informational: the store counts attempts).
        tool: the tool's name (``tool`` only; sets the task's time limit, shown in Flower).
    """

    agent: str
    workflow_id: str
    kind: str
    step_seq: int
    call_index: int | None = None
    attempt: int = 1
    tool: str | None = None

    def to_kwargs(self) -> dict[str, Any]:
        """JSON keyword arguments of the Celery task (shown by Flower)."""
        data = asdict(self)
        for optional in ("call_index", "tool"):
            if data[optional] is None:
                del data[optional]
        return data


class Dispatcher(Protocol):
    """Enqueues step messages (implemented on Celery by ``tasks.dispatch``)."""

    def dispatch(self, message: StepMessage, countdown: float | None = None, time_limit: float | None = None) -> None:
        """Enqueue ``message``, to run after ``countdown`` seconds, with a soft time limit."""
        ...

    def dispatch_group(
        self, messages: Sequence[tuple[StepMessage, float | None]], countdown: float | None = None
    ) -> None:
        """Enqueue several messages (with their time limits) as one group."""
        ...
