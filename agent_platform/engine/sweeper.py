"""The sweeper: re-dispatches workflows whose step message was lost (DESIGN section 3, rule 2).

A workflow is due when no step has touched it for a while (``dispatch_grace`` after a
dispatch, ``lease_ttl`` after a heartbeat). The sweeper looks at due workflows only and
dispatches every pending step whose lease is not held; fencing makes a duplicate harmless.
It also delivers the timeout of a wait, and finishes a workflow whose final checkpoint
landed but whose finishing (memory, session, hooks) did not.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import WorkflowNotFound
from ..store.state import RuntimeStatus, WorkflowState
from ..store.workflows import WorkflowStore
from . import lifecycle
from .leases import owner_is_dead
from .seam import Runtime

log = logging.getLogger("agent_platform.sweeper")


def sweep_due(runtime: Runtime) -> int:
    """One sweep by a worker's sweeper thread: each store whose short lock this process
    takes (``<base>:sweeper-lock``, 0.9 sweep intervals) is swept, the others are left to
    the worker that holds their lock. Returns how many steps were dispatched."""
    hold = runtime.settings.sweep_interval * 0.9
    return sum(sweep_store(runtime, store) for store in runtime.stores() if store.take_sweeper_lock(hold))


def sweep_once(runtime: Runtime, limit: int = 200, everything: bool = False) -> int:
    """One pass over every store of the loaded agents (no lock); returns the steps dispatched.

    Args:
        limit: most workflows looked at per store.
        everything: look at every unfinished workflow, due or not (a worker does this
            once at start, to take over at once the steps of a process of its host that
            died, whose leases have not expired yet).
    """
    return sum(sweep_store(runtime, store, limit, everything) for store in runtime.stores())


def sweep_store(runtime: Runtime, store: WorkflowStore, limit: int = 200, everything: bool = False) -> int:
    """Sweep one store (see :func:`sweep_once`)."""
    dispatched = 0
    ids = store.active_workflows(limit) if everything else store.due_workflows(limit)
    for wf in ids:
        try:
            state = store.state(wf)
            dispatched += _take_over_orphans(runtime, store, state) if everything else _sweep(runtime, store, state)
        except WorkflowNotFound:
            store.forget_active(wf)
        except Exception:
            log.exception("sweeping workflow %s failed", wf)
    return dispatched


def _sweep(runtime: Runtime, store: WorkflowStore, state: WorkflowState) -> int:
    grace = runtime.settings.dispatch_grace
    if state.agent not in runtime.agents:
        store.set_due(state.instance_id, grace)  # another process serves this agent
        return 0
    if state.finished:
        lifecycle.finish_workflow(runtime, store, state)  # a crash after its final checkpoint
        return 0
    if state.runtime_status == RuntimeStatus.SUSPENDED:
        return _expire_wait(runtime, store, state)
    store.set_due(state.instance_id, grace)
    return lifecycle.redispatch(runtime, store, state)


def _take_over_orphans(runtime: Runtime, store: WorkflowStore, state: WorkflowState) -> int:
    """Dispatch the steps of a workflow whose lease is held by a dead process of this host
    (and only those: a step waiting for its retry's backoff is left alone)."""
    if state.runtime_status != RuntimeStatus.RUNNING or state.agent not in runtime.agents:
        return 0
    pending = lifecycle.pending_messages(store, state)
    if not any(owner_is_dead(store.lease_owner(m.workflow_id, m.step_seq, m.call_index)) for m in pending):
        return 0
    log.warning(
        "taking over %s step %s/%s: the process that held it died", state.instance_id, state.next.kind, state.step_seq
    )
    return lifecycle.redispatch(runtime, store, state, reason="its worker died")


def _expire_wait(runtime: Runtime, store: WorkflowStore, state: WorkflowState) -> int:
    """Deliver a timed-out approval as a denial; otherwise look again later."""
    pending = state.pending_event or {}
    timeout_at = pending.get("timeout_at_ms")
    grace = runtime.settings.dispatch_grace
    if not timeout_at or timeout_at > time.time() * 1000:
        wait = grace if not timeout_at else min(grace, max(0.1, timeout_at / 1000 - time.time()))
        store.set_due(state.instance_id, wait)
        return 0
    payload: Any = state.events.get(pending["name"])
    if pending["name"] in state.events:
        pass  # it arrived (even as null) but did not wake the workflow: deliver it rather than a timeout
    elif pending.get("kind") == "approval":
        payload = {"approved": False, "reason": "timed out waiting for approval"}
    else:
        payload = {"timeout": True, "error": f"timed out waiting for {pending.get('target') or pending['name']}"}
    woke = lifecycle.deliver_event(
        runtime, store, state.instance_id, pending["name"], payload, runtime.worker or "sweeper"
    )
    return int(woke)
