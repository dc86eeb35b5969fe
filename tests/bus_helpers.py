"""Test helpers for the bus: a real ``agent-platform bus`` process and workers limited
to some queues with ``-Q`` (what a deployment runs for one agent per worker)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .workers import REPO, Stack, Worker, apply_env, wait_until

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
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0  # where this process's lines start in the log file

    def start(self, wait: bool = True) -> BusProcess:
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent_platform.cli", "bus"],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the bus's ``bus ready`` log line."""
        wait_until(lambda: "bus ready" in self.log() or not self.alive(), timeout, message="the bus to be ready")
        assert self.alive(), f"the bus exited with {self.proc and self.proc.returncode}:\n{self.log()[-4000:]}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)


def start_queue_worker(stack: Stack, name: str, queues: list[str], **env: str | None) -> Worker:
    """Start a worker consuming only ``queues`` (``-Q``) and wait until it is ready."""
    log_path = stack.log_dir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by stack.stop()
    cmd = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker",
        "--loglevel", "INFO", "-c", "2", "-n", f"{name}@%h",
        "--without-mingle", "--without-gossip", "-Q", ",".join(queues),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=apply_env(stack.env, env),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = Worker(name, proc, log_path, log_file)
    stack.workers.append(worker)
    stack.wait_ready(worker)
    return worker


def dump(label: str, text: Any) -> None:
    """Print a labelled block (shown by pytest for a failed test)."""
    print(f"===== {label} =====\n{str(text)[-20000:]}")
