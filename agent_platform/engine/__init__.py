"""The engine: a workflow (one conversation turn) as a chain of checkpointed steps
(DESIGN section 3).

Glossary
--------
workflow
    One turn of one agent: the user's ``task`` in, the final answer out. Its state is a
    :class:`~agent_platform.store.state.WorkflowState` (the status hash, decoded once).
step
    One link of the chain: ``start``, ``llm`` (one chat completion), ``tool`` (one tool
    call), ``finish``. Each checkpointed step is one record of the step log.
step_seq
    A step's position in the chain, and the workflow's fencing token: a step message
    carries the ``step_seq`` it runs at; when the workflow's ``step_seq`` has moved on,
    the message is stale and does nothing. The tool calls of one assistant message share
    one ``step_seq`` (a stage) and are told apart by their ``call_index``.
record, seq
    One entry of the append-only step log; ``seq`` numbers the records (0, 1, 2...),
    retries, lost runs and events included, so it differs from ``step_seq``.
checkpoint
    The Lua script that appends a step's record and moves the workflow, atomically and
    only while the workflow is still at the step's ``step_seq`` (``store/lua/checkpoint.lua``).
outcome
    How a step ended (:mod:`.outcomes`): ``Advance``, ``ToolAnswered``, ``RetryAfter``,
    ``Suspend`` or ``End``; :func:`.runner.follow_up` matches on it once, after the checkpoint.
lease
    A key with a TTL naming the process running a step, renewed by one keeper thread per
    process (:mod:`.leases`); a step whose lease is held by a live owner does not run twice.
run, lost run
    One execution of a step; a run whose worker died before its checkpoint is found by
    the next run of the step and logged as a ``lost`` record.
sweeper
    A thread in every worker that re-dispatches steps nobody holds (a message lost with
    its worker), delivers the timeouts of waits and finishes turns whose finishing was cut
    short (:mod:`.sweeper`).
lifecycle
    The transitions outside a step: finish a workflow, wake it on an event, re-dispatch
    its pending steps (:mod:`.lifecycle`); runner, sweeper and control all use it.

A turn, step by step
--------------------
1. ``POST /start-workflow`` (``web/routes.py:start_workflow``) calls
   ``agent_platform/runtime.py:Runtime.start_workflow``: ``WorkflowStore.create`` writes a
   PENDING workflow at ``step_seq`` 0 (next step ``start``) and the first step message is
   sent to the agent's queue (``tasks/dispatch.py:CeleryDispatcher.dispatch``).
2. A worker runs the task (``tasks/steps.py``), which calls ``engine/runner.py:run_step``:
   ``open_step`` takes the lease and reads the state in one round trip
   (``store/lua/open_step.lua``).
3. ``engine/steps.py`` runs the step: ``run_start`` fixes the history the turn sees;
   ``run_llm`` calls the model (prompt from ``engine/prompt.py``); ``run_tool`` calls one
   tool (approvals and waiting tools in ``engine/waits.py``); ``run_finish`` completes.
   Each returns an outcome (``engine/outcomes.py``).
4. ``runner._checkpoint`` writes the record (``store/lua/checkpoint.lua``); the last tool
   call of a group to checkpoint moves the workflow on (a counter in the script).
5. ``runner.follow_up`` dispatches the next step (``engine/lifecycle.py:stage_messages``),
   a retry with its countdown, nothing for a wait, or finishes the turn
   (``lifecycle.finish_workflow``: memory, session, hooks).
6. Meanwhile ``engine/sweeper.py`` (a thread of each worker, ``tasks/worker.py``)
   re-dispatches whatever a crash left behind; ``engine/control.py`` terminates, pauses,
   resumes and raises events.
"""

from .dispatch import Dispatcher, StepMessage
from .runner import StepReport, Verdict, run_step
from .sweeper import sweep_due, sweep_once

__all__ = ["Dispatcher", "StepMessage", "StepReport", "Verdict", "run_step", "sweep_due", "sweep_once"]
