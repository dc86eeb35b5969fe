"""Shared set-up of the benchmarks: a private Redis, the model process, real Celery workers,
waits and tables.

Nothing touches the machine's Redis on 6379: every benchmark starts its own redis-server
on a free port (:class:`~agent_platform.embedded_redis.EmbeddedRedis`, AOF on with
``appendfsync everysec``, as in dev mode) in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import os
import platform as _platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.processes import ManagedProcess, ProcessFailed
from agent_platform.settings import ENV_FIELDS

REPO = Path(__file__).resolve().parent.parent
#: Variables a benchmark deployment sets or clears (never inherited from the shell).
PLATFORM_VARS = (*ENV_FIELDS, "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL")
_T0 = time.monotonic()


def note(message: str) -> None:
    """A progress line on stderr (the figures go to stdout)."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """nproc, CPU model, memory, load average, Python, and the date (UTC)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "load": load,
        "python": _platform.python_version(),
    }


def print_header(title: str) -> None:
    """The benchmark's title and the machine it ran on."""
    m = machine()
    print(f"== {title} ==")
    print(f"{m['date']} | {m['cpus']} CPUs, {m['cpu']}, {m['memory']} | Python {m['python']} | load {m['load']}")
    print()


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain fixed-width table (numbers right-aligned)."""
    text_rows = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text_rows:
        cells = [c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())
    print()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(".", "", 1).replace("x", "").replace("-", "", 1).replace("%", "").isdigit()


# -- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear between the closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x``."""
    return f"{a / b:.2f}x" if b else "n/a"


# -- processes --------------------------------------------------------------------------


def rss_kib(pids: Iterable[int]) -> int:
    """Sum of the resident set sizes of ``pids``, in KiB (psutil)."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss // 1024
        except psutil.NoSuchProcess:
            pass
    return total


class ModelProcess:
    """``python -m bench.model`` (the scripted model, zero latency) in its own process;
    it prints its base URL, and exits when its stdin closes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.managed: ManagedProcess | None = None
        self.base_url = ""

    def start(self, timeout: float = 30.0) -> ModelProcess:
        argv = [sys.executable, "-m", "bench.model"]
        self.managed = ManagedProcess("model", argv, env=self.env, cwd=REPO, stdout=subprocess.PIPE, text=True)
        proc = self.managed.start().proc
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"the model process did not start (got {line!r})")
        self.base_url = line
        return self

    def stop(self) -> None:
        if self.managed is None:
            return
        self.managed.proc.stdin.close()
        self.managed.stop(timeout=5)
        self.managed = None


