"""What each step kind does; the runner wraps them with leases and checkpoints.

A step function gets a :class:`~.context.StepContext` and returns an outcome
(:mod:`.outcomes`): the record to checkpoint and how the workflow moves on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..errors import LLMError, RetryableLLMError, ToolArgumentsError, WorkerLost
from ..llm.reply import AssistantReply, ToolCall
from ..store.state import NextStep, RuntimeStatus, ToolCallSpec
from ..store.workflows import now_iso
from ..tool import ToolContext, WaitingTool
from .context import StepContext, backoff, fail
from .outcomes import Advance, End, Outcome, RetryAfter, Suspend, ToolAnswered
from .prompt import build_messages, fold, used_call_ids
from .records import StepClock
from .tokens import chat_streaming
from .waits import approval_event_name, run_waiting_tool, wait_for


def run_start(ctx: StepContext) -> Outcome:
    """Fix the history the turn sees and mark the workflow RUNNING (run by the turn's
    first ``llm`` task, which goes on with the model call: :func:`~.runner.run_step`)."""
    session = ctx.state.session_id
    history = ctx.carry.get("history")  # read with the session's head (lifecycle.session_turn)
    if history is None:
        history = ctx.history.messages(session)
    ctx.carry["history"] = history  # the model call that follows in this task reads it
    history_len = len(history)
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
    """One chat completion; tool calls become a parallel group of ``tool`` steps, and an
    answer ends the turn: the ``finish`` record is written by the same checkpoint."""
    agent, state = ctx.agent, ctx.state
    history = ctx.carry.get("history")
    if history is None or len(history) != state.history_len:
        history = ctx.history.messages(state.session_id, state.history_len)
    if ctx.messages is None or ctx.records is None:  # opened without them: read the whole log
        folded, unfolded = [], fold(ctx.store.steps(ctx.workflow_id))
    else:
        folded, unfolded = ctx.messages, fold(ctx.records)
    messages = build_messages(agent, history, state.input, [*folded, *unfolded])
    iteration = state.iteration + 1
    rounds = state.tool_rounds
    cfg = agent.llm.resolved()
    limit_rounds = cfg.get("max_tool_rounds")
    last_by_iterations = iteration >= agent.max_iterations
    last = last_by_iterations or (limit_rounds is not None and rounds >= limit_rounds)
    tools = agent.tool_schemas()
    try:
        # Streamed to the token side channel; the reply (and the record) is the same as unstreamed.
        reply = chat_streaming(ctx, messages, tools, "none" if (last and tools) else None, cfg)
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
    reply = unique_call_ids(reply, used_call_ids([*folded, *unfolded]), ctx.step_seq)
    usage = {"iteration": 1, "steps_completed": 1, **{k: v for k, v in reply.usage.items() if v > 0}}
    data = reply.to_dict()
    turn = (*unfolded, reply.to_message())  # appended to the turn's messages by the checkpoint
    if reply.tool_calls and not last:
        calls = tuple(ToolCallSpec.of(i, c) for i, c in enumerate(reply.tool_calls))
        return Advance(
            ctx.record("ok", data),
            NextStep("tool", calls),
            updates={"tools_remaining": str(len(calls))},
            incr={**usage, "tool_rounds": 1},
            messages=turn,
        )
    if reply.tool_calls:
        data["ignored_tool_calls"] = "the turn's last model call may not call tools (max_iterations or max_tool_rounds)"
    if last_by_iterations and (tools or reply.tool_calls):
        stop_reason = "max_iterations"
    elif reply.empty:  # a reply of nothing ends the turn: the same request would get it again
        stop_reason = "empty_reply"
    else:
        stop_reason = reply.finish_reason or "stop"
    record = ctx.record("ok", data)
    return complete(ctx, record, reply.content, stop_reason, usage, turn)


def complete(
    ctx: StepContext,
    record: dict[str, Any] | None,
    output: str,
    stop_reason: str,
    incr: dict[str, int],
    turn: tuple[dict[str, Any], ...] | None = None,
) -> End:
    """The outcome that completes the turn: the step's ``record`` (None for a ``finish``
    step of its own) then the ``finish`` record, in one checkpoint. The turn reaches
    memory once that checkpoint holds (:func:`~.lifecycle.finish_workflow`), so a turn
    terminated meanwhile never reaches the session's history."""
    finish = StepClock().record("finish", "ok", 1, ctx.worker, {"output": output, "stop_reason": stop_reason})
    updates = {"output": output, "stop_reason": stop_reason, "ended_at": now_iso()}
    incr = {**incr, "steps_completed": incr.get("steps_completed", 0) + 1}
    if record is None:
        return End(finish, RuntimeStatus.COMPLETED, updates, incr)
    return End(record, RuntimeStatus.COMPLETED, updates, incr, extra_records=(finish,), messages=turn)


def unique_call_ids(reply: AssistantReply, used: set[str], step_seq: int) -> AssistantReply:
    """Rename tool call ids already used in this workflow (``used``, or twice in this
    reply) to ``<id>.<step_seq>.<index>``: some servers restart their ids at every reply
    or omit them, and the tool message and the idempotency key (``<workflow_id>:<call_id>``)
    must name one call only."""
    used = set(used)
    calls = []
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id if call.id and call.id not in used else f"{call.id or 'call'}.{step_seq}.{index}"
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
    call = ctx.state.next.calls[index]
    # Failed attempts of this call so far, counted per step_seq and call (a field that the
    # first retry creates: HINCRBY starts from 0).
    retries_field = f"retries:{ctx.step_seq}:{index}"
    failed = ctx.state.retries.get(f"{ctx.step_seq}:{index}", 0)
    data: dict[str, Any] = {"index": index, "call_id": call.id, "name": call.name, "arguments": call.arguments}
    if call.raw_arguments is not None:  # what the model sent, when it was not a JSON object text
        data["raw_arguments"] = call.raw_arguments

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
        data["result"] = tool.invoke(call.received, context)
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
    """A ``finish`` step of its own: only a workflow checkpointed by an earlier version
    (whose ``llm`` step left ``next = finish``) has one; today the ``llm`` step's
    checkpoint writes the ``finish`` record."""
    return complete(ctx, None, ctx.state.next.output, ctx.state.next.stop_reason, {})


def run_lost(ctx: StepContext) -> Outcome:
    """A step whose workers died ``max_lost_attempts`` times (a tool that crashes its
    process, memory exhausted, a hard time limit) is not run again: a tool call ends with
    an error the model reads; any other step fails the workflow (DESIGN rule 11, case C14)."""
    runs = f"{ctx.lost} runs in all, each one's worker lost"
    if ctx.kind == "tool":
        index = ctx.message.call_index or 0
        call = ctx.state.next.calls[index]
        error = f"worker lost during tool {call.name} ({runs}): the tool was not run again"
        data = {"index": index, "call_id": call.id, "name": call.name, "arguments": call.arguments, "error": error}
        return ToolAnswered(ctx.record("error", data, attempt=ctx.attempt - 1), incr={"steps_completed": 1})
    return fail(ctx, WorkerLost(f"worker lost during {ctx.kind} step ({runs})"))


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


__all__ = ["STEP_FUNCTIONS", "End", "fail", "run_finish", "run_llm", "run_lost", "run_start", "run_tool"]
