"""Hooks that run inside a Celery worker: the sweeper timer and the registry heartbeat
(no extra process needed)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals

from agent_platform.engine.draining import set_draining
from agent_platform.engine.sweeper import sweep_due, sweep_once
from agent_platform.registry import RegistryHeartbeat
from agent_platform.supervision import fault_point, supervise

log = logging.getLogger("agent_platform.worker")


class SweeperThread(threading.Thread):
    """Runs :func:`sweep_due` every ``settings.sweep_interval`` seconds in the worker's
    main process; a short Redis lock per store lets one worker sweep each store per
    interval. An unexpected error restarts the loop with a log line
    (``agent_platform.supervision``)."""

    def __init__(self, runtime: Any) -> None:
        super().__init__(name="agent-platform-sweeper", daemon=True)
        self.runtime = runtime
        self.stopped = threading.Event()

    def run(self) -> None:
        try:  # once at start: take over the steps of dead processes of this host now
            sweep_once(self.runtime, everything=True)
        except Exception as exc:
            log.warning("start-up sweep failed: %s", exc)
        supervise("sweeper", self._loop, self.stopped)

    def _loop(self) -> None:
        interval = self.runtime.settings.sweep_interval
        while not self.stopped.wait(interval):
            fault_point("sweeper", self.runtime.settings.fault)
            try:
                sweep_due(self.runtime)
            except Exception as exc:  # Redis away: try again next interval
                log.warning("sweep failed: %s", exc)


def install_worker_hooks(app: Any, runtime: Any) -> None:
    """Start the sweeper and the registry heartbeat when this app's worker is ready; stop
    them at shutdown."""
    state: dict[str, Any] = {}

    def on_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app or not runtime.agents:
            return
        state["sweeper"] = SweeperThread(runtime)
        state["sweeper"].start()
        state["registry"] = RegistryHeartbeat(
            runtime, getattr(sender, "hostname", "") or "", served_agents(app, runtime)
        )
        state["registry"].start()
        log.info("agent-platform worker ready: agents %s", ", ".join(runtime.agents))

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        for name in ("sweeper", "registry"):
            thread = state.pop(name, None)
            if thread is not None:
                thread.stopped.set()

    def on_shutting_down(**_: Any) -> None:
        set_draining()  # a task running local steps stops after the step in flight

    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)


def served_agents(app: Any, runtime: Any) -> Any:
    """A callable naming the loaded agents whose queue this worker consumes (all of them
    without ``-Q``; ``-Q agent.<name>`` narrows it)."""

    def names() -> list[str]:
        selected = app.amqp.queues.consume_from or app.amqp.queues
        return [a.name for a in runtime.agents.values() if a.queue in selected]

    return names
