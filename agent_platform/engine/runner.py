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
from dataclasses import dataclass
from enum import StrEnum

import redis

from ..store.state import NextStep, RuntimeStatus
from ..store.workflows import CheckpointResult, OpenedStep, WorkflowStore
from . import lifecycle
from .context import StepContext, fail
from .dispatch import StepMessage, task_kind
from .leases import keeper, new_token, owner_is_dead
from .outcomes import Advance, End, Outcome, RetryAfter, Suspend, ToolAnswered
from .seam import Runtime
from .steps import STEP_FUNCTIONS

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
    """Run ``message``'s step if it is still due; report what happened.

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
    assert opened.state is not None
    state = opened.state
    if task_kind(state.next.kind) != message.kind or (
        state.next.kind == "start" and not lifecycle.session_turn(runtime, store, state)
    ):
        store.release_step(message.workflow_id, message.step_seq, message.call_index, token)
        return StepReport(Verdict.STALE if task_kind(state.next.kind) != message.kind else Verdict.SESSION_BUSY)
    ctx = StepContext(
        agent, store, runtime.history_for(agent), runtime.settings, state, message, worker, opened.attempt, opened.lost
    )
    outcome, error = _run(ctx, token)
    result = _checkpoint(runtime, ctx, token, outcome)
    verdict = follow_up(runtime, ctx, outcome, result)
    if error is not None:
        raise error
    return StepReport(verdict, (ctx.kind,) if result.accepted else ())


def open_step(store: WorkflowStore, message: StepMessage, token: str, ttl: float, worker: str) -> OpenedStep:
    """Open ``message``'s step; a lease held by a dead process of this host is voided
    first (the broker redelivers a killed worker's message at once: it runs now)."""
    m = message
    opened = store.open_step(m.workflow_id, m.step_seq, m.call_index, token, ttl, worker)
    if opened.verdict == "leased" and owner_is_dead(opened.owner):
        assert opened.owner is not None
        log.warning(
            "voiding the lease of %s step %s held by a dead process (%s)", m.workflow_id, m.step_seq, opened.owner
        )
        store.void_lease(m.workflow_id, m.step_seq, m.call_index, opened.owner)
        opened = store.open_step(m.workflow_id, m.step_seq, m.call_index, token, ttl, worker)
    return opened


def _run(ctx: StepContext, token: str) -> tuple[Outcome, BaseException | None]:
    """Run the step function with its lease renewed; a bug becomes a FAILED outcome."""
    keeper().hold(ctx.store, ctx.message, token, ctx.settings.lease_ttl)
    try:
        return STEP_FUNCTIONS[ctx.kind](ctx), None
    except Exception as exc:
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            # Redis away: not the workflow's fault; the sweeper runs the step again
            ctx.store.release_step(ctx.workflow_id, ctx.step_seq, ctx.message.call_index, token)
            raise
        log.exception("step %s of %s failed", ctx.kind, ctx.workflow_id)
        return fail(ctx, exc), exc
    finally:
        keeper().drop(token)


def _checkpoint(runtime: Runtime, ctx: StepContext, token: str, outcome: Outcome) -> CheckpointResult:
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
    result = ctx.store.checkpoint(
        m.workflow_id, m.step_seq, m.call_index, token, outcome.record, outcome.plan(), due_in
    )
    if not result.accepted:
        log.info("checkpoint of %s step %s/%s refused: %s", m.workflow_id, ctx.kind, m.step_seq, result.reason)
        return result
    log.info(
        "workflow=%s agent=%s step=%s seq=%s step_seq=%s attempt=%s status=%s duration_ms=%s",
        m.workflow_id,
        m.agent,
        ctx.kind,
        result.seq,
        m.step_seq,
        outcome.record["attempt"],
        outcome.record["status"],
        outcome.record["duration_ms"],
    )
    _fault(runtime, ctx.store, ctx.kind)
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
    if runtime.settings.fault == f"exit_after_checkpoint:{kind}" and store.fire_once():
        log.warning("fault injection: SIGKILL after checkpoint of %s", kind)
        os.kill(os.getpid(), signal.SIGKILL)
