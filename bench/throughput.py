"""Turns per second with 1 and 2 worker processes, next to raw Celery chains per second,
and the worker's resident memory: ``python -m bench.throughput``.

For each concurrency (``celery worker -c 1`` and ``-c 2``: one worker whose prefork pool
has 1 or 2 processes), a fresh agent-platform worker runs ``--warmup`` turns, then
``--turns`` turns, each in its own session; the driver keeps ``--inflight`` turns
outstanding (a closed loop: a new turn starts when one ends) and learns of each end
from the step logs (``XREAD BLOCK``). Then a fresh raw-chain worker
(:mod:`bench.raw_chain`, no checkpoints, same settings) runs the same number of chains
the same way (ends via ``BLPOP``). The work per turn is that of ``bench.steps``.

Figures:

- ``turns/s``: measured turns / seconds from the first start to the last end.
- ``vs raw``: agent-platform's turns/s / the raw chain's at the same concurrency
  (target with 2 processes: at least 80%).
- ``RSS after N turns``: resident memory (``VmRSS``) of the worker's main process plus
  its pool children, read from ``/proc`` after the warm-up and after all turns; the
  ratio is the growth (target: at most 1.2x).
- ``sweeper re-dispatches``: steps the sweeper sent again because they waited longer
  than ``dispatch_grace`` (should be 0).

A phase stops early at ``--phase-limit`` seconds (so the benchmark stays within two
minutes on a busy machine); the table then shows the turns done.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .common import Bench, Worker, note, print_header, print_table, ratio
from .raw_chain import DONE_KEY, start_turn

TASK = "Run the benchmark step."


@dataclass
class Phase:
    system: str
    concurrency: int
    turns: int
    seconds: float
    rss_before: int = 0
    rss_after: int = 0
    redispatches: int = 0
    cut: bool = False

    @property
    def rate(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0


class OursLoop:
    """Closed loop of agent-platform turns: start, and learn of ends from the step logs."""

    def __init__(self, runtime: Any, agent: str = "BenchBot") -> None:
        self.runtime = runtime
        self.agent = agent
        self.store = runtime.store_for(agent)
        self.pending: dict[str, str] = {}  # step-log key -> last entry id read
        self.failed = 0

    def start(self) -> None:
        wf, _ = self.runtime.start_workflow(self.agent, TASK, session_id=f"t{uuid.uuid4().hex[:12]}")
        self.pending[self.store.key(wf, "steps")] = "0-0"

    def wait_ends(self) -> int:
        """Block until at least one outstanding turn ends; returns how many ended."""
        ended = 0
        reply = self.store.client.xread(dict(self.pending), block=2000)
        for key, entries in reply or []:
            for entry_id, fields in entries:
                self.pending[key] = entry_id
                record = json.loads(fields["r"])
                if record["kind"] == "finish" or (record["status"] == "error" and record["kind"] != "tool"):
                    self.failed += record["kind"] != "finish"
                    del self.pending[key]
                    ended += 1
                    break
        return ended


class RawLoop:
    """Closed loop of raw chains: start, and learn of ends from ``BLPOP``."""

    def __init__(self, app: Any, client: Any) -> None:
        self.app, self.client = app, client
        self.outstanding = 0
        self.failed = 0

    def start(self) -> None:
        start_turn(self.app, uuid.uuid4().hex, TASK)
        self.outstanding += 1

    def wait_ends(self) -> int:
        if self.client.blpop([DONE_KEY], timeout=2) is None:
            return 0
        self.outstanding -= 1
        return 1


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


def measure(
    bench: Bench, system: str, concurrency: int, args: argparse.Namespace, loop_factory: Any, app: str
) -> Phase:
    worker: Worker = bench.worker(app, concurrency=concurrency)
    try:
        loop = loop_factory()
        drive(loop, args.warmup, args.inflight, limit=60)
        rss_before = worker.rss_kib()
        turns, seconds, cut = drive(loop, args.turns, args.inflight, args.phase_limit)
        rss_after = worker.rss_kib()
        phase = Phase(system, concurrency, turns, seconds, rss_before, rss_after, cut=cut)
        phase.redispatches = worker.log().count("re-dispatching")
        note(f"{system} -c {concurrency}: {turns} turns in {seconds:.1f} s = {phase.rate:.1f}/s")
        return phase
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=500, help="measured turns per phase (default 500)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up turns per phase (default 10)")
    parser.add_argument("--inflight", type=int, default=8, help="turns kept outstanding (default 8)")
    parser.add_argument("--phase-limit", type=float, default=18.0, help="seconds per phase at most (default 18)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="pool sizes (default 1 2)")
    args = parser.parse_args(argv)

    print_header("bench.throughput: turns per second and worker memory")
    phases: list[Phase] = []
    with Bench("throughput") as bench:
        print(bench.describe())
        print()
        runtime = bench.platform().runtime
        raw_app = bench.raw_app()
        for concurrency in args.concurrency:
            phases.append(measure(bench, "agent-platform", concurrency, args, lambda: OursLoop(runtime), "tasks"))
            phases.append(
                measure(
                    bench,
                    "raw Celery chain",
                    concurrency,
                    args,
                    lambda: RawLoop(raw_app, bench.client),
                    "bench.raw_chain",
                )
            )
    _report(phases, args)


def _report(phases: list[Phase], args: argparse.Namespace) -> None:
    rows = []
    for p in phases:
        rows.append(
            [
                p.system,
                p.concurrency,
                f"{p.turns}{' (time limit)' if p.cut else ''}",
                p.seconds,
                p.rate,
                p.rss_before // 1024,
                p.rss_after // 1024,
                ratio(p.rss_after, p.rss_before),
                p.redispatches,
            ]
        )
    print(f"closed loop: {args.inflight} turns outstanding; {args.warmup} warm-up turns per phase")
    print_table(
        [
            "system",
            "processes",
            "turns",
            "seconds",
            "turns/s",
            f"RSS MiB after {args.warmup}",
            "RSS MiB after all",
            "RSS growth",
            "sweeper re-dispatches",
        ],
        rows,
    )
    print("targets:")
    by = {(p.system, p.concurrency): p for p in phases}
    for c in args.concurrency:
        ours, raw = by.get(("agent-platform", c)), by.get(("raw Celery chain", c))
        if ours and raw:
            share = ours.rate / raw.rate if raw.rate else 0
            goal = " (target >= 80% with 2 processes)" if c == 2 else ""
            verdict = (" -> met" if share >= 0.8 else " -> NOT met") if c == 2 else ""
            print(f"  {c} process(es): agent-platform at {share:.0%} of raw Celery's turns/s{goal}{verdict}")
    for p in phases:
        if p.system == "agent-platform":
            growth = p.rss_after / p.rss_before if p.rss_before else 0
            print(
                f"  worker RSS -c {p.concurrency}: after {args.warmup + p.turns} turns {growth:.2f}x that after "
                f"{args.warmup} (target <= 1.2x) -> {'met' if growth <= 1.2 else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
