"""Background threads of long-lived processes that never die silently.

The bus consumers, the sweeper, the registry heartbeat and the lease keeper each run a
loop in a daemon thread. Each loop already survives what it expects (Redis away: a
warning, then the next round); anything else used to end the thread without a word
while its process stayed up doing nothing (C18: a bus under RESP3). :func:`supervise`
runs such a loop again after an unexpected exception, with one ERROR log line and its
traceback each time, waiting 1, 2, 4 ... up to 30 s between two crashes (back to 1 s
once a run has lasted a minute).

Crash tests: ``AGENT_PLATFORM_FAULT=thread_crash:<name>[,<name>...]`` (``bus``,
``sweeper``, ``registry``, ``leases``) makes :func:`fault_point` raise
:class:`InjectedFault` once per process in each named thread's loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("agent_platform.supervision")

FAULT_PREFIX = "thread_crash:"
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0

_fired: set[str] = set()
_fired_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised by :func:`fault_point` when ``AGENT_PLATFORM_FAULT`` names its thread (tests)."""


def supervise(name: str, loop: Callable[[], None], stopped: threading.Event) -> None:
    """Run ``loop()`` until it returns or ``stopped`` is set; run it again after an
    exception (logged with its traceback), with a growing pause between crashes.

    Args:
        name: the thread's name in log lines (e.g. ``sweeper``).
        loop: the thread's work; it returns when its own stop condition is met.
        stopped: set to end supervision (also ends the pause between two runs).
    """
    backoff = FIRST_BACKOFF
    while not stopped.is_set():
        started = time.monotonic()
        try:
            loop()
            return
        except Exception:
            if time.monotonic() - started >= HEALTHY_AFTER:
                backoff = FIRST_BACKOFF
            log.exception("thread %s crashed; restarting it in %.0f s", name, backoff)
        if stopped.wait(backoff):
            return
        log.warning("thread %s restarted", name)
        backoff = min(MAX_BACKOFF, backoff * 2)


def fault_point(name: str, fault: str | None = None) -> None:
    """Raise :class:`InjectedFault` once per process when the fault names thread ``name``.

    Args:
        fault: the fault setting (default: ``AGENT_PLATFORM_FAULT`` from the environment).
    """
    fault = os.environ.get("AGENT_PLATFORM_FAULT") if fault is None else fault
    if not fault or not fault.startswith(FAULT_PREFIX) or name not in fault[len(FAULT_PREFIX) :].split(","):
        return
    key = f"{os.getpid()}:{name}"
    with _fired_lock:
        if key in _fired:
            return
        _fired.add(key)
    raise InjectedFault(f"fault injection: thread {name} crashes (AGENT_PLATFORM_FAULT={fault})")
