"""Step leases: who runs a step now. One keeper thread per process renews them all.

A lease is a Redis key with a TTL whose value names its owner
``<hostname>|<pid>|<random>``; the keeper renews every lease of this process every
``ttl / 3`` seconds, so a process that dies stops renewing and its leases expire. The
owner's host and pid let a worker starting on the same host void at once the leases of
a process that no longer exists (:func:`owner_is_dead`).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store.workflows import WorkflowStore
    from .dispatch import StepMessage

from ..supervision import fault_point, supervise

log = logging.getLogger("agent_platform.leases")


def new_token() -> str:
    """A lease token naming this process: ``<hostname>|<pid>|<uuid hex>``."""
    return f"{socket.gethostname()}|{os.getpid()}|{uuid.uuid4().hex}"


def owner_is_dead(token: str | None) -> bool:
    """True when ``token``'s owner was a process of this host that no longer runs."""
    if not token:
        return False
    host, _, rest = token.partition("|")
    pid_text = rest.partition("|")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (killed, not yet reaped) counts as dead
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
        return text[text.rfind(")") + 2] == "Z"
    except OSError:
        return False


class LeaseKeeper:
    """Renews the leases of the steps this process runs, from one daemon thread.

    Use :func:`keeper` for the process's instance (a forked child gets its own). An
    unexpected error restarts the renewing loop with a log line (``agent_platform.supervision``).
    """

    def __init__(self) -> None:
        self._leases: dict[str, tuple[WorkflowStore, StepMessage, str, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, store: WorkflowStore, message: StepMessage, token: str, ttl: float) -> None:
        """Renew ``message``'s lease until :meth:`drop` (and push the sweeper's due time)."""
        with self._lock:
            self._leases[token] = (store, message, token, ttl)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._supervised, name="agent-platform-leases", daemon=True)
                self._thread.start()

    def drop(self, token: str) -> None:
        """Stop renewing the lease ``token`` (the checkpoint or the runner releases it)."""
        with self._lock:
            self._leases.pop(token, None)

    def _supervised(self) -> None:
        runs = itertools.count()
        # never stopped: a daemon of the process; a restarted loop renews at once (time has passed)
        supervise("leases", lambda: self._run(renew_now=next(runs) > 0), threading.Event())

    def _run(self, renew_now: bool = False) -> None:
        while True:
            with self._lock:
                held = list(self._leases.values())
            interval = min((ttl for *_, ttl in held), default=3.0) / 3
            if not renew_now:
                self._wake.wait(interval)
                with self._lock:
                    held = list(self._leases.values())
            renew_now = False
            for store, message, token, ttl in held:
                with self._lock:
                    if token not in self._leases:
                        continue
                fault_point("leases")  # crash tests: while a lease is due for renewal
                try:
                    m = message
                    renewed = store.renew_lease(m.workflow_id, m.step_seq, m.call_index, token, ttl)
                    with self._lock:
                        still_held = token in self._leases  # not dropped meanwhile by its checkpoint
                    if not renewed and still_held:
                        log.warning("lease of %s step %s/%s was lost", m.workflow_id, m.kind, m.step_seq)
                    store.set_due(m.workflow_id, ttl)
                except Exception as exc:  # Redis restarting: keep trying; fencing keeps us safe
                    log.warning("renewing the lease of %s failed: %s", message.workflow_id, exc)


_keeper: LeaseKeeper | None = None
_keeper_lock = threading.Lock()


def keeper() -> LeaseKeeper:
    """This process's :class:`LeaseKeeper` (a new one after a fork)."""
    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper._pid != os.getpid():
            _keeper = LeaseKeeper()
        return _keeper
