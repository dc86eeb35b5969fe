"""Turns per second with 1 and 2 worker processes on each worker pool, next to raw Celery
chains per second, and the worker's resident memory: ``python -m bench.throughput``.

For each pool (``--pools``: prefork, threads, gevent) and concurrency (``--concurrency``:
``-c 1`` and ``-c 2``; gevent always ``-c 32``, see :data:`bench.lanes.GEVENT_CONCURRENCY`),
one agent-platform worker and one raw-chain worker (:mod:`bench.raw_chain`, no
checkpoints, same settings, as many tasks per turn as agent-platform's turn, counted
first) start side by side on queues of their own. Each runs ``--warmup`` turns, then the
two alternate ``--runs`` measured runs each (ours, raw, ours, raw, ...), so that a noisy
moment hits both and no single run decides a verdict. A run is ``--turns`` turns, each in
its own session; the driver keeps ``--inflight`` turns outstanding (a closed loop: a new
turn starts when one ends) and learns of each end from a list (``BLPOP``): the raw
chain's last task pushes its turn there, and so does a finish hook of ours
(:func:`bench.agent.push_end`; following the step logs with ``XREAD`` instead woke the
driver for every record, which cost it 0.9 ms more CPU a turn than the raw chain's driver
on the same 2 CPUs). The work per turn is that of ``bench.steps``.

Figures:

- ``turns/s`` of each run: turns / seconds from the first start to the last end; the
  table prints min, median and max over the runs.
- ``vs raw``: agent-platform's median turns/s / the raw chain's, and the range of the
  ratios of runs made back to back (target at ``-c 2`` on prefork: at least 85%).
- ``-c 2 / -c 1``: target at least 1.0 (scaling with a second process never loses).
- ``RSS``: resident memory (``VmRSS``) of the worker's main process plus its pool
  children, read from ``/proc`` after the warm-up and after all its turns; the ratio is
  the growth (target: at most 1.2x).
- ``sweeper re-dispatches``: steps the sweeper sent again because they waited longer
  than ``dispatch_grace`` (should be 0).

A run stops starting turns at ``--phase-limit`` seconds (so the benchmark stays within two
minutes); the table then shows the turns done.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import redis_cost
from .agent import ends_key
from .common import Bench, Worker, median, note, parse_args, print_header, print_table, ratio
from .lanes import OURS, POOLS, RAW, TASK, Lane
from .raw_chain import DONE_KEY, SHAPES, start_turn


@dataclass
class Phase:
    """One worker (a system, pool and concurrency) and its measured runs."""

    system: str
    pool: str
    concurrency: int
    runs: list[tuple[int, float, bool]] = field(default_factory=list)  # (turns, seconds, cut short)
    warmup: int = 0
    rss_before: int = 0
    rss_after: int = 0
    redispatches: int = 0

    @property
    def rates(self) -> list[float]:
        return [turns / seconds if seconds else 0.0 for turns, seconds, _ in self.runs]

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def turns(self) -> int:
        return self.warmup + sum(turns for turns, _, _ in self.runs)


class OursLoop:
    """Closed loop of agent-platform turns: start, and learn of ends from the list that the
    worker's finish hook pushes to (:func:`bench.agent.push_end`, one ``BLPOP`` a turn as
    for the raw chain)."""

    def __init__(self, runtime: Any, agent: str = "BenchBot") -> None:
        self.runtime = runtime
        self.agent = agent
        self.store = runtime.store_for(agent)
        self.failed = 0
        self.store.client.delete(ends_key(agent))  # nothing left from an earlier worker

    def start(self) -> None:
        self.runtime.start_workflow(self.agent, TASK, session_id=f"t{uuid.uuid4().hex[:12]}")

    def wait_ends(self) -> int:
        """Block until an outstanding turn ends (2 s at most); returns how many ended."""
        popped = self.store.client.blpop([ends_key(self.agent)], timeout=2)
        if popped is None:
            return 0
        _, status = json.loads(popped[1])
        self.failed += status != "COMPLETED"
        return 1


class RawLoop:
    """Closed loop of raw chains of ``tasks`` tasks: start, and learn of ends from ``BLPOP``."""

    def __init__(self, app: Any, client: Any, tasks: int) -> None:
        self.app, self.client, self.tasks = app, client, tasks
        self.failed = 0

    def start(self) -> None:
        start_turn(self.app, uuid.uuid4().hex, TASK, self.tasks)

    def wait_ends(self) -> int:
        return 0 if self.client.blpop([DONE_KEY], timeout=2) is None else 1


def loop_for(bench: Bench, lane: Lane) -> OursLoop | RawLoop:
    """A closed loop of ``lane``'s turns."""
    if lane.ours:
        return OursLoop(bench.platform().runtime, lane.agent)
    from .raw_chain import get_app

    return RawLoop(get_app(lane.events, lane.queue), bench.client, lane.tasks)


