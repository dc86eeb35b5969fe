"""The run page's step timeline: rows, parallel tool calls, the waterfall, the prompts.

Built from a workflow's status hash and its step log (``WorkflowStore.steps``), the same
records ``GET /workflows/<id>/steps`` returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_platform.engine.prompt import build_messages, fold
from agent_platform.errors import AgentNotFound
from agent_platform.store.state import WorkflowState

from .present import duration, parse_time, short

#: Fields of a record's ``data`` shown first, per kind (the rest follow in their order).
FIRST_FIELDS = {
    "start": ("task", "session_id", "history_len", "system"),
    "llm": ("content", "tool_calls", "finish_reason", "usage", "model"),
    "tool": ("name", "arguments", "result", "error"),
    "finish": ("output", "stop_reason"),
    "event": ("waiting_for", "name", "kind", "tool_call", "payload"),
}
#: Fields of a record shown in its header line (everything else of the record is in ``data``).
HEADER_FIELDS = ("seq", "kind", "status", "attempt", "started_at", "finished_at", "duration_ms", "worker", "task_id")
_EVENT_INDEX = re.compile(r"^(?:approval|response)\.\d+\.(\d+)$")


@dataclass
class Lane:
    """One tool call of a parallel group and the records about it (tool attempts, waits, events)."""

    index: int
    call: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ParallelCalls:
    """Tool calls of one assistant message, run side by side (a Celery group)."""

    lanes: list[Lane]
    kind: str = "parallel"

    def lane_for(self, record: dict[str, Any]) -> Lane | None:
        """The lane a ``tool`` or ``event`` record belongs to, or None."""
        data = record.get("data") or {}
        index = data.get("index") if record["kind"] == "tool" else None
        call_id = data.get("call_id") or (data.get("tool_call") or {}).get("id")
        name = data.get("name") if record["kind"] == "event" else None
        if index is None and isinstance(name, str) and (found := _EVENT_INDEX.match(name)):
            index = int(found.group(1))
        for lane in self.lanes:
            if lane.index == index or (call_id and lane.call.get("id") == call_id):
                return lane
        return None


def timeline(records: list[dict[str, Any]]) -> list[dict[str, Any] | ParallelCalls]:
    """The records in log order, except that the tool calls of one assistant message with
    several calls are gathered into one :class:`ParallelCalls` (shown side by side)."""
    items: list[dict[str, Any] | ParallelCalls] = []
    group: ParallelCalls | None = None
    for record in records:
        kind = record["kind"]
        if group is not None and kind in ("tool", "event") and (lane := group.lane_for(record)) is not None:
            lane.records.append(record)
            continue
        if kind in ("start", "llm", "finish"):
            group = None
        items.append(record)
        data = record.get("data") or {}
        calls = data.get("tool_calls") or []
        if kind == "llm" and record["status"] == "ok" and len(calls) > 1 and not data.get("ignored_tool_calls"):
            group = ParallelCalls([Lane(i, call) for i, call in enumerate(calls)])
            items.append(group)
    return items


def data_fields(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every ``(key, value)`` of the record's ``data`` (the kind's main fields first),
    then any top-level field a newer engine added beyond :data:`HEADER_FIELDS`."""
    data = record.get("data") or {}
    first = [k for k in FIRST_FIELDS.get(record["kind"], ()) if k in data]
    fields = [(k, data[k]) for k in first] + [(k, v) for k, v in data.items() if k not in first]
    extra = [(k, v) for k, v in record.items() if k not in HEADER_FIELDS and k != "data"]
    return fields + extra


def step_title(record: dict[str, Any]) -> str:
    """A short description: the tool and its arguments, the model's answer, the event."""
    data = record.get("data") or {}
    kind = record["kind"]
    if kind == "llm":
        calls = data.get("tool_calls") or []
        if calls:
            return "calls " + ", ".join(c.get("function", {}).get("name", "?") for c in calls)
        if data.get("error"):
            return short(data["error"], 70)
        return "answers " + short(data.get("content"), 60)
    if kind == "tool":
        return f"{data.get('name')}({short(data.get('arguments'), 50)})"
    if kind == "event":
        if data.get("waiting_for"):
            return f"waits for {data['waiting_for']}"
        return f"event {data.get('name')}"
    if kind == "finish":
        return short(data.get("output"), 70)
    if kind == "start":
        return short(data.get("task"), 70)
    return short(data, 70)


@dataclass(frozen=True)
class Bar:
    """One step on the waterfall's time axis; ``left`` and ``width`` in percent of the run."""

    seq: int
    kind: str
    status: str
    title: str
    left: float
    width: float
    offset: str
    took: str


def waterfall(state: WorkflowState, records: list[dict[str, Any]]) -> tuple[list[Bar], list[tuple[float, str]]]:
    """Bars from the workflow's creation to its end (now while it runs), and axis ticks
    ``(percent, label)``. Gaps between bars are time in the broker's queue or waiting."""
    origin = parse_time(state.created_at) or (parse_time(records[0]["started_at"]) if records else None)
    if origin is None:
        return [], []
    moments = [parse_time(t) for t in [r.get("finished_at") for r in records] + [state.ended_at]]
    end = max((t for t in moments if t is not None), default=origin)
    if not state.finished:
        end = max(end, datetime.now(UTC))
    total = max(1.0, (end - origin).total_seconds() * 1000)
    bars = []
    for record in records:
        begin = parse_time(record.get("started_at"))
        start = max(0.0, (begin - origin).total_seconds() * 1000) if begin else 0.0
        took = float(record.get("duration_ms") or 0.0)
        left = min(100.0, start / total * 100)
        bars.append(
            Bar(
                seq=record["seq"],
                kind=record["kind"],
                status=record["status"],
                title=step_title(record),
                left=round(left, 3),
                width=round(max(0.4, min(100.0 - left, took / total * 100)), 3),
                offset=duration(start),
                took=duration(took),
            )
        )
    ticks = [(float(p), duration(total * p / 100)) for p in (0, 25, 50, 75, 100)]
    return bars, ticks


def messages_sent(runtime: Any, state: WorkflowState, records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """For each ``llm`` record's seq, the chat messages that model call was sent, rebuilt
    as the engine builds them (:func:`agent_platform.engine.prompt.build_messages`): the
    system prompt the ``start`` step recorded, the session's first ``history_len`` memory
    messages, the input, and the earlier records of the turn. Empty when the agent is not
    loaded in this process."""
    if not any(r["kind"] == "llm" for r in records):
        return {}
    try:
        agent = runtime.agent(state.agent)
    except AgentNotFound:
        return {}
    history = runtime.history_for(agent).messages(state.session_id, state.history_len)
    start = next((r for r in records if r["kind"] == "start"), None)
    system = (start or {}).get("data", {}).get("system")
    as_user = _tool_results_as_user(agent)
    sent: dict[int, list[dict[str, Any]]] = {}
    for position, record in enumerate(records):
        if record["kind"] != "llm":
            continue
        messages = build_messages(agent, history, state.input, fold(records[:position]))
        if system is not None:
            messages[0] = {"role": "system", "content": system}
        sent[record["seq"]] = as_user(messages) if as_user else messages
    return sent


def _tool_results_as_user(agent: Any) -> Any:
    """The client's rewrite of tool results as user messages, when its profile asks for it."""
    try:
        from agent_platform.llm.openai_client import tool_results_as_user

        return tool_results_as_user if agent.llm.resolved().get("tool_result_role") == "user" else None
    except Exception:  # another client, or a model that is not configured in this process
        return None
