"""What each step kind does; the runner wraps them with leases and checkpoints.

A step function gets a :class:`StepContext` and returns an :class:`Outcome`: the record
to checkpoint, how the workflow moves on, and what to dispatch once the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..agent import AssistantAgent
from ..errors import LLMError, RetryableLLMError, ToolArgumentsError, ToolError
from ..llm.reply import AssistantReply, ToolCall
from ..memory.base import SessionHistory
from ..settings import Settings
from ..store.workflows import WorkflowStore, now_iso
from ..tool import ToolContext
from .dispatch import StepMessage
from .prompt import build_messages
from .records import StepClock


@dataclass
class StepContext:
    """What a step sees: the agent, its stores, the status hash and the message."""

    agent: AssistantAgent
    store: WorkflowStore
    history: SessionHistory
    settings: Settings
    meta: dict[str, Any]
    message: StepMessage
    worker: str
    clock: StepClock = field(default_factory=StepClock)

    @property
    def workflow_id(self) -> str:
        return self.message.workflow_id

    def record(self, status: str, data: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
        return self.clock.record(self.message.kind, status, attempt, self.worker, data)


@dataclass
class Outcome:
    """How a step ends: what :meth:`WorkflowStore.checkpoint` gets, and the follow-ups.

    Attributes:
        record, mode, updates, incr, next_step: passed to the checkpoint.
        dispatch: step messages to enqueue once the checkpoint is accepted and the
            workflow is RUNNING.
        countdown: seconds before those messages run (a retry's backoff).
        ended: the workflow reached a final status (the runner frees its session).
    """

    record: dict[str, Any]
    mode: str
    updates: dict[str, Any] = field(default_factory=dict)
    incr: dict[str, int] = field(default_factory=dict)
    next_step: dict[str, Any] | None = None
    dispatch: list[StepMessage] = field(default_factory=list)
    countdown: float | None = None
    ended: bool = False
    due_in: float | None = None


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter (AWS's), never shorter than ``Retry-After``.

    Args:
        attempt: the attempt that failed (1, 2, ...).
        base: seconds of the first backoff ceiling.
        cap: the largest ceiling in seconds.
        retry_after: the server's ``Retry-After`` in seconds, honoured as a floor.
    """
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def fail(ctx: StepContext, exc: BaseException, attempt: int = 1) -> Outcome:
    """The outcome that ends a workflow FAILED with ``failure_details`` naming the step."""
    details = {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "step": ctx.message.kind,
        "step_seq": ctx.message.step_seq,
    }
    return Outcome(
        ctx.record("error", {"error": details["message"], "error_type": details["type"]}, attempt),
        "end",
        updates={"runtime_status": "FAILED", "failure_details": details, "ended_at": now_iso()},
        ended=True,
    )


def run_start(ctx: StepContext) -> Outcome:
    """Fix the history the turn sees and mark the workflow RUNNING."""
    session = ctx.meta["session_id"]
    history_len = ctx.history.length(session)
    data = {
        "session_id": session,
        "history_len": history_len,
        "system": ctx.agent.system_prompt(),
        "task": ctx.meta["input"],
    }
    return Outcome(
        ctx.record("ok", data),
        "advance",
        updates={"runtime_status": "RUNNING", "history_len": str(history_len), "started_at": now_iso()},
        incr={"steps_completed": 1},
        next_step={"kind": "llm"},
        dispatch=[_next(ctx, "llm")],
    )


def run_llm(ctx: StepContext) -> Outcome:
    """One chat completion; tool calls become a parallel group of ``tool`` steps."""
    agent, meta = ctx.agent, ctx.meta
    attempt = meta.get("attempt", 1)
    records = ctx.store.steps(ctx.workflow_id)
    history = ctx.history.messages(meta["session_id"], meta.get("history_len", 0))
    messages = build_messages(agent, history, meta["input"], records)
    iteration = meta.get("iteration", 0) + 1
    rounds = sum(1 for r in records if r["kind"] == "llm" and r["status"] == "ok" and r["data"].get("tool_calls"))
    cfg = agent.llm.resolved()
    limit_rounds = cfg.get("max_tool_rounds")
    last_by_iterations = iteration >= agent.max_iterations
    last = last_by_iterations or (limit_rounds is not None and rounds >= limit_rounds)
    tools = agent.tool_schemas()
    try:
        reply = agent.llm.chat(messages, tools, "none" if (last and tools) else None)
    except RetryableLLMError as exc:
        if attempt >= ctx.settings.llm_max_attempts:
            return fail(ctx, exc, attempt)
        if exc.retry_after is not None and exc.retry_after > ctx.settings.llm_retry_after_max:
            too_long = LLMError(
                f"{exc}; the server asks to retry after {exc.retry_after:.0f} s, more than {ctx.settings.llm_retry_after_max:.0f} s"
            )
            return fail(ctx, too_long, attempt)
        delay = backoff(attempt, ctx.settings.llm_backoff, ctx.settings.llm_backoff_max, exc.retry_after)
        data = {
            "error": str(exc),
            "error_type": type(exc).__name__,
            "retry_in": round(delay, 3),
            "retry_after": exc.retry_after,
        }
        return Outcome(
            ctx.record("retry", data, attempt),
            "stay",
            incr={"attempt": 1},
            dispatch=[_next(ctx, "llm", attempt=attempt + 1, same_stage=True)],
            countdown=delay,
        )
    except LLMError as exc:
        return fail(ctx, exc, attempt)
    reply = unique_call_ids(reply, records, ctx.message.step_seq)
    usage = {"iteration": 1, "steps_completed": 1, **{k: v for k, v in reply.usage.items() if v > 0}}
    data = reply.to_dict()
    if reply.tool_calls and not last:
        calls = [{"index": i, **tool_call_entry(c)} for i, c in enumerate(reply.tool_calls)]
        return Outcome(
            ctx.record("ok", data, attempt),
            "advance",
            updates={"tools_remaining": str(len(calls))},
            incr=usage,
            next_step={"kind": "tool", "calls": calls},
            dispatch=[_next(ctx, "tool", call_index=c["index"], tool=c["name"]) for c in calls],
        )
    if reply.tool_calls:
        data["ignored_tool_calls"] = "the turn's last model call may not call tools (max_iterations or max_tool_rounds)"
    if last_by_iterations and (tools or reply.tool_calls):
        stop_reason = "max_iterations"
    elif reply.empty:  # a reply of nothing ends the turn: the same request would get it again
        stop_reason = "empty_reply"
    else:
        stop_reason = reply.finish_reason or "stop"
    return Outcome(
        ctx.record("ok", data, attempt),
        "advance",
        incr=usage,
        next_step={"kind": "finish", "output": reply.content, "stop_reason": stop_reason},
        dispatch=[_next(ctx, "finish")],
    )


def unique_call_ids(reply: AssistantReply, records: list[dict[str, Any]], stage: int) -> AssistantReply:
    """Rename tool call ids already used in this workflow (or twice in this reply) to
    ``<id>.<stage>.<index>``: some servers restart their ids at every reply or omit them,
    and the tool message and the idempotency key (``<workflow_id>:<call_id>``) must
    name one call only."""
    used = {
        call["id"]
        for r in records
        if r["kind"] == "llm" and r["status"] == "ok"
        for call in r["data"].get("tool_calls") or []
    }
    calls = []
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id if call.id and call.id not in used else f"{call.id or 'call'}.{stage}.{index}"
        used.add(call_id)
        calls.append(dataclasses.replace(call, id=call_id))
    return dataclasses.replace(reply, tool_calls=calls)


def tool_call_entry(call: ToolCall) -> dict[str, Any]:
    """A call of ``next.calls``: id, name, the arguments sent back, and the arguments as
    received when they differ (what the tool step validates)."""
    entry = {"id": call.id, "name": call.name, "arguments": call.arguments}
    if call.raw_arguments is not None:
        entry["raw_arguments"] = call.raw_arguments
    return entry


def run_tool(ctx: StepContext) -> Outcome:
    """One tool call of the group; bad arguments and unknown tools go back to the model."""
    index = ctx.message.call_index if ctx.message.call_index is not None else 0
    call = ctx.meta["next"]["calls"][index]
    # Failed attempts of this call so far, counted per stage and call (a field that the
    # first retry creates: HINCRBY starts from 0), so attempt 1, 2, ... in every stage.
    retries_field = f"retries:{ctx.message.step_seq}:{index}"
    attempt = 1 + int(ctx.meta.get(retries_field, 0))
    data: dict[str, Any] = {"index": index, "call_id": call["id"], "name": call["name"], "arguments": call["arguments"]}
    if "raw_arguments" in call:  # what the model sent, when it was not a JSON object text
        data["raw_arguments"] = call["raw_arguments"]
    received = call.get("raw_arguments", call["arguments"])

    def answer(status: str) -> Outcome:
        # Built when the call is answered, so the record's finished_at and duration_ms
        # cover the tool's run.
        return Outcome(
            ctx.record(status, data, attempt),
            "tool",
            incr={"steps_completed": 1},
            next_step={"kind": "llm"},
            dispatch=[_next(ctx, "llm")],
        )

    tool = ctx.agent.tools.get(call["name"])
    if tool is None:
        data["error"] = f"unknown tool {call['name']!r}; available tools: {', '.join(ctx.agent.tools) or 'none'}"
        return answer("error")
    context = ToolContext(
        workflow_id=ctx.workflow_id,
        call_id=call["id"],
        idempotency_key=f"{ctx.workflow_id}:{call['id']}",
        attempt=attempt,
        agent=ctx.agent.name,
        session_id=ctx.meta["session_id"],
    )
    if tool.requires_approval:
        decision = _wait_for(
            ctx, approval_event_name(ctx.message.step_seq, index), "approval", call, tool.approval_timeout
        )
        if isinstance(decision, Outcome):
            return decision
        if not (decision.get("approved") if isinstance(decision, dict) else bool(decision)):
            reason = decision.get("reason") if isinstance(decision, dict) else None
            data["error"] = f"the tool call was not approved: {reason or 'denied'}"
            return answer("error")
    if getattr(tool, "waits_for_event", False):
        return _run_waiting_tool(ctx, tool, call, context, data, answer)
    try:
        data["result"] = tool.invoke(received, context)
        return answer("ok")
    except ToolArgumentsError as exc:
        data["error"] = str(exc)
    except Exception as exc:  # the tool's own failure: retried, then told to the model
        message = _tool_error_text(exc, tool.timeout)
        if attempt <= tool.retries:
            delay = backoff(attempt, 0.5, 10.0)
            retry = {**data, "error": message, "retry_in": round(delay, 3)}
            return Outcome(
                ctx.record("retry", retry, attempt),
                "stay",
                incr={retries_field: 1},
                dispatch=[
                    _next(ctx, "tool", call_index=index, attempt=attempt + 1, same_stage=True, tool=call["name"])
                ],
                countdown=delay,
            )
        data["error"] = message
    return answer("error")


def approval_event_name(stage: int, index: int) -> str:
    """The event that approves tool call ``index`` of ``stage``: ``approval.<stage>.<index>``."""
    return f"approval.{stage}.{index}"


def response_event_name(stage: int, index: int) -> str:
    """The event that completes waiting tool call ``index`` of ``stage``: ``response.<stage>.<index>``."""
    return f"response.{stage}.{index}"


def _wait_for(
    ctx: StepContext,
    name: str,
    kind: str,
    call: dict[str, Any],
    timeout: float | None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The payload of event ``name`` once raised, or the Outcome that suspends the
    workflow (SUSPENDED with ``pending_event``) until ``raise-event`` brings it."""
    payload = ctx.store.event(ctx.workflow_id, name)
    if payload is not None:
        return payload
    pending: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "tool_call": {k: call[k] for k in ("id", "name", "arguments")},
    }
    pending.update(extra or {})
    if timeout:
        pending["timeout_at_ms"] = int((time.time() + timeout) * 1000)
    record = ctx.clock.record(
        "event", "ok", 1, ctx.worker, {"waiting_for": name, "kind": kind, "tool_call": pending["tool_call"]}
    )
    return Outcome(
        record,
        "stay",
        updates={"runtime_status": "SUSPENDED", "pending_event": pending},
        due_in=timeout if timeout else None,
    )


def _run_waiting_tool(
    ctx: StepContext,
    tool: Any,
    call: dict[str, Any],
    context: ToolContext,
    data: dict[str, Any],
    answer: Callable[[str], Outcome],
) -> Outcome:
    """A tool that starts work elsewhere (``begin``), suspends until event
    ``response.<stage>.<index>`` arrives, then turns its payload into the result (``complete``)."""
    name = response_event_name(ctx.message.step_seq, call["index"])
    try:
        arguments = tool.validate(call.get("raw_arguments", call["arguments"]))
        payload = ctx.store.event(ctx.workflow_id, name)
        if payload is None:
            tool.begin(arguments, context, name)  # idempotent by context.idempotency_key
            # The answer may already be back (a fast agent): then complete now.
            payload = _wait_for(
                ctx, name, "response", call, tool.event_timeout, {"target": getattr(tool, "target", None)}
            )
            if isinstance(payload, Outcome):
                return payload
        data["result"] = tool.complete(payload, arguments, context)
    except Exception as exc:  # bad arguments, a timeout or an error answer: told to the model
        data["error"] = str(exc) if isinstance(exc, (ToolArgumentsError, ToolError)) else _tool_error_text(exc, None)
        return answer("error")
    return answer("ok")


def run_finish(ctx: StepContext) -> Outcome:
    """Complete the workflow; the turn is appended to memory once the final status is
    checkpointed (:func:`agent_platform.engine.runner.finish_workflow`), so a turn that was
    terminated meanwhile never reaches the session's history."""
    output = ctx.meta["next"].get("output", "")
    stop_reason = ctx.meta["next"].get("stop_reason", "stop")
    return Outcome(
        ctx.record("ok", {"output": output, "stop_reason": stop_reason}),
        "end",
        updates={"runtime_status": "COMPLETED", "output": output, "stop_reason": stop_reason, "ended_at": now_iso()},
        incr={"steps_completed": 1},
        ended=True,
    )


STEP_FUNCTIONS: dict[str, Callable[[StepContext], Outcome]] = {
    "start": run_start,
    "llm": run_llm,
    "tool": run_tool,
    "finish": run_finish,
}


def _next(
    ctx: StepContext,
    kind: str,
    call_index: int | None = None,
    attempt: int = 1,
    same_stage: bool = False,
    tool: str | None = None,
) -> StepMessage:
    seq = ctx.message.step_seq if same_stage else ctx.message.step_seq + 1
    return StepMessage(ctx.agent.name, ctx.workflow_id, kind, seq, call_index, attempt, tool)


def _tool_error_text(exc: BaseException, timeout: float | None) -> str:
    if type(exc).__name__ == "SoftTimeLimitExceeded":
        return f"the tool did not finish within its timeout of {timeout} s"
    return f"{type(exc).__name__}: {exc}"[:2000]