def drive(loop: Any, turns: int, inflight: int, limit: float) -> tuple[int, float, bool]:
    """Run ``turns`` turns with ``inflight`` outstanding; returns (ended, seconds, cut short)."""
    started = ended = 0
    t0 = time.perf_counter()
    deadline = t0 + limit
    while started < min(inflight, turns):
        loop.start()
        started += 1
    idle_since = time.monotonic()
    while ended < started:
        got = loop.wait_ends()
        ended += got
        if got:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 60:
            raise RuntimeError(f"no turn ended for 60 s ({ended}/{started} ended)")
        cut = time.perf_counter() > deadline
        for _ in range(got):
            if started < turns and not cut:
                loop.start()
                started += 1
    elapsed = time.perf_counter() - t0
    if loop.failed:
        raise RuntimeError(f"{loop.failed} turns failed")
    return ended, elapsed, started < turns


def tasks_per_turn(bench: Bench, lane: Lane, turns: int = 3) -> float:
    """Celery task messages per turn of ``lane`` (MONITOR over ``turns`` turns)."""
    run = lane.runner(bench)

    def some_turns() -> int:
        for _ in range(turns):
            run()
        return turns

    cost, _ = redis_cost.monitor_pass(bench.redis.host, bench.redis.port, some_turns)
    return cost.per_turn("tasks")


def measure_pair(bench: Bench, lanes: list[Lane], concurrency: int, args: argparse.Namespace) -> list[Phase]:
    """Workers for ``lanes`` (ours, raw) side by side; warm-up, then ``--runs`` alternating runs."""
    workers: list[Worker] = [lane.start_worker(bench, concurrency, wait=False, end_signal=True) for lane in lanes]
    try:
        for worker in workers:
            worker.wait_ready()
        loops = [loop_for(bench, lane) for lane in lanes]
        phases = [Phase(lane.system, lane.pool, lane.concurrency(concurrency)) for lane in lanes]
        for loop, worker, phase in zip(loops, workers, phases, strict=True):
            drive(loop, args.warmup, args.inflight, limit=60)
            phase.warmup = args.warmup
            phase.rss_before = worker.rss_kib()
        for _ in range(args.runs):
            for loop, phase in zip(loops, phases, strict=True):
                phase.runs.append(drive(loop, args.turns, args.inflight, args.phase_limit))
        for worker, phase in zip(workers, phases, strict=True):
            phase.rss_after = worker.rss_kib()
            phase.redispatches = worker.log().count("re-dispatching")
            rates = " ".join(f"{r:.1f}" for r in phase.rates)
            note(f"{phase.system} {phase.pool} -c {phase.concurrency}: turns/s {rates}")
        return phases
    finally:
        for worker in workers:
            worker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="turns per run at most (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per phase (default 3)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up turns per worker (default 10)")
    parser.add_argument("--inflight", type=int, default=8, help="turns kept outstanding (default 8)")
    parser.add_argument("--phase-limit", type=float, default=2.5, help="seconds of one run at most (default 2.5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="pool sizes (default 1 2)")
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=POOLS, help="worker pools (default all)")
    args = parse_args(parser, argv, quick={"turns": 20, "warmup": 3, "phase_limit": 1.0})

    print_header("bench.throughput: turns per second and worker memory, per worker pool")
    phases: list[Phase] = []
    failed: list[str] = []
    with Bench("throughput", agent_app="bench.agent:lanes") as bench:
        print(bench.describe())
        probe = Lane(OURS)
        worker = probe.start_worker(bench, 1)
        tasks = tasks_per_turn(bench, probe)
        worker.stop()
        shape = min(SHAPES, key=lambda n: abs(n - tasks))
        print(f"agent-platform's turn: {tasks:.2f} Celery tasks (counted); raw chain: {shape} tasks")
        print()
        for pool in args.pools:
            for concurrency in [GEVENT] if pool == "gevent" else args.concurrency:
                lanes = [Lane(OURS, pool=pool), Lane(RAW, pool=pool, tasks=shape)]
                try:
                    phases += measure_pair(bench, lanes, concurrency, args)
                except RuntimeError as exc:  # one pool that stalls must not hide the others' figures
                    failed.append(f"{pool} -c {concurrency or 'gevent'}: {exc}")
                    note(f"{pool} phase failed: {exc}")
    _report(phases, args, shape)
    for line in failed:
        print(f"phase not measured: {line}")
    if failed:
        raise SystemExit(1)


