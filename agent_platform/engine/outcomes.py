"""How a step ends: one of five outcomes (modelled on openai-agents' ``NextStep*`` classes).

A step function returns an outcome; the runner checkpoints it (:meth:`plan` says how the
checkpoint moves the workflow) and then decides what follows in one ``match``
(:func:`agent_platform.engine.runner.follow_up`):

========================  ===============================================  =====================================
outcome                   the checkpoint                                   then
========================  ===============================================  =====================================
:class:`Advance`          record, step_seq + 1, the next step              dispatch (or run here) the next step
:class:`ToolAnswered`     record, one call of the group done (counter)     the last call of the group: next llm
:class:`RetryAfter`       record (``retry``), step_seq unchanged           the same step after ``delay`` seconds
:class:`Suspend`          record, SUSPENDED with ``pending_event``         nothing: an event or its timeout wakes it
:class:`End`              record(s), COMPLETED or FAILED                   finish: memory, session, hooks
========================  ===============================================  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..store.state import NextStep, RuntimeStatus
from ..store.workflows import CheckpointPlan

Record = dict[str, Any]


@dataclass(frozen=True)
class Advance:
    """The step is done; the workflow moves to ``next`` (a model call, a group of tool calls).

    Attributes:
        messages: chat messages this step adds to the turn's messages (an ``llm`` step).
    """

    record: Record
    next: NextStep
    updates: dict[str, Any] = field(default_factory=dict)
    incr: dict[str, int] = field(default_factory=dict)
    messages: tuple[dict[str, Any], ...] | None = None

    def plan(self) -> CheckpointPlan:
        return CheckpointPlan(
            "advance", dict(self.updates), dict(self.incr), self.next.to_json(), messages=self.messages
        )


@dataclass(frozen=True)
class ToolAnswered:
    """One tool call of the stage is answered (a result or an error for the model); the
    last call of the group to checkpoint moves the workflow to the next ``llm`` step."""

    record: Record
    incr: dict[str, int] = field(default_factory=dict)

    def plan(self) -> CheckpointPlan:
        return CheckpointPlan("tool", incr=dict(self.incr), next=NextStep("llm").to_json())


@dataclass(frozen=True)
class RetryAfter:
    """The step failed in a way worth another attempt: run it again after ``delay`` seconds."""

    record: Record
    delay: float
    incr: dict[str, int] = field(default_factory=dict)

    def plan(self) -> CheckpointPlan:
        return CheckpointPlan("stay", incr=dict(self.incr))


@dataclass(frozen=True)
class Suspend:
    """Wait (SUSPENDED) for the event ``pending["name"]``: an approval, another agent's
    answer. ``timeout`` seconds (None: forever) until the sweeper delivers a timeout."""

    record: Record
    pending: dict[str, Any]
    timeout: float | None = None

    def plan(self) -> CheckpointPlan:
        return CheckpointPlan("stay", suspend={"name": self.pending["name"], "pending": self.pending})


@dataclass(frozen=True)
class End:
    """The workflow reaches a final status (COMPLETED or FAILED) with this checkpoint.

    Attributes:
        extra_records: records written after the step's own (the ``finish`` record).
        messages: chat messages this step adds to the turn's messages.
    """

    record: Record
    status: RuntimeStatus
    updates: dict[str, Any] = field(default_factory=dict)
    incr: dict[str, int] = field(default_factory=dict)
    extra_records: tuple[Record, ...] = ()
    messages: tuple[dict[str, Any], ...] | None = None

    def plan(self) -> CheckpointPlan:
        updates = {"runtime_status": self.status.value, **self.updates}
        advance_by = 1 + len(self.extra_records)
        return CheckpointPlan(
            "end",
            updates,
            dict(self.incr),
            advance_by=advance_by,
            extra_records=self.extra_records,
            messages=self.messages,
        )


Outcome = Advance | ToolAnswered | RetryAfter | Suspend | End
