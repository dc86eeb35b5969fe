"""Cost of one agent turn on four systems doing the same work: ``python -m bench.steps``.

The turn is start, llm, tool, llm, finish: two calls to the same scripted model (a
separate process, zero added latency: first a tool call, then the answer) and one no-op
tool call. The systems:

(a) agent-platform: one ``celery -A tasks worker -c 1``; a turn is started with
    ``Runtime.start_workflow`` and is over when its ``finish`` record appears in the
    step log (``XREAD BLOCK``); every step is checkpointed in Redis (AOF, everysec).
(b) a raw Celery chain of the same five tasks, no checkpoints (:mod:`bench.raw_chain`),
    one ``celery -A bench.raw_chain worker -c 1`` on the same Redis with the same
    Celery settings; over when ``finish`` pushes to a list (``BLPOP``). The floor.
(c) DBOS Transact: the steps as ``@DBOS.step`` in one ``@DBOS.workflow``, in process.
(d) LangGraph with ``PostgresSaver``, one node per step, in process; with
    ``durability="sync"`` (like ours: a step's checkpoint is written before the next
    step) and with LangGraph's default ``"async"``.
(c) and (d) use PostgreSQL on 127.0.0.1:5432 (database ``bench``), or SQLite when it
does not answer (the table says which).

Turns run round-robin (one turn of each system per round) so that a change of load on
the machine hits every system alike. Figures:

- ``median ms`` / ``p90 ms``: wall time of one turn, from the start call to the
  driver seeing the end, over ``--turns`` turns after ``--warmup`` warm-up turns.
- ``ms/step``: median / 5.
- ``vs agent-platform``: the system's median / agent-platform's (above 1: slower than us).
- ``model call``: the median of one direct call to the model from this process (the
  floor of an ``llm`` step); ``overhead/step`` = (median turn - 2 model calls) / 5: what
  the system adds per step around the work; compared with the raw chain's (target: at
  most 1.3x).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import turn
from .common import (
    Bench,
    median,
    note,
    percentile,
    print_header,
    print_table,
    ratio,
    run_raw_turn,
    run_turn,
)

STEPS = 5
TASK = "Run the benchmark step."


@dataclass
class System:
    name: str
    store: str
    run: Callable[[], float]
    times: list[float] = field(default_factory=list)
    error: str = ""


def _peer_systems(bench: Bench) -> tuple[list[System], list[Callable[[], None]], list[str]]:
    """DBOS and LangGraph (sync and async durability), when the [bench] extra is installed."""
    systems: list[System] = []
    closers: list[Callable[[], None]] = []
    notes: list[str] = []
    if not all(importlib.util.find_spec(name) for name in ("dbos", "langgraph", "psycopg")):
        return [], [], ["DBOS and LangGraph skipped: not installed (pip install -e '.[dev,bench]')"]
    from . import peers

    problem = peers.postgres_available()
    url = None if problem else peers.POSTGRES_URL
    if problem:
        notes.append(f"PostgreSQL not reachable at {peers.POSTGRES_URL} ({problem}): peers use SQLite")
    else:
        notes.append(f"peers' store: {peers.postgres_durability()}, database {url.rsplit('/', 1)[1]}")
    factories: list[tuple[str, Callable[[], Any]]] = [
        ("DBOS", lambda: peers.dbos_peer(url, bench.dir)),
        ("LangGraph sync", lambda: peers.langgraph_peer(url, bench.dir, "sync")),
        ("LangGraph async", lambda: peers.langgraph_peer(url, bench.dir, "async")),
    ]
    for label, factory in factories:
        try:
            peer = factory()
        except ImportError as exc:
            notes.append(f"{label} skipped: {exc} (pip install -e '.[dev,bench]')")
            continue
        except Exception as exc:
            notes.append(f"{label} could not start: {type(exc).__name__}: {exc}")
            continue
        closers.append(peer.close)
        systems.append(System(peer.name, peer.store, lambda run=peer.run: _timed_call(run)))
    return systems, closers, notes


def _timed_call(run: Callable[[str], Any]) -> float:
    t0 = time.perf_counter()
    run(TASK)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="measured turns per system (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up turns per system (default 10)")
    args = parser.parse_args(argv)

    print_header("bench.steps: one turn (start, llm, tool, llm, finish) on four systems")
    with Bench("steps") as bench:
        print(bench.describe())
        print()
        note("starting the agent-platform and raw-chain workers (-c 1)")
        ours_worker = bench.worker("tasks", concurrency=1, wait=False)
        raw_worker = bench.worker("bench.raw_chain", concurrency=1, wait=False)
        ours_worker.wait_ready()
        raw_worker.wait_ready()
        runtime = bench.platform().runtime
        raw_app = bench.raw_app()
        sessions = itertools.count()
        systems = [
            System(
                "agent-platform",
                f"{bench.redis_label()}, 1 worker -c 1",
                lambda: run_turn(runtime, "BenchBot", f"s{next(sessions)}", TASK),
            ),
            System(
                "raw Celery chain (floor)",
                "none (no checkpoints), 1 worker -c 1",
                lambda: run_raw_turn(raw_app, bench.client, uuid.uuid4().hex, TASK),
            ),
        ]
        note("starting DBOS and LangGraph")
        peer_systems, closers, notes = _peer_systems(bench)
        systems.extend(peer_systems)
        try:
            model_times = [_timed_call(lambda _: turn.call_model(turn.first_messages(TASK))) for _ in range(60)][10:]
            note(f"{args.warmup} warm-up rounds, then {args.turns} measured rounds over {len(systems)} systems")
            for round_ in range(args.warmup + args.turns):
                for system in systems:
                    if system.error:
                        continue
                    try:
                        elapsed = system.run()
                    except Exception as exc:
                        system.error = f"{type(exc).__name__}: {exc}"[:200]
                        note(f"{system.name} failed: {system.error}")
                        continue
                    if round_ >= args.warmup:
                        system.times.append(elapsed)
                if round_ and round_ % 20 == 0:
                    note(f"round {round_}")
        finally:
            for close in closers:
                try:
                    close()
                except Exception as exc:
                    note(f"closing a peer failed: {exc}")
    _report(systems, model_times, notes)
    importlib.import_module("bench.streaming_cost").report()  # the cost of streaming per llm step


def _report(systems: list[System], model_times: list[float], notes: list[str]) -> None:
    ours, raw = systems[0], systems[1]
    base = median(ours.times) * 1000
    model_ms = median(model_times) * 1000
    errors = any(s.error for s in systems)
    rows = []
    for s in systems:
        if not s.times:
            rows.append([s.name, s.store, 0, "-", "-", "-", "-"] + ([f"error: {s.error}"] if errors else []))
            continue
        med, p90 = median(s.times) * 1000, percentile(s.times, 90) * 1000
        row = [s.name, s.store, len(s.times), med, p90, med / STEPS, ratio(med, base)]
        rows.append(row + ([s.error] if errors else []))
    headers = ["system", "durable store", "turns", "median ms", "p90 ms", "ms/step", "vs agent-platform"]
    print_table(headers + (["error"] if errors else []), rows)
    print("note: agent-platform and the raw chain cross the Celery broker between steps (a worker process);")
    print("      DBOS and LangGraph run every step in the calling process and commit each checkpoint to the database.")
    for line in notes:
        print(f"note: {line}")
    print(f"model call (direct, from the driver): median {model_ms:.2f} ms over {len(model_times)} calls")
    print()
    if not ours.times or not raw.times:
        return
    ours_step = (median(ours.times) * 1000 - 2 * model_ms) / STEPS
    raw_step = (median(raw.times) * 1000 - 2 * model_ms) / STEPS
    print_table(
        ["per step", "agent-platform", "raw Celery chain", "ratio"],
        [
            [
                "ms per step (turn / 5)",
                base / STEPS,
                median(raw.times) * 1000 / STEPS,
                ratio(base, median(raw.times) * 1000),
            ],
            ["overhead ms per step (turn - 2 model calls) / 5", ours_step, raw_step, ratio(ours_step, raw_step)],
            ["checkpoint cost ms per step (ours - raw) / 5", ours_step - raw_step, "", ""],
        ],
    )
    print("targets:")
    met = "met" if raw_step > 0 and ours_step / raw_step <= 1.3 else "NOT met"
    print(f"  step overhead <= 1.3x the raw chain's: {ratio(ours_step, raw_step)} -> {met}")
    for s in systems[2:]:
        if s.times:
            r = median(s.times) * 1000 / base
            print(f"  >= 5x faster than {s.name} ({s.store}): {r:.2f}x -> {'met' if r >= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
