"""What a step sees (:class:`StepContext`) and the outcome that fails a workflow."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..agent import AssistantAgent
from ..memory.base import SessionHistory
from ..settings import Settings
from ..store.state import RuntimeStatus, WorkflowState
from ..store.workflows import WorkflowStore, now_iso
from .dispatch import StepMessage
from .outcomes import End
from .records import StepClock


@dataclass
class StepContext:
    """One run of one step: the agent, its stores, the workflow's state and the message.

    Attributes:
        attempt: the attempt this run is (1 + retries + lost runs, counted by the store).
        lost: runs of this step whose worker died before their checkpoint.
        messages: the turn's messages folded so far and records: the step records after
            them (``llm`` steps; None when not read).
        carry: what a step leaves to the next one run by the same task (the history
            ``start`` read, for the model call that follows).
    """

    agent: AssistantAgent
    store: WorkflowStore
    history: SessionHistory
    settings: Settings
    state: WorkflowState
    message: StepMessage
    worker: str
    attempt: int = 1
    lost: int = 0
    messages: list[dict[str, Any]] | None = None
    records: list[dict[str, Any]] | None = None
    carry: dict[str, Any] = field(default_factory=dict)
    clock: StepClock = field(default_factory=StepClock)

    @property
    def workflow_id(self) -> str:
        return self.message.workflow_id

    @property
    def step_seq(self) -> int:
        return self.message.step_seq

    @property
    def kind(self) -> str:
        """The kind of the step this run does (``start``, ``llm``, ``tool``, ``finish``)."""
        return self.state.next.kind

    def record(self, status: str, data: dict[str, Any], attempt: int | None = None) -> dict[str, Any]:
        return self.clock.record(self.kind, status, self.attempt if attempt is None else attempt, self.worker, data)


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with equal jitter (AWS's "equal jitter": half the ceiling plus a
    random half, so retries never pile up at once), never shorter than ``Retry-After``.

    Args:
        attempt: the attempt that failed (1, 2, ...).
        base: seconds of the first backoff ceiling.
        cap: the largest ceiling in seconds.
        retry_after: the server's ``Retry-After`` in seconds, honoured as a floor.

    Returns:
        Seconds to wait, in ``[ceiling / 2, ceiling]`` (or ``retry_after`` when longer).
    """
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def fail(ctx: StepContext, exc: BaseException) -> End:
    """The outcome that ends a workflow FAILED with ``failure_details`` naming the step."""
    details = {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "step": ctx.kind,
        "step_seq": ctx.step_seq,
    }
    return End(
        ctx.record("error", {"error": details["message"], "error_type": details["type"]}),
        RuntimeStatus.FAILED,
        updates={"failure_details": details, "ended_at": now_iso()},
    )
