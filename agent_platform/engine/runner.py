"""Run a step durably: open it (lease, fence), run it, checkpoint it, decide what follows.

This is DESIGN section 3, rules 1 and 2: a step whose ``step_seq`` is not the workflow's,
whose lease is held by a live owner, or that is already checkpointed returns at once and
writes nothing. After each checkpoint one ``match`` over the step's outcome
(:func:`follow_up`) decides what happens next.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from ..errors import ConfigurationError
from ..store.state import NextStep, RuntimeStatus
from ..store.workflows import Chain, CheckpointResult, OpenedStep, WorkflowStore
from . import lifecycle
from .context import StepContext, fail
from .dispatch import StepMessage, task_kind
from .draining import draining
from .leases import keeper, new_token, owner_is_dead
from .outcomes import Advance, End, Outcome, RetryAfter, Suspend, ToolAnswered
from .seam import Runtime
from .steps import STEP_FUNCTIONS, run_lost

log = logging.getLogger("agent_platform.engine")


class Verdict(StrEnum):
    """What a step task did (its Celery result, shown by Flower and in the worker log)."""

    DONE = "done"  # checkpointed; the next step is dispatched (or the turn ended)
    RETRY = "retry"  # checkpointed a retry record; the same step runs after a delay
    WAITING = "waiting"  # checkpointed a wait: SUSPENDED until an event
    FAILED = "failed"  # this step ended the workflow FAILED
    # nothing ran:
    MISSING = "missing"  # no such workflow (purged)
    FINISHED = "finished"  # the workflow has ended
    SUSPENDED = "suspended"  # paused or waiting for an event
    STALE = "stale"  # not the workflow's current step
    DUPLICATE = "duplicate"  # this tool call is already checkpointed
    LEASED = "leased"  # another live run holds the step
    SESSION_BUSY = "session_busy"  # an earlier turn of the session has not ended
    FENCED = "fenced"  # ran, but the checkpoint was refused (terminated, or a duplicate won)


@dataclass(frozen=True)
class StepReport:
    """The verdict of a task and the kinds of the steps it ran, in order."""

    verdict: Verdict
    steps: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.verdict.value if not self.steps else f"{self.verdict.value}: {' '.join(self.steps)}"


def run_step(runtime: Runtime, message: StepMessage, worker: str = "") -> StepReport:
    """Run ``message``'s step if it is still due, and the steps that ride along with it;
    report what happened.

    After each checkpoint, the next step runs in this task (opened by the same checkpoint
    script, :func:`local_chain`) when it is bookkeeping (``start`` is followed by the
    turn's first model call) or a local step; otherwise :func:`follow_up` decides.

    Raises:
        Exception: a bug inside a step, after the workflow was marked FAILED (so Celery
            and Flower show the task as failed); a Redis connection error (the step's
            lease then expires and the sweeper runs it again).
    """
    agent = runtime.agent(message.agent)
    store = runtime.store_for(agent)
    token = new_token()
    opened = open_step(store, message, token, runtime.settings.lease_ttl, worker)
    if opened.verdict != "open":
        return StepReport(Verdict(opened.verdict))
    ran: list[str] = []
    carry: dict[str, Any] = {}
    began = time.monotonic()
    while True:
        assert opened.state is not None
        state = opened.state
        if task_kind(state.next.kind) != message.kind or (
            state.next.kind == "start" and not lifecycle.session_turn(runtime, store, state, carry)
        ):
            store.release_step(message.workflow_id, message.step_seq, message.call_index, token)
            busy = Verdict.STALE if task_kind(state.next.kind) != message.kind else Verdict.SESSION_BUSY
            return StepReport(busy, tuple(ran))
        ctx = StepContext(
            agent, store, runtime.history_for(agent), runtime.settings, state, message, worker,
            opened.attempt, opened.lost, opened.messages, opened.records, carry,
        )  # fmt: skip
        outcome, error = _run(ctx, token)
        following = None if error is not None else local_chain(runtime, ctx, outcome, began)
        chain = following[0] if following else None
        result = _checkpoint(runtime, ctx, token, outcome, chain)
        if result.accepted:
            ran.extend(r["kind"] for r in (outcome.record, *outcome.plan().extra_records))
        if following and result.opened is not None and result.opened.verdict == "open":
            (chain, message), opened = following, result.opened
            token = chain.token
            continue
        verdict = follow_up(runtime, ctx, outcome, result)
        if error is not None:
            raise error
        return StepReport(verdict, tuple(ran))


def local_chain(runtime: Runtime, ctx: StepContext, outcome: Outcome, began: float) -> tuple[Chain, StepMessage] | None:
    """The next step to open in this task's checkpoint (its lease and its message), or
    None to leave it to the broker.

    ``start`` always goes on with the turn's first model call (bookkeeping pays no broker
    hop). With local steps on (``AssistantAgent(local_steps=True)`` or
    ``AGENT_PLATFORM_LOCAL_STEPS=1``), a sequential next step runs here too: the tool call
    of a reply that calls one tool, the model call after a single tool call, unless the
    tool has a timeout (Celery enforces it per task), the task has run for
    ``local_steps_budget`` seconds, or the worker is shutting down. Parallel tool calls,
    retries, waits and pauses always leave the task.
    """
    m = ctx.message
    match outcome:
        case Advance(next=step) if ctx.kind == "start":
            pass
        case Advance(next=step) if step.kind == "tool" and len(step.calls) == 1 and _local(runtime, ctx, began):
            tool = ctx.agent.tools.get(step.calls[0].name)
            if tool is not None and tool.timeout:
                return None
        case ToolAnswered() if len(ctx.state.next.calls) == 1 and _local(runtime, ctx, began):
            step = NextStep("llm")
            tool = ctx.agent.tools.get(ctx.state.next.calls[0].name)
            if tool is not None and tool.timeout:
                return None  # this task has the tool's time limit: a model call must not run under it
        case _:
            return None
    call_index = step.calls[0].index if step.kind == "tool" else None
    tool_name = step.calls[0].name if step.kind == "tool" else None
    message = StepMessage(m.agent, m.workflow_id, task_kind(step.kind), m.step_seq + 1, call_index, tool=tool_name)
    chain = Chain(new_token(), runtime.settings.lease_ttl, ctx.worker, call_index, step.kind == "llm")
    return chain, message


def _local(runtime: Runtime, ctx: StepContext, began: float) -> bool:
    enabled = ctx.agent.local_steps if ctx.agent.local_steps is not None else runtime.settings.local_steps
    return enabled and time.monotonic() - began < runtime.settings.local_steps_budget and not draining()


def open_step(store: WorkflowStore, message: StepMessage, token: str, ttl: float, worker: str) -> OpenedStep:
    """Open ``message``'s step; a lease held by a dead process of this host is voided
    first (the broker redelivers a killed worker's message at once: it runs now)."""
    m = message
    reads = m.kind == "llm"  # a model call also reads the turn's messages (one round trip)
    opened = store.open_step(m.workflow_id, m.step_seq, m.call_index, token, ttl, worker, reads)
    if opened.verdict == "leased" and owner_is_dead(opened.owner):
        assert opened.owner is not None
        log.warning(
            "voiding the lease of %s step %s held by a dead process (%s)", m.workflow_id, m.step_seq, opened.owner
        )
        store.void_lease(m.workflow_id, m.step_seq, m.call_index, opened.owner)
        opened = store.open_step(m.workflow_id, m.step_seq, m.call_index, token, ttl, worker, reads)
    return opened


def _run(ctx: StepContext, token: str) -> tuple[Outcome, BaseException | None]:
    """Run the step function with its lease renewed; a bug becomes a FAILED outcome."""
    step = run_lost if ctx.lost >= ctx.settings.max_lost_attempts else STEP_FUNCTIONS[ctx.kind]
    keeper().hold(ctx.store, ctx.message, token, ctx.settings.lease_ttl)
    try:
        return step(ctx), None
    except Exception as exc:
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            # Redis away: not the workflow's fault; the sweeper runs the step again
            ctx.store.release_step(ctx.workflow_id, ctx.step_seq, ctx.message.call_index, token)
            raise
        if isinstance(exc, ConfigurationError):  # the operator's to fix, not a bug: no traceback
            log.error("step %s of %s failed: %s", ctx.kind, ctx.workflow_id, exc)
        else:
            log.exception("step %s of %s failed", ctx.kind, ctx.workflow_id)
        return fail(ctx, exc), exc
    finally:
        keeper().drop(token)


def _checkpoint(
    runtime: Runtime, ctx: StepContext, token: str, outcome: Outcome, chain: Chain | None = None
) -> CheckpointResult:
    # A wait with a timeout is due exactly when it times out (the sweeper delivers the
    # timeout then); anything else once its dispatch had time to run.
    grace = runtime.settings.dispatch_grace
    match outcome:
        case Suspend(timeout=timeout) if timeout:
            due_in = timeout
        case RetryAfter(delay=delay):
            due_in = delay + grace
        case _:
            due_in = grace
    m = ctx.message
    plan = outcome.plan()
    tokens = ctx.carry.pop("token_batch", None)  # the model call's last batch of tokens, if any
    incarnation = ctx.state.fields.get("incarnation", "")  # refused if the workflow was purged and made again
    result = ctx.store.checkpoint(
        m.workflow_id, m.step_seq, m.call_index, token, outcome.record, plan, due_in, chain, tokens, incarnation
    )
    if not result.accepted:
        log.info("checkpoint of %s step %s/%s refused: %s", m.workflow_id, ctx.kind, m.step_seq, result.reason)
        return result
    records = (outcome.record, *plan.extra_records)
    for n, record in enumerate(records):
        log.info(
            "workflow=%s agent=%s step=%s seq=%s step_seq=%s attempt=%s status=%s duration_ms=%s",
            m.workflow_id,
            m.agent,
            record["kind"],
            result.seq + n,
            m.step_seq + n,
            record["attempt"],
            record["status"],
            record["duration_ms"],
        )
    for record in records:
        _fault(runtime, ctx.store, record["kind"])
    return result


def follow_up(runtime: Runtime, ctx: StepContext, outcome: Outcome, result: CheckpointResult) -> Verdict:
    """What follows a checkpoint: the one place where the engine decides."""
    if not result.accepted:
        return Verdict.FENCED
    running = result.status == RuntimeStatus.RUNNING
    m = ctx.message
    match outcome:
        case End(status=status):
            lifecycle.finish_workflow(runtime, ctx.store, ctx.state.updated(outcome.plan().updates))
            return Verdict.FAILED if status == RuntimeStatus.FAILED else Verdict.DONE
        case Suspend() if result.woke_early:
            # the event was raised between the step's look and its checkpoint: run it again
            lifecycle.redispatch(runtime, ctx.store, ctx.store.state(m.workflow_id), reason="event already raised")
            return Verdict.WAITING
        case Suspend():
            return Verdict.WAITING
        case RetryAfter(delay=delay):
            if running:
                again = StepMessage(m.agent, m.workflow_id, m.kind, m.step_seq, m.call_index, m.attempt + 1, m.tool)
                runtime.dispatch(again, countdown=delay)
            return Verdict.RETRY
        case Advance() | ToolAnswered() if result.advanced and running:
            step = outcome.next if isinstance(outcome, Advance) else NextStep("llm")
            runtime.dispatch_many(lifecycle.stage_messages(m.agent, m.workflow_id, m.step_seq + 1, step))
            return Verdict.DONE
        case _:  # a tool call whose group is not complete, or a paused workflow
            return Verdict.DONE


def _fault(runtime: Runtime, store: WorkflowStore, kind: str) -> None:
    """Crash tests: ``AGENT_PLATFORM_FAULT=exit_after_checkpoint:<kind>`` SIGKILLs this
    process once (per Redis) right after the checkpoint of a ``<kind>`` record, before
    anything follows it (the next dispatch, or finishing the turn)."""
    fault = runtime.settings.fault
    if fault == f"exit_after_checkpoint:{kind}" and store.fire_once(fault):
        log.warning("fault injection: SIGKILL after checkpoint of %s", kind)
        os.kill(os.getpid(), signal.SIGKILL)
