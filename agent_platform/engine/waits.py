"""Steps that wait for an event: a tool approval, the answer of a waiting tool (another agent).

The workflow is SUSPENDED with ``pending_event`` (a :class:`~.outcomes.Suspend` outcome)
until ``raise-event`` (or the sweeper, at the wait's timeout) delivers the event; the step
then runs again and finds the payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import ToolArgumentsError, ToolError
from ..store.state import ToolCallSpec
from ..tool import ToolContext, WaitingTool
from .context import StepContext
from .outcomes import Outcome, Suspend


def approval_event_name(step_seq: int, index: int) -> str:
    """The event that approves tool call ``index`` of ``step_seq``: ``approval.<step_seq>.<index>``."""
    return f"approval.{step_seq}.{index}"


def response_event_name(step_seq: int, index: int) -> str:
    """The event that completes waiting tool call ``index``: ``response.<step_seq>.<index>``."""
    return f"response.{step_seq}.{index}"


def wait_for(
    ctx: StepContext,
    name: str,
    kind: str,
    call: ToolCallSpec,
    timeout: float | None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The payload of event ``name`` once raised (None for an event raised without data or
    with ``null``: raised all the same), or the :class:`Suspend` outcome that waits for it
    (``timeout`` seconds, None: forever)."""
    if name in ctx.state.events:
        return ctx.state.events[name]
    tool_call = {"id": call.id, "name": call.name, "arguments": call.arguments}
    pending: dict[str, Any] = {"name": name, "kind": kind, "tool_call": tool_call, **(extra or {})}
    if timeout:
        pending["timeout_at_ms"] = int((time.time() + timeout) * 1000)
    record = ctx.clock.record("event", "ok", 1, ctx.worker, {"waiting_for": name, "kind": kind, "tool_call": tool_call})
    return Suspend(record, pending, timeout or None)


def run_waiting_tool(
    ctx: StepContext,
    tool: WaitingTool,
    call: ToolCallSpec,
    context: ToolContext,
    data: dict[str, Any],
    answer: Callable[[str], Outcome],
    error_text: Callable[[BaseException], str],
) -> Outcome:
    """A tool that starts work elsewhere (``begin``), suspends until event
    ``response.<step_seq>.<index>`` arrives, then turns its payload into the result (``complete``)."""
    name = response_event_name(ctx.step_seq, call.index)
    try:
        arguments = tool.validate(call.received)
        payload = ctx.state.events.get(name)
        if name not in ctx.state.events:  # a payload of null is an answer too
            tool.begin(arguments, context, name)  # idempotent by context.idempotency_key
            payload = wait_for(ctx, name, "response", call, tool.event_timeout, {"target": tool.target})
            if isinstance(payload, Suspend):
                return payload
        data["result"] = tool.complete(payload, arguments, context)
    except Exception as exc:  # bad arguments, a timeout or an error answer: told to the model
        data["error"] = str(exc) if isinstance(exc, (ToolArgumentsError, ToolError)) else error_text(exc)
        return answer("error")
    return answer("ok")
