"""A lane: one Celery system under test (agent-platform in a mode, or a raw chain of a shape)
on one kind of worker, with its own queue so that several run side by side.

``bench.steps``, ``bench.throughput`` and ``bench.capacity`` build their rows from lanes:
agent-platform in default mode or with local steps, the raw Celery chain of 1, 3 or 5
tasks with task events on or off, each on a prefork, threads or gevent pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .agent import END_SIGNAL_ENV, LOCAL_STEPS_ENV, lane_agent, local_steps_support
from .common import Bench, Worker, run_raw_turn, run_turn
from .raw_chain import QUEUE

OURS = "agent-platform"
RAW = "raw Celery chain"
#: Celery worker pools compared (``celery worker -P``).
POOLS = ("prefork", "threads", "gevent")
#: Greenlets of a gevent worker, whatever concurrency is asked for. A green worker stalls
#: up to 2 s a step when more steps wait than it has greenlets: Celery runs a green pool
#: with its polling consumer loop (``synloop``), which does not fetch while the prefetch
#: window (concurrency x prefetch multiplier 1) is full and looks again only after its 2 s
#: poll timeout. Measured with ``bench.throughput --quick`` (8 turns outstanding, once a
#: gevent worker's model calls no longer deadlocked, see agent_platform/llm/green.py):
#: 0.17 turns/s at -c 1, 0.36 at -c 2, 1.3 at -c 4, the raw chain alike; 32.9 at -c 8 (an
#: earlier note had 8 turns at -c 8 fall to 2-3 turns/s) and 31.7-35.5 at -c 32. So -c stays
#: well above the steps in flight (the benchmarks keep <= 8); gevent is deployed with many
#: greenlets anyway (one process, one CPU).
GEVENT_CONCURRENCY = 32
TASK = "Run the benchmark step."


@dataclass(frozen=True)
class Lane:
    """One system on one kind of worker.

    Attributes:
        system: :data:`OURS` or :data:`RAW`.
        pool: the worker's pool (``-P``).
        local: agent-platform with local steps (issue 17).
        tasks: the raw chain's Celery tasks per turn (1, 3 or 5).
        events: the raw chain's task events (agent-platform's are always on).
        base: the agent the lane clones (``BenchBot``; ``LongBot`` for long turns).
    """

    system: str
    pool: str = "prefork"
    local: bool = False
    tasks: int = 3
    events: bool = True
    base: str = "BenchBot"

    @property
    def ours(self) -> bool:
        return self.system == OURS

    @property
    def label(self) -> str:
        """The row's name, without the pool."""
        if self.ours:
            return f"{OURS}, local steps" if self.local else f"{OURS}, default mode"
        return f"{RAW}, {self.tasks} task{'s' if self.tasks > 1 else ''}" + ("" if self.events else ", events off")

    @property
    def agent(self) -> str:
        return lane_agent(self.pool, self.local, self.base)

    @property
    def queue(self) -> str:
        if self.ours:
            return f"agent.{self.agent}"
        suffix = ("" if self.pool == "prefork" else f".{self.pool}") + ("" if self.events else ".noevents")
        return QUEUE + suffix

    @property
    def supported(self) -> bool:
        """False for local steps on an engine without them (the row prints n/a)."""
        return not self.local or local_steps_support() is not None

    @property
    def worker_key(self) -> tuple[str, str]:
        """Lanes with the same key share a worker (the raw chain's shapes, on one queue)."""
        return (self.system, self.queue)

    def concurrency(self, asked: int) -> int:
        """The worker's ``-c``: ``asked``, or :data:`GEVENT_CONCURRENCY` on a gevent pool."""
        return GEVENT_CONCURRENCY if self.pool == "gevent" else asked

    def start_worker(self, bench: Bench, concurrency: int = 1, wait: bool = True, end_signal: bool = False) -> Worker:
        """A worker for this lane: ``-P <pool> -c <concurrency> -Q <queue>``, with the lane's
        environment (``concurrency`` as :meth:`concurrency` says); ``end_signal``: ours
        pushes each ended turn to a list (:data:`bench.agent.END_SIGNAL_ENV`)."""
        concurrency = self.concurrency(concurrency)
        env = dict(LOCAL_STEPS_ENV) if self.local else {}
        if end_signal and self.ours:
            env[END_SIGNAL_ENV] = "1"
        if not self.ours:
            env.update(BENCH_RAW_QUEUE=self.queue, BENCH_RAW_EVENTS="1" if self.events else "0")
        app = "tasks" if self.ours else "bench.raw_chain"
        name = f"{self.queue.replace('.', '-')}-c{concurrency}-{uuid.uuid4().hex[:4]}"
        return bench.worker(app, concurrency, name, wait, pool=self.pool, queues=[self.queue], **env)

    def runner(self, bench: Bench, task: str = TASK) -> Callable[[], float]:
        """One turn of this lane, started and waited for by the driver; returns its seconds."""
        if self.ours:
            runtime = bench.platform().runtime
            return lambda: run_turn(runtime, self.agent, f"s{uuid.uuid4().hex[:12]}", task)
        from .raw_chain import get_app

        app = get_app(self.events, self.queue)
        return lambda: run_raw_turn(app, bench.client, uuid.uuid4().hex, task, self.tasks)


def start_workers(bench: Bench, lanes: list[Lane], concurrency: int = 1) -> dict[tuple[str, str], Worker]:
    """One worker per distinct :attr:`Lane.worker_key` of the supported lanes, started
    together, then waited for."""
    workers: dict[tuple[str, str], Worker] = {}
    for lane in lanes:
        if lane.supported and lane.worker_key not in workers:
            workers[lane.worker_key] = lane.start_worker(bench, concurrency, wait=False)
    for worker in workers.values():
        worker.wait_ready()
    return workers
