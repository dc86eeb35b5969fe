"""What each step kind does; the runner wraps them with leases and checkpoints.

A step function gets a :class:`~.context.StepContext` and returns an outcome
(:mod:`.outcomes`): the record to checkpoint and how the workflow moves on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..errors import LLMError, RetryableLLMError, ToolArgumentsError
from ..llm.reply import AssistantReply, ToolCall
from ..store.state import NextStep, RuntimeStatus, ToolCallSpec
from ..store.workflows import now_iso
from ..tool import ToolContext, WaitingTool
from .context import StepContext, backoff, fail
from .outcomes import Advance, End, Outcome, RetryAfter, Suspend, ToolAnswered
from .prompt import build_messages
from .waits import approval_event_name, run_waiting_tool, wait_for


def run_start(ctx: StepContext) -> Outcome:
    """Fix the history the turn sees and mark the workflow RUNNING."""
    session = ctx.state.session_id
    history_len = ctx.history.length(session)
    data = {
        "session_id": session,
        "history_len": history_len,
        "system": ctx.agent.system_prompt(),
        "task": ctx.state.input,
    }
    return Advance(
        ctx.record("ok", data),
        NextStep("llm"),
        updates={
            "runtime_status": RuntimeStatus.RUNNING.value,
            "history_len": str(history_len),
            "started_at": now_iso(),
        },
        incr={"steps_completed": 1},
    )


def run_llm(ctx: StepContext) -> Outcome:
    """One chat completion; tool calls become a parallel group of ``tool`` steps."""
    agent, state = ctx.agent, ctx.state
    records = ctx.store.steps(ctx.workflow_id)
    history = ctx.history.messages(state.session_id, state.history_len)
    messages = build_messages(agent, history, state.input, records)
    iteration = state.iteration + 1
    rounds = sum(1 for r in records if r["kind"] == "llm" and r["status"] == "ok" and r["data"].get("tool_calls"))
    cfg = agent.llm.resolved()
    limit_rounds = cfg.get("max_tool_rounds")
    last_by_iterations = iteration >= agent.max_iterations
    last = last_by_iterations or (limit_rounds is not None and rounds >= limit_rounds)
    tools = agent.tool_schemas()
    try:
        reply = agent.llm.chat(messages, tools, "none" if (last and tools) else None, config=cfg)
    except RetryableLLMError as exc:
        settings = ctx.settings
        if ctx.attempt >= settings.llm_max_attempts:
            return fail(ctx, exc)
        if exc.retry_after is not None and exc.retry_after > settings.llm_retry_after_max:
            too_long = LLMError(
                f"{exc}; the server asks to retry after {exc.retry_after:.0f} s, more than {settings.llm_retry_after_max:.0f} s"
            )
            return fail(ctx, too_long)
        delay = backoff(ctx.attempt, settings.llm_backoff, settings.llm_backoff_max, exc.retry_after)
        data = {
            "error": str(exc),
            "error_type": type(exc).__name__,
            "retry_in": round(delay, 3),
            "retry_after": exc.retry_after,
        }
        return RetryAfter(ctx.record("retry", data), delay, incr={"attempt": 1})
    except LLMError as exc:
        return fail(ctx, exc)
    reply = unique_call_ids(reply, records, ctx.step_seq)
    usage = {"iteration": 1, "steps_completed": 1, **{k: v for k, v in reply.usage.items() if v > 0}}
    data = reply.to_dict()
    if reply.tool_calls and not last:
        calls = tuple(ToolCallSpec(i, c.id, c.name, c.arguments) for i, c in enumerate(reply.tool_calls))
        return Advance(
            ctx.record("ok", data),
            NextStep("tool", calls),
            updates={"tools_remaining": str(len(calls))},
            incr={**usage, "tool_rounds": 1},
        )
    if reply.tool_calls:
        data["ignored_tool_calls"] = "the turn's last model call may not call tools (max_iterations or max_tool_rounds)"
    stop_reason = (
        "max_iterations" if (last_by_iterations and (tools or reply.tool_calls)) else (reply.finish_reason or "stop")
    )
    return Advance(
        ctx.record("ok", data), NextStep("finish", output=reply.content, stop_reason=stop_reason), incr=usage
    )


def unique_call_ids(reply: AssistantReply, records: list[dict[str, Any]], step_seq: int) -> AssistantReply:
    """Rename tool call ids already used in this workflow (or twice in this reply) to
    ``<id>.<step_seq>.<index>``: some servers restart their ids at every reply or omit
    them, and the tool message and the idempotency key (``<workflow_id>:<call_id>``) must
    name one call only."""
    used = {
        call["id"]
        for r in records
        if r["kind"] == "llm" and r["status"] == "ok"
        for call in r["data"].get("tool_calls") or []
    }
    calls = []
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id if call.id and call.id not in used else f"{call.id or 'call'}.{step_seq}.{index}"
        used.add(call_id)
        calls.append(ToolCall(call_id, call.name, call.arguments))
    return dataclasses.replace(reply, tool_calls=calls)


def run_tool(ctx: StepContext) -> Outcome:
    """One tool call of the group; bad arguments and unknown tools go back to the model."""
    index = ctx.message.call_index if ctx.message.call_index is not None else 0
    call = ctx.state.next.calls[index]
    # Failed attempts of this call so far, counted per step_seq and call (a field that the
    # first retry creates: HINCRBY starts from 0).
    retries_field = f"retries:{ctx.step_seq}:{index}"
    failed = ctx.state.retries.get(f"{ctx.step_seq}:{index}", 0)
    data: dict[str, Any] = {"index": index, "call_id": call.id, "name": call.name, "arguments": call.arguments}

    def answer(status: str) -> Outcome:
        # Built when the call is answered, so the record's finished_at and duration_ms
        # cover the tool's run.
        return ToolAnswered(ctx.record(status, data), incr={"steps_completed": 1})

    tool = ctx.agent.tools.get(call.name)
    if tool is None:
        data["error"] = f"unknown tool {call.name!r}; available tools: {', '.join(ctx.agent.tools) or 'none'}"
        return answer("error")
    context = ToolContext(
        workflow_id=ctx.workflow_id,
        call_id=call.id,
        idempotency_key=f"{ctx.workflow_id}:{call.id}",
        attempt=ctx.attempt,
        agent=ctx.agent.name,
        session_id=ctx.state.session_id,
    )
    if tool.requires_approval:
        decision = wait_for(ctx, approval_event_name(ctx.step_seq, index), "approval", call, tool.approval_timeout)
        if isinstance(decision, Suspend):
            return decision
        if not (decision.get("approved") if isinstance(decision, dict) else bool(decision)):
            reason = decision.get("reason") if isinstance(decision, dict) else None
            data["error"] = f"the tool call was not approved: {reason or 'denied'}"
            return answer("error")
    if isinstance(tool, WaitingTool):
        return run_waiting_tool(ctx, tool, call, context, data, answer, lambda exc: tool_error_text(exc, None))
    try:
        data["result"] = tool.invoke(call.arguments, context)
        return answer("ok")
    except ToolArgumentsError as exc:
        data["error"] = str(exc)
    except Exception as exc:  # the tool's own failure: retried, then told to the model
        message = tool_error_text(exc, tool.timeout)
        if failed < tool.retries:
            delay = backoff(ctx.attempt, 0.5, 10.0)
            retry = {**data, "error": message, "retry_in": round(delay, 3)}
            return RetryAfter(ctx.record("retry", retry), delay, incr={retries_field: 1})
        data["error"] = message
    return answer("error")


def run_finish(ctx: StepContext) -> Outcome:
    """Complete the workflow; the turn is appended to memory once the final status is
    checkpointed (:func:`agent_platform.engine.lifecycle.finish_workflow`), so a turn that
    was terminated meanwhile never reaches the session's history."""
    output, stop_reason = ctx.state.next.output, ctx.state.next.stop_reason
    return End(
        ctx.record("ok", {"output": output, "stop_reason": stop_reason}),
        RuntimeStatus.COMPLETED,
        updates={"output": output, "stop_reason": stop_reason, "ended_at": now_iso()},
        incr={"steps_completed": 1},
    )


STEP_FUNCTIONS: dict[str, Callable[[StepContext], Outcome]] = {
    "start": run_start,
    "llm": run_llm,
    "tool": run_tool,
    "finish": run_finish,
}


def tool_error_text(exc: BaseException, timeout: float | None) -> str:
    """What the model reads for a tool that raised: ``<Type>: <message>`` (2000 chars at
    most), or that it passed its ``timeout`` (Celery's soft time limit)."""
    if type(exc).__name__ == "SoftTimeLimitExceeded":
        return f"the tool did not finish within its timeout of {timeout} s"
    return f"{type(exc).__name__}: {exc}"[:2000]


__all__ = ["STEP_FUNCTIONS", "End", "fail", "run_finish", "run_llm", "run_start", "run_tool"]
