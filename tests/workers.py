"""Real Celery worker processes for tests: start, wait until ready, stop, crash.

Each worker is ``python -m celery -A tasks worker`` in its own session (process group),
logging to a file; nothing is mocked. A worker is ready when it answers Celery's
remote-control ``ping`` (``app.control.ping``) through the broker.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_platform.processes import children_of, kill_group

REPO = Path(__file__).resolve().parent.parent

_names = itertools.count(1)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises:
        AssertionError: ``timeout`` seconds passed (``message`` says what was awaited).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


def apply_env(base: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """``base`` with ``changes`` applied (None removes a variable)."""
    env = dict(base)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class Worker:
    """One ``celery -A tasks worker`` process (its own session / process group)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path, log_file: Any) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._log_file = log_file
        self.mark = 0  # log offset at the start of the current test

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def hostname(self) -> str:
        """The Celery hostname (``name@host``), as step records show it."""
        return f"{self.name}@{os.uname().nodename}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, since_mark: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[self.mark if since_mark else 0 :].decode(errors="replace")

    def pool_pids(self) -> list[int]:
        """The pool processes (children of the main process), from /proc."""
        return children_of(self.pid)

    def close_log(self) -> None:
        if not self._log_file.closed:
            self._log_file.close()


class Stack:
    """Real Celery worker subprocesses for one test deployment.

    Args:
        env: the full environment of the workers.
        log_dir: where each worker's log file goes (``<name>.log``).
        concurrency: prefork pool size of each worker (``-c``).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int = 2) -> None:
        self.env = env
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.concurrency = concurrency
        self.workers: list[Worker] = []
        self._control_app: Any = None

    def control_app(self) -> Any:
        """A bare Celery app on the workers' broker, for remote control (``ping``)."""
        if self._control_app is None:
            from celery import Celery

            from agent_platform.runtime import Runtime
            from agent_platform.settings import Settings

            broker = Runtime(Settings.from_env(self.env)).broker()  # what the workers chose
            self._control_app = Celery("tests-control", broker=broker.url, set_as_current=False)
            self._control_app.conf.broker_transport_options = broker.transport_options
        return self._control_app

    # -- life cycle ---------------------------------------------------------------------
    def start_worker(
        self, name: str | None = None, concurrency: int | None = None, wait: bool = True, **env: str | None
    ) -> Worker:
        """Start one worker (``-n <name>@%h``) and, by default, wait until it is ready."""
        name = name or f"w{next(_names)}"
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable, "-m", "celery", "-A", "tasks", "worker",
            "--loglevel", "INFO",
            "-c", str(concurrency or self.concurrency),
            "-n", f"{name}@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=apply_env(self.env, env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(name, proc, log_path, log_file)
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def start(self, count: int = 1) -> Stack:
        """Start ``count`` workers and wait until every one is ready."""
        started = [self.start_worker(wait=False) for _ in range(count)]
        for worker in started:
            self.wait_ready(worker)
        return self

    def wait_ready(self, worker: Worker, timeout: float = 60.0) -> None:
        """Wait until the worker answers ``app.control.ping`` (its consumer runs)."""
        deadline = time.monotonic() + timeout
        while not self._pong(worker):
            if not worker.alive():
                raise AssertionError(
                    f"worker {worker.name} exited with {worker.proc.returncode}:\n{worker.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.name} not ready within {timeout} s:\n{worker.log()[-4000:]}")
            time.sleep(0.05)

    def _pong(self, worker: Worker) -> bool:
        try:
            return bool(self.control_app().control.ping(destination=[worker.hostname], timeout=0.5))
        except Exception:  # the broker is (re)starting: a new connection next time
            if self._control_app is not None:
                self._control_app.close()
                self._control_app = None
            return False

    def stop_worker(self, worker: Worker, timeout: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL of its process group after ``timeout``."""
        if worker.alive():
            worker.proc.send_signal(signal.SIGTERM)
            try:
                worker.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        kill_group(worker.proc)
        worker.close_log()

    def kill_worker(self, worker: Worker) -> None:
        """SIGKILL the worker's main process and its pool children at once (a crash)."""
        pids = [worker.pid, *worker.pool_pids()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_group(worker.proc)

    def kill_pool(self, worker: Worker) -> list[int]:
        """SIGKILL only the pool children (the main process stays and replaces them)."""
        pids = worker.pool_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def stop(self) -> None:
        """Stop every worker (in parallel: each warm shutdown takes about a second)."""
        threads = [threading.Thread(target=self.stop_worker, args=(w,)) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._control_app is not None:
            self._control_app.close()
            self._control_app = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- logs ---------------------------------------------------------------------------
    def mark(self) -> None:
        """Remember where each log ends (the start of a test)."""
        for worker in self.workers:
            worker.mark = len(worker.log().encode())

    def logs(self, since_mark: bool = True) -> str:
        return "\n".join(
            f"===== worker {w.name} (pid {w.pid}) =====\n{w.log(since_mark)[-20000:]}" for w in self.workers
        )

    def find_in_logs(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in some worker's log; return the match."""

        def search() -> re.Match[str] | None:
            for worker in self.workers:
                found = re.search(pattern, worker.log())
                if found:
                    return found
            return None

        return wait_until(search, timeout, message=f"{pattern!r} in the worker logs")
