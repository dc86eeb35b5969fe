"""The sweeper: re-dispatches workflows whose step message was lost (DESIGN section 3, rule 2).

A workflow is due when no step has touched it for a while (``dispatch_grace`` after a
dispatch, ``lease_ttl`` after a heartbeat). The sweeper looks at due workflows only and
dispatches every pending step whose lease is not held; fencing makes a duplicate harmless.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import WorkflowNotFound
from ..store.workflows import TERMINAL
from .dispatch import StepMessage
from .leases import owner_is_dead
from .records import StepClock
from .runner import finish_workflow

log = logging.getLogger("agent_platform.sweeper")


def sweep_once(runtime: Any, limit: int = 200, everything: bool = False) -> int:
    """One pass over every store of the loaded agents; returns how many steps it dispatched.

    Args:
        limit: most workflows looked at per store.
        everything: look at every unfinished workflow, due or not (a worker does this
            once at start, to take over at once the steps of a process of its host that
            died, whose leases have not expired yet).
    """
    dispatched = 0
    for store in runtime.stores():
        ids = store.active_workflows(limit) if everything else store.due_workflows(limit)
        for wf in ids:
            try:
                dispatched += (
                    _take_over_orphans(runtime, store, wf) if everything else _sweep_workflow(runtime, store, wf)
                )
            except WorkflowNotFound:
                store.forget_active(wf)
            except Exception:
                log.exception("sweeping workflow %s failed", wf)
    return dispatched


def _sweep_workflow(runtime: Any, store: Any, wf: str) -> int:
    meta = store.meta(wf)
    status = meta["runtime_status"]
    grace = runtime.settings.dispatch_grace
    if meta["agent"] not in runtime.agents:
        store.set_due(wf, grace)  # another process serves this agent
        return 0
    if status in TERMINAL:
        finish_workflow(runtime, store, wf)  # a crash after its final checkpoint: finish it
        return 0
    if status == "SUSPENDED":
        return _expire_wait(runtime, store, meta)
    store.set_due(wf, grace)
    return redispatch(runtime, store, meta)


def _take_over_orphans(runtime: Any, store: Any, wf: str) -> int:
    """Dispatch the steps of ``wf`` whose lease is held by a dead process of this host
    (and only those: a step waiting for its retry's backoff is left alone)."""
    meta = store.meta(wf)
    if meta["runtime_status"] != "RUNNING" or meta["agent"] not in runtime.agents:
        return 0
    stage = meta["cursor"]
    if not any(owner_is_dead(store.lease_owner(wf, stage, index)) for index, _ in pending_steps(store, meta)):
        return 0
    log.warning("taking over %s step %s/%s: the process that held it died", wf, meta["next"]["kind"], stage)
    return redispatch(runtime, store, meta, reason="its worker died")


def _expire_wait(runtime: Any, store: Any, meta: dict[str, Any]) -> int:
    """Deliver a timed-out approval as a denial; otherwise look again later."""
    pending = meta.get("pending_event") or {}
    timeout_at = pending.get("timeout_at_ms")
    grace = runtime.settings.dispatch_grace
    if not timeout_at or timeout_at > time.time() * 1000:
        wait = grace if not timeout_at else min(grace, max(0.1, timeout_at / 1000 - time.time()))
        store.set_due(meta["instance_id"], wait)
        return 0
    payload: Any = store.event(meta["instance_id"], pending["name"])
    if payload is not None:
        pass  # it arrived but did not wake the workflow: deliver it rather than a timeout
    elif pending.get("kind") == "approval":
        payload = {"approved": False, "reason": "timed out waiting for approval"}
    else:
        payload = {"timeout": True, "error": f"timed out waiting for {pending.get('target') or pending['name']}"}
    record = StepClock().record(
        "event", "ok", 1, runtime.worker or "sweeper", {"name": pending["name"], "payload": payload}
    )
    if store.raise_event(meta["instance_id"], pending["name"], payload, record):
        return redispatch(runtime, store, store.meta(meta["instance_id"]), reason=f"event {pending['name']}")
    return 0


def _lease_held(store: Any, wf: str, stage: int, index: int | None) -> bool:
    """True while a live owner holds the step's lease; voids the lease of a dead process of
    this host (its heartbeat stopped, but its TTL has not run out yet)."""
    owner = store.lease_owner(wf, stage, index)
    if owner is None:
        return False
    if owner_is_dead(owner):
        log.warning("voiding the lease of %s step %s held by a dead process (%s)", wf, stage, owner)
        store.release_lease(wf, stage, index, owner)
        return False
    return True


def pending_steps(store: Any, meta: dict[str, Any]) -> list[tuple[int | None, str | None]]:
    """``(call index, tool name)`` of each step of the current stage not yet checkpointed:
    every unanswered call of a tool stage, else ``(None, None)`` for the one step."""
    step, stage = meta["next"], meta["cursor"]
    if step["kind"] != "tool":
        return [(None, None)]
    return [(c["index"], c["name"]) for c in step["calls"] if not store.is_done(meta["instance_id"], stage, c["index"])]


def redispatch(runtime: Any, store: Any, meta: dict[str, Any], reason: str = "") -> int:
    """Dispatch every pending step of a workflow whose lease nobody holds; returns how many.

    Used by the sweeper (``reason`` empty: logged as a warning, a step was lost) and by
    resume and raise-event (``reason`` says why: logged at INFO); duplicates are
    harmless (fencing).
    """
    wf, stage, kind = meta["instance_id"], meta["cursor"], meta["next"]["kind"]
    messages = [
        StepMessage(meta["agent"], wf, kind, stage, index, tool=name)
        for index, name in pending_steps(store, meta)
        if not _lease_held(store, wf, stage, index)
    ]
    for message in messages:
        if reason:
            log.info("dispatching %s step %s/%s (%s)", wf, message.kind, stage, reason)
        else:
            log.warning("re-dispatching %s step %s/%s: no worker holds it", wf, message.kind, stage)
        runtime.dispatch(message)
    return len(messages)
