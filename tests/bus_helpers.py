"""Test helpers for the bus: a real ``agent-platform bus`` process and workers limited
to some queues with ``-Q`` (what a deployment runs for one agent per worker)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from agent_platform.processes import ManagedProcess, ProcessFailed

from .workers import REPO, Stack, Worker, apply_env

#: Fast settings for tests: short heartbeats, claims, blocking reads and sweeps.
FAST_ENV = {
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.3",
    "AGENT_PLATFORM_REGISTRY_HEARTBEAT": "0.5",
    "AGENT_PLATFORM_BUS_CLAIM_IDLE": "1",
    "AGENT_PLATFORM_BUS_BLOCK": "0.2",
}


class BusProcess:
    """``python -m agent_platform.cli bus`` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, **extra: str | None) -> None:
        self.env = apply_env(env, extra)
        self.log_path = Path(log_path)
        self.managed: ManagedProcess | None = None
        self.offset = 0  # where this process's lines start in the log file

    @property
    def proc(self) -> Any:
        """The ``Popen`` of the bus process (None before start)."""
        return self.managed.proc if self.managed is not None else None

    def start(self, wait: bool = True) -> BusProcess:
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "agent_platform.cli", "bus"]
        self.managed = ManagedProcess("bus", argv, env=self.env, cwd=REPO, log_path=self.log_path).start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the bus's ``bus ready`` log line."""
        assert self.managed is not None
        try:
            self.managed.wait_ready(lambda: "bus ready" in self.log(), timeout)
        except ProcessFailed as exc:
            raise AssertionError(str(exc)) from None

    def alive(self) -> bool:
        return self.managed is not None and self.managed.alive()

    def log(self) -> str:
        """What this process wrote to its log file."""
        try:
            return self.log_path.read_bytes()[self.offset :].decode(errors="replace")
        except OSError:
            return ""

    def count(self, pattern: str) -> int:
        """How many log lines match ``pattern`` (a regex)."""
        return sum(1 for line in self.log().splitlines() if re.search(pattern, line))

    def stop(self) -> None:
        """SIGTERM (the bus stops between two reads), then SIGKILL of its group."""
        if self.managed is not None:
            self.managed.stop(timeout=10, group=False)


def start_queue_worker(stack: Stack, name: str, queues: list[str], **env: str | None) -> Worker:
    """Start a worker consuming only ``queues`` (``-Q``) and wait until it is ready."""
    return stack.start_worker(name, concurrency=2, queues=queues, **env)


def dump(label: str, text: Any) -> None:
    """Print a labelled block (shown by pytest for a failed test)."""
    print(f"===== {label} =====\n{str(text)[-20000:]}")
