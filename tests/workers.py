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
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_platform.processes import ManagedProcess, ProcessFailed

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
    """One ``celery -A tasks worker`` process (a :class:`ManagedProcess`: its own session)."""

    def __init__(self, name: str, managed: ManagedProcess) -> None:
        self.name = name
        self.managed = managed
        self.log_path = managed.log_path
        self.mark = 0  # log offset at the start of the current test

    @property
    def proc(self) -> Any:
        """The ``Popen`` of the main process."""
        return self.managed.proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def hostname(self) -> str:
        """The Celery hostname (``name@host``), as step records show it."""
        return f"{self.name}@{os.uname().nodename}"

    def alive(self) -> bool:
        return self.managed.alive()

    def log(self, since_mark: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[self.mark if since_mark else 0 :].decode(errors="replace")

    def pool_pids(self) -> list[int]:
        """The pool processes (children of the main process), from psutil."""
        return self.managed.children()


class Stack:
    """Real Celery worker subprocesses for one test deployment.

    Args:
        env: the full environment of the workers.
        log_dir: where each worker's log file goes (``<name>.log``).
        concurrency: pool size of each worker (``-c``).
        pool: Celery's worker pool (``-P``): ``prefork``, ``threads``, ``gevent``...
    """

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int = 2, pool: str = "prefork") -> None:
        self.env = env
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.concurrency = concurrency
        self.pool = pool
        self.workers: list[Worker] = []
        self._control_app: Any = None

    def control_app(self) -> Any:
        """A bare Celery app on the workers' broker, for remote control (``ping``)."""
        if self._control_app is None:
            from celery import Celery

            from agent_platform.runtime import Runtime
            from agent_platform.settings import Settings
            from tasks.app import broker_config

            runtime = Runtime(Settings.from_env(self.env))  # the broker the workers chose, as they use it
            self._control_app = Celery("tests-control", set_as_current=False)
            self._control_app.conf.update(broker_config(runtime, runtime.broker()))
        return self._control_app

    # -- life cycle ---------------------------------------------------------------------
    def start_worker(
        self,
        name: str | None = None,
        concurrency: int | None = None,
        wait: bool = True,
        queues: list[str] | None = None,
        **env: str | None,
    ) -> Worker:
        """Start one worker (``-n <name>@%h``, ``-Q`` when ``queues``) and, by default,
        wait until it is ready."""
        name = name or f"w{next(_names)}"
        cmd = [
            sys.executable, "-m", "celery", "-A", "tasks", "worker",
            "--loglevel", "INFO",
            "-c", str(concurrency or self.concurrency),
            "-P", self.pool,
            "-n", f"{name}@%h",
            "--without-mingle", "--without-gossip",
            *(["-Q", ",".join(queues)] if queues else []),
        ]  # fmt: skip
        managed = ManagedProcess(f"worker {name}", cmd, env=apply_env(self.env, env), cwd=REPO,
                                 log_path=self.log_dir / f"{name}.log")  # fmt: skip
        worker = Worker(name, managed.start())
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
        try:
            worker.managed.wait_ready(lambda: self._pong(worker), timeout, 0.05)
        except ProcessFailed as exc:
            raise AssertionError(str(exc)) from None

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
        worker.managed.stop(timeout=timeout, group=False)

    def kill_worker(self, worker: Worker) -> None:
        """SIGKILL the worker's main process and its pool children at once (a crash)."""
        pids = [worker.pid, *worker.pool_pids()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.managed.kill()

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
