"""A workflow's state: the status enum, the next step, and the status hash decoded once.

The status hash (``<base>:{<id>}:meta``) is decoded into a frozen :class:`WorkflowState`
by :meth:`WorkflowState.decode`; nothing else reads its fields by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


class RuntimeStatus(StrEnum):
    """A workflow's ``runtime_status`` (Dapr's names, DESIGN section 3 rule 6)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"


#: The final statuses: nothing runs after them.
TERMINAL = frozenset({RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.TERMINATED})


class RecordStatus(StrEnum):
    """A step record's ``status``: ``lost`` is a run whose worker died before its checkpoint."""

    OK = "ok"
    ERROR = "error"
    RETRY = "retry"
    LOST = "lost"


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call of a ``tool`` stage: its index in the assistant message, id, name,
    the arguments sent back to the model (JSON text) and, when they differ, the arguments
    as received (what the tool step validates)."""

    index: int
    id: str
    name: str
    arguments: str
    raw_arguments: str | None = None

    @classmethod
    def of(cls, index: int, call: Any) -> ToolCallSpec:
        """From a :class:`~agent_platform.llm.reply.ToolCall` at ``index``."""
        return cls(index, call.id, call.name, call.arguments, getattr(call, "raw_arguments", None))

    @property
    def received(self) -> str:
        """The arguments as the model sent them (what the tool validates)."""
        return self.raw_arguments if self.raw_arguments is not None else self.arguments

    def to_json(self) -> dict[str, Any]:
        data = {"index": self.index, "id": self.id, "name": self.name, "arguments": self.arguments}
        if self.raw_arguments is not None:
            data["raw_arguments"] = self.raw_arguments
        return data


@dataclass(frozen=True)
class NextStep:
    """The step a workflow runs at its current ``step_seq``.

    Attributes:
        kind: ``start``, ``llm``, ``tool`` or ``finish``.
        calls: the tool calls of a ``tool`` stage (run as a parallel group).
        output, stop_reason: what a ``finish`` step completes the turn with.
    """

    kind: str
    calls: tuple[ToolCallSpec, ...] = ()
    output: str = ""
    stop_reason: str = "stop"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NextStep:
        calls = tuple(
            ToolCallSpec(c["index"], c["id"], c["name"], c["arguments"], c.get("raw_arguments"))
            for c in data.get("calls") or ()
        )
        return cls(data["kind"], calls, data.get("output") or "", data.get("stop_reason") or "stop")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        if self.calls:
            data["calls"] = [c.to_json() for c in self.calls]
        if self.kind == "finish":
            data.update(output=self.output, stop_reason=self.stop_reason)
        return data


#: Fields of the hash that hold integers, and JSON.
INT_FIELDS = frozenset(
    {
        "steps_completed",
        "iteration",
        "prompt_tokens",
        "completion_tokens",
        "step_seq",
        "log_seq",
        "attempt",
        "history_len",
        "tools_remaining",
        "tool_rounds",
        "folded_seq",
    }
)
JSON_FIELDS = frozenset({"failure_details", "pending_event", "metadata", "next", "custom_status"})


@dataclass(frozen=True)
class WorkflowState:
    """The status hash of one workflow, decoded (DESIGN section 3, "Records").

    Attributes:
        instance_id, agent, session_id, input: what the turn is.
        runtime_status: see :class:`RuntimeStatus`.
        step_seq: the fencing token: the position of the next step in the turn's chain;
            a step message whose ``step_seq`` differs is stale.
        next: the step to run at ``step_seq``.
        log_seq: records in the step log so far (the next record's ``seq``).
        attempt: attempt of the current ``llm`` step (retries counted).
        history_len: memory messages the turn sees (fixed by ``start``).
        tools_remaining: tool calls of the current stage not checkpointed yet.
        tool_rounds: ``llm`` steps of this turn that called tools.
        folded_seq: the step log is folded into the ``messages`` list up to this seq.
        events: raised events by name (payloads).
        custom_status: Dapr's custom status (JSON), when something set one.
        retries: failed attempts of each tool call, by ``<step_seq>:<index>``.
        fields: every other field of the hash, as stored (text).
    """

    instance_id: str
    agent: str
    session_id: str
    runtime_status: RuntimeStatus
    input: str = ""
    step_seq: int = 0
    next: NextStep = NextStep("start")
    log_seq: int = 0
    attempt: int = 1
    steps_completed: int = 0
    iteration: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    history_len: int = 0
    tools_remaining: int = 0
    tool_rounds: int = 0
    folded_seq: int = -1
    created_at: str | None = None
    last_updated_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    output: str | None = None
    stop_reason: str | None = None
    failure_details: dict[str, Any] | None = None
    pending_event: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    callback_url: str | None = None
    termination_reason: str | None = None
    custom_status: Any = None
    events: Mapping[str, Any] = field(default_factory=dict)
    retries: Mapping[str, int] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: Mapping[str, str]) -> WorkflowState:
        """Decode a status hash (``HGETALL``): integers, JSON fields, events, retries."""
        known = _STATE_FIELDS
        values: dict[str, Any] = {}
        events: dict[str, Any] = {}
        retries: dict[str, int] = {}
        other: dict[str, str] = {}
        for name, text in raw.items():
            if name.startswith("event:"):
                events[name[6:]] = json.loads(text)
            elif name.startswith("retries:"):
                retries[name[8:]] = int(text)
            elif name in INT_FIELDS:
                values[name] = int(text)
            elif name in JSON_FIELDS:
                values[name] = json.loads(text) if text else None
            elif name in known:
                values[name] = text
            else:
                other[name] = text
        values["runtime_status"] = RuntimeStatus(values.get("runtime_status", "PENDING"))
        values["next"] = NextStep.from_json(values.get("next") or {"kind": "start"})
        values["metadata"] = values.get("metadata") or {}
        return cls(**values, events=events, retries=retries, fields=other)

    @property
    def finished(self) -> bool:
        """True once the status is final (COMPLETED, FAILED or TERMINATED)."""
        return self.runtime_status in TERMINAL

    def updated(self, changes: Mapping[str, Any]) -> WorkflowState:
        """A copy with hash fields ``changes`` applied as a checkpoint stores them (text or
        JSON values), for the state right after a final checkpoint."""
        raw: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "runtime_status":
                raw[name] = RuntimeStatus(value)
            elif name in JSON_FIELDS and isinstance(value, str):
                raw[name] = json.loads(value)
            elif name in INT_FIELDS:
                raw[name] = int(value)
            elif name in _STATE_FIELDS:
                raw[name] = value
        return replace(self, **raw)

    def tool_attempt(self, step_seq: int, index: int) -> int:
        """The attempt a tool call's next run is (1 + its failed attempts)."""
        return 1 + self.retries.get(f"{step_seq}:{index}", 0)


#: The fields of :class:`WorkflowState`, read once (``dataclasses.fields`` is not free).
_STATE_FIELDS = frozenset(f.name for f in fields(WorkflowState))