#: The concurrency given for a gevent phase (the lane replaces it with GEVENT_CONCURRENCY).
GEVENT = 0


def _report(phases: list[Phase], args: argparse.Namespace, shape: int) -> None:
    by = {(p.system, p.pool, p.concurrency): p for p in phases}
    rows = []
    for p in phases:
        rates = p.rates
        cut = sum(1 for _, _, c in p.runs if c)
        rows.append(
            [p.system if p.system == OURS else f"{RAW}, {shape} tasks", p.pool, p.concurrency,
             sum(t for t, _, _ in p.runs), min(rates), median(rates), max(rates), ratio(max(rates), min(rates)),
             f"{cut}/{len(p.runs)}", p.rss_before // 1024, p.rss_after // 1024, p.turns,
             ratio(p.rss_after, p.rss_before), p.redispatches]
        )  # fmt: skip
    print(f"closed loop: {args.inflight} turns outstanding; {args.runs} runs of <= {args.turns} turns or")
    print(f"{args.phase_limit:g} s per phase, ours and raw alternating; {args.warmup} warm-up turns per worker")
    headers = ["system", "pool", "-c", "turns", "min turns/s", "median", "max", "max/min", "runs cut at limit"]
    headers += [f"RSS MiB after {args.warmup}", "RSS MiB after all", "turns in all", "RSS growth", "re-dispatches"]
    print_table(headers, rows)
    rows = []
    for p in phases:
        raw = by.get((RAW, p.pool, p.concurrency))
        if p.system != OURS or raw is None:
            continue
        pairs = [a / b for a, b in zip(p.rates, raw.rates, strict=False) if b]
        one = by.get((OURS, p.pool, 1))
        rows.append(
            [p.pool, p.concurrency, p.rate, raw.rate, f"{p.rate / raw.rate:.0%}" if raw.rate else "n/a",
             f"{min(pairs):.0%}-{max(pairs):.0%}" if pairs else "n/a",
             ratio(p.rate, one.rate) if one and p.concurrency != 1 else ""]
        )  # fmt: skip
    print("side by side: median turns/s per pool and concurrency")
    print_table(
        ["pool", "-c", "agent-platform", f"raw, {shape} tasks", "vs raw", "vs raw, run by run", "vs own -c 1"], rows
    )
    print("targets (prefork, the default pool; issue 15):")
    c1, c2 = by.get((OURS, "prefork", 1)), by.get((OURS, "prefork", 2))
    raw2 = by.get((RAW, "prefork", 2))
    if c1 and c2:
        verdict = "met" if c2.rate >= c1.rate else "NOT met"
        overlap = " (the runs' ranges overlap)" if min(c2.rates) < max(c1.rates) else ""
        print(f"  -c 2 never below -c 1: {c2.rate:.1f} vs {c1.rate:.1f} turns/s (medians) -> {verdict}{overlap}")
    if c2 and raw2 and raw2.rate:
        share = c2.rate / raw2.rate
        print(f"  -c 2 at >= 85% of the raw chain's: {share:.0%} -> {'met' if share >= 0.85 else 'NOT met'}")
    for p in phases:
        if p.system == OURS:
            growth = p.rss_after / p.rss_before if p.rss_before else 0
            print(
                f"  worker RSS {p.pool} -c {p.concurrency}: after {p.turns} turns {growth:.2f}x that after "
                f"{p.warmup} (target <= 1.2x) -> {'met' if growth <= 1.2 else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