class Worker:
    """One ``celery -A <app> worker`` process (its own session), logging to a file."""

    def __init__(self, app: str, name: str, concurrency: int, env: dict[str, str], log_path: Path) -> None:
        self.app, self.name, self.concurrency, self.env, self.log_path = app, name, concurrency, env, log_path
        self.managed: ManagedProcess | None = None
        self.started_at = 0.0

    @property
    def proc(self) -> Any:
        """The ``Popen`` of the main process (None before start)."""
        return self.managed.proc if self.managed is not None else None

    def start(self, wait: bool = True) -> Worker:
        """Start the worker; by default wait for Celery's ``ready.`` line."""
        cmd = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "--loglevel", "INFO",
            "-c", str(self.concurrency),
            "-n", f"{self.name}@%h",
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        self.managed = ManagedProcess(f"worker {self.name}", cmd, env=self.env, cwd=REPO, log_path=self.log_path)
        self.managed.start()
        self.started_at = time.monotonic()
        if wait:
            self.wait_ready()
        return self

    def log(self) -> str:
        return self.managed.log() if self.managed is not None else ""

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait for the ``ready.`` line; returns the seconds since :meth:`start`."""
        assert self.managed is not None
        try:
            self.managed.wait_ready(lambda: " ready." in self.log(), timeout, 0.02)
        except ProcessFailed as exc:
            raise RuntimeError(str(exc)) from None
        return time.monotonic() - self.started_at

    def pids(self) -> list[int]:
        """The main process and its pool children."""
        return [self.proc.pid, *self.managed.children()] if self.managed is not None and self.proc else []

    def rss_kib(self) -> int:
        """Resident memory of the main process plus its pool children, in KiB."""
        return rss_kib(self.pids())

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL of the process group."""
        if self.managed is not None:
            self.managed.stop(timeout=timeout, group=False)

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once (a crash)."""
        if self.managed is None:
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.managed.kill()


# -- a deployment -----------------------------------------------------------------------


class Bench:
    """A private Redis, the model process, and the platform's environment (set in this
    process too, so :func:`platform` builds the same Celery app as the workers use).

    Args:
        name: names the temporary folder.
        agent_app: ``AGENT_APP`` of the workers and of this process.
        env: extra platform variables (e.g. ``AGENT_PLATFORM_LEASE_TTL``).
    """

    def __init__(self, name: str, agent_app: str = "bench.agent:bench_bot", **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.workers: list[Worker] = []
        self._celery: Any = None
        self.redis = EmbeddedRedis(data_dir=self.dir / "redis", appendonly=True).start()
        base = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARS}
        base.update(
            REDIS_URL=self.redis.url,
            AGENT_APP=agent_app,
            AGENT_PLATFORM_COMPONENTS_PATH=str(REPO / "components"),
            PYTHONPATH=str(REPO),
            **env,
        )
        self.model = ModelProcess(base)
        try:
            self.model.start()
        except Exception:
            self.redis.stop()
            raise
        base["OPENAI_BASE_URL"] = self.model.base_url
        self.env = base
        for name_ in PLATFORM_VARS:
            os.environ.pop(name_, None)
        os.environ.update(base)
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True)

    def redis_label(self) -> str:
        """``Redis <version> (AOF <appendfsync>)`` of this deployment's server."""
        version = self.client.info("server")["redis_version"]
        aof = self.client.config_get("appendonly").get("appendonly")
        fsync = self.client.config_get("appendfsync").get("appendfsync")
        return f"Redis {version} (AOF {fsync})" if aof == "yes" else f"Redis {version} (no AOF)"

    def describe(self) -> str:
        """One line: the Redis server and the versions of the packages that carry a step."""
        from importlib.metadata import version

        packages = ", ".join(f"{name} {version(name)}" for name in ("celery", "kombu", "redis", "openai"))
        return f"{self.redis_label()} on 127.0.0.1 (private, started for this run); {packages}"

    def worker(
        self, app: str = "tasks", concurrency: int = 1, name: str | None = None, wait: bool = True, **env: str
    ) -> Worker:
        """Start a ``celery -A <app> worker`` with this deployment's environment."""
        name = name or f"{app.replace('.', '-')}{len(self.workers) + 1}"
        worker = Worker(app, name, concurrency, {**self.env, **env}, self.dir / f"{name}.log")
        self.workers.append(worker)
        return worker.start(wait=wait)

    def platform(self) -> Any:
        """agent-platform's Celery app in this process (its ``runtime`` starts workflows)."""
        if self._celery is None:
            from tasks import create_celery

            self._celery = create_celery()
        return self._celery

    def raw_app(self) -> Any:
        """The raw chain's Celery app in this process."""
        from .raw_chain import get_app

        return get_app()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.model.stop()
        if self._celery is not None:
            self._celery.runtime.close()
        self.client.close()
        self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- turns ------------------------------------------------------------------------------


def finished(record: dict[str, Any]) -> bool:
    """True for the record that ends a turn: ``finish``, or an error that ends it (FAILED)."""
    return record["kind"] == "finish" or (record["status"] == "error" and record["kind"] not in ("tool", "event"))


def wait_turn(store: Any, workflow_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Block on the step log (``XREAD BLOCK``) until the turn's last record; return it.

    Raises:
        TimeoutError: no final record within ``timeout`` seconds.
    """
    after = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in store.wait_steps(workflow_id, after, block_ms=1000):
            after = record["seq"]
            if finished(record):
                return record
    raise TimeoutError(f"turn {workflow_id} did not finish within {timeout} s: {store.state(workflow_id)}")


def run_turn(runtime: Any, agent: str, session_id: str, task: str = "Run the benchmark step.") -> float:
    """Start one agent-platform turn and wait for it; returns its seconds (start -> final record).

    Raises:
        RuntimeError: the turn did not complete.
    """
    t0 = time.perf_counter()
    workflow_id, _ = runtime.start_workflow(agent, task, session_id=session_id)
    record = wait_turn(runtime.store_for(agent), workflow_id)
    elapsed = time.perf_counter() - t0
    if record["kind"] != "finish":
        raise RuntimeError(f"turn {workflow_id} failed: {record}")
    return elapsed


def run_raw_turn(app: Any, client: redis.Redis, turn_id: str, task: str = "Run the benchmark step.") -> float:
    """Start one raw-chain turn and wait for its ``finish`` (BLPOP); returns its seconds."""
    from .raw_chain import DONE_KEY, start_turn

    t0 = time.perf_counter()
    start_turn(app, turn_id, task)
    popped = client.blpop([DONE_KEY], timeout=60)
    elapsed = time.perf_counter() - t0
    if popped is None or popped[1] != turn_id:
        raise RuntimeError(f"raw turn {turn_id} did not finish (got {popped})")
    return elapsed


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
