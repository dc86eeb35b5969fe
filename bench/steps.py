"""Cost of one agent turn on every system doing the same work: ``python -m bench.steps``.

The turn: two calls to the same scripted model (a separate process, zero added latency:
first a tool call, then the answer) and one no-op tool call. The systems, side by side in
one run:

- agent-platform in default mode (one Celery task per model call and per tool call) and
  with local steps (issue 17: sequential steps in one task; "n/a" on an engine without
  them), one ``celery -A tasks worker -c 1`` each; a turn is started with
  ``Runtime.start_workflow`` and is over when its ``finish`` record appears in the step
  log (``XREAD BLOCK``); every step is checkpointed in Redis (AOF, everysec).
- raw Celery chains of the same work, no checkpoints (:mod:`bench.raw_chain`): 3 tasks
  (llm, tool, llm), 5 tasks (start, llm, tool, llm, finish), 1 task (the whole turn), and
  5 tasks with task events off; same Redis, same Celery settings; over when the last
  task pushes to a list (``BLPOP``).
- both of them again on the ``threads`` and ``gevent`` pools (``--pools``): agent-platform's
  default mode and the 3-task chain (``-c 1``, but gevent ``-c 32``: see
  :data:`bench.lanes.GEVENT_CONCURRENCY`).
- DBOS Transact (``@DBOS.step`` in a ``@DBOS.workflow``) and LangGraph (``PostgresSaver``,
  ``durability="sync"`` and ``"async"``), in process, on PostgreSQL (database ``bench``,
  created if missing; SQLite when no PostgreSQL answers), each with 5 durable steps (start,
  llm, tool, llm, finish, as issue 15 measured them) and with 3 (llm, tool, llm).

Every system runs on a worker or in a process of its own queue; turns run round-robin
(one turn of each system per round) so that a change of load hits every system alike.
After the timed rounds, each Celery system runs ``--count-turns`` more turns under
``INFO`` and ``MONITOR`` (:mod:`bench.redis_cost`) for its Redis work per turn.

Figures:

- ``median ms`` / ``p90 ms``: wall time of one turn as the caller sees it.
- ``tasks/turn``: Celery task messages per turn (``LPUSH`` to the queue, counted).
- ``vs LangGraph async`` / ``vs DBOS``: the system's median / the peer's (5-step shape);
  targets (issues 15 and 17): agent-platform at most 0.8x both, in each mode.
- ``overhead ms/task``: (median turn - 2 model calls) / tasks per turn, what Celery and
  the system add per task; compared with the raw chain of the same number of tasks on
  the same pool (target: at most 1.2x).
- task events per hop: (5-task chain with events - without) / 5.
- Redis per turn: commands sent by clients, the round trips that carried them (a
  pipeline or a transaction is one: :func:`bench.redis_cost.split_round_trips`), commands
  executed (Lua's included), bytes written, net of the idle background of all the workers.
- streaming cost per ``llm`` step (issue 14): printed last by ``bench.streaming_cost``
  when the tree has it (:func:`_streaming` is the hook), else "not measured".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import redis_cost, turn
from .agent import local_steps_support
from .common import Bench, median, note, parse_args, percentile, print_header, print_table, ratio
from .lanes import GEVENT_CONCURRENCY, OURS, POOLS, RAW, TASK, Lane, start_workers

#: Model calls in one turn (llm, tool, llm).
MODEL_CALLS = 2
TARGET_VS_PEERS = 0.8
TARGET_OVERHEAD = 1.2


@dataclass
class System:
    """A row: a lane or a peer, its turn function and what was measured."""

    name: str
    store: str
    run: Callable[[], float]
    pool: str = ""
    lane: Lane | None = None
    peer_steps: int = 0
    peer_key: str = ""
    times: list[float] = field(default_factory=list)
    error: str = ""
    cost: redis_cost.Cost | None = None

    @property
    def med(self) -> float:
        return median(self.times) * 1000 if self.times else float("nan")

    @property
    def tasks(self) -> float:
        """Tasks per turn: counted when the MONITOR pass ran, else the nominal shape."""
        if self.cost is not None and self.cost.turns:
            return round(self.cost.per_turn("tasks"), 2)
        return float(self.lane.tasks) if self.lane and not self.lane.ours else float("nan")


def celery_lanes(pools: list[str]) -> list[Lane]:
    """The Celery rows: both systems on each pool, plus local steps and the raw shapes on prefork."""
    lanes = [Lane(OURS), Lane(OURS, local=True), Lane(RAW, tasks=3), Lane(RAW, tasks=5), Lane(RAW, tasks=1)]
    lanes.append(Lane(RAW, tasks=5, events=False))
    for pool in pools:
        if pool != "prefork":
            lanes += [Lane(OURS, pool=pool), Lane(RAW, pool=pool, tasks=3)]
    return lanes


def _peer_systems(bench: Bench, shapes: tuple[int, ...]) -> tuple[list[System], list[Callable[[], None]], list[str]]:
    """DBOS and LangGraph (sync and async durability), when the [bench] extra is installed."""
    systems: list[System] = []
    closers: list[Callable[[], None]] = []
    notes: list[str] = []
    if not shapes:
        return [], [], ["DBOS and LangGraph left out (--peer-steps none)"]
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
        ("DBOS", lambda: peers.dbos_peers(url, bench.dir, shapes)),
        ("LangGraph", lambda: peers.langgraph_peers(url, bench.dir, ("sync", "async"), shapes)),
    ]
    for label, factory in factories:
        try:
            found, close = factory()
        except ImportError as exc:
            notes.append(f"{label} skipped: {exc} (pip install -e '.[dev,bench]')")
            continue
        except Exception as exc:
            notes.append(f"{label} could not start: {type(exc).__name__}: {exc}")
            continue
        closers.append(close)
        for peer in found:
            key = "DBOS" if label == "DBOS" else f"LangGraph {'async' if 'async' in peer.store else 'sync'}"
            systems.append(
                System(peer.name, peer.store, lambda run=peer.run: _timed(run), peer_steps=peer.steps, peer_key=key)
            )
    return systems, closers, notes


def _timed(run: Callable[[str], Any]) -> float:
    t0 = time.perf_counter()
    run(TASK)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="measured turns per system (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up turns per system (default 10)")
    parser.add_argument(
        "--pools", nargs="+", default=list(POOLS), choices=POOLS, help="worker pools (default: prefork threads gevent)"
    )
    parser.add_argument(
        "--peer-steps",
        nargs="*",
        type=int,
        default=[5, 3],
        choices=[5, 3],
        help="peer shapes (default 5 3; none: no peers)",
    )
    parser.add_argument(
        "--count-turns", type=int, default=20, help="turns per Celery system under INFO/MONITOR (default 20)"
    )
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle background measured (default 3)")
    args = parse_args(parser, argv, quick={"turns": 15, "warmup": 3, "count_turns": 5, "idle": 1.0})
    if "prefork" not in args.pools:
        args.pools.insert(0, "prefork")  # the default mode's figures and the targets are on prefork

    print_header("bench.steps: one turn (llm, tool, llm) on agent-platform, raw Celery chains, DBOS, LangGraph")
    support = local_steps_support()
    lanes = celery_lanes(args.pools)
    with Bench("steps", agent_app="bench.agent:lanes") as bench:
        print(bench.describe())
        print(f"local steps: {f'supported (by {support})' if support else 'not in this engine (rows print n/a)'}")
        print()
        note(f"starting {len({lane.worker_key for lane in lanes if lane.supported})} Celery workers (-c 1)")
        start_workers(bench, lanes)
        systems = [
            System(lane.label, _store(bench, lane), lane.runner(bench), lane.pool, lane)
            for lane in lanes
            if lane.supported
        ]
        unsupported = [lane for lane in lanes if not lane.supported]
        note("starting DBOS and LangGraph")
        peer_systems, closers, notes = _peer_systems(bench, tuple(args.peer_steps))
        systems.extend(peer_systems)
        try:
            model_times = [_timed(lambda _: turn.call_model(turn.first_messages(TASK))) for _ in range(60)][10:]
            _rounds(systems, args.warmup, args.turns)
        finally:
            for close in closers:
                try:
                    close()
                except Exception as exc:
                    note(f"closing a peer failed: {exc}")
        note(
            f"Redis work: {args.idle:g} s idle, then {args.count_turns} turns per Celery system under INFO and MONITOR"
        )
        _count(bench, [s for s in systems if s.lane and not s.error], args.count_turns, args.idle)
    _report(systems, unsupported, model_times, notes)
    print()
    _streaming(args.quick)


def _store(bench: Bench, lane: Lane) -> str:
    return bench.redis_label() if lane.ours else "none (no checkpoints)"


def _rounds(systems: list[System], warmup: int, turns: int) -> None:
    note(f"{warmup} warm-up rounds, then {turns} measured rounds over {len(systems)} systems")
    for round_ in range(warmup + turns):
        for system in systems:
            if system.error:
                continue
            try:
                elapsed = system.run()
            except Exception as exc:
                system.error = f"{type(exc).__name__}: {exc}"[:200]
                note(f"{system.name} ({system.pool or system.store}) failed: {system.error}")
                continue
            if round_ >= warmup:
                system.times.append(elapsed)
        if round_ and round_ % 20 == 0:
            note(f"round {round_}")


def _count(bench: Bench, systems: list[System], turns: int, idle_seconds: float) -> None:
    """Each Celery system's Redis work per turn (INFO pass, then MONITOR pass), net of the
    idle background of all the workers."""
    host, port = bench.redis.host, bench.redis.port
    background = redis_cost.idle(bench.client, host, port, idle_seconds)
    for system in systems:

        def run(system: System = system) -> int:
            for _ in range(turns):
                system.run()
            return turns

        try:
            info = redis_cost.info_pass(bench.client, run)
            monitored, _ = redis_cost.monitor_pass(host, port, run)
        except Exception as exc:
            note(f"counting {system.name} failed: {exc}")
            continue
        system.cost = info.net_of(background).merged(monitored.net_of(background))


def _report(systems: list[System], unsupported: list[Lane], model_times: list[float], notes: list[str]) -> None:
    model_ms = median(model_times) * 1000
    peers = {(s.peer_key, s.peer_steps): s for s in systems if s.peer_key and s.times}
    lg5, dbos5 = peers.get(("LangGraph async", 5)), peers.get(("DBOS", 5))
    errors = any(s.error for s in systems)
    rows = []
    for s in systems:
        tasks = "" if s.peer_key else s.tasks
        if not s.times:
            rows.append([s.name, s.pool, s.store, tasks, 0, "-", "-", "-", "-"] + ([s.error] if errors else []))
            continue
        p90 = percentile(s.times, 90) * 1000
        vs = [ratio(s.med, p.med) if p else "n/a" for p in (lg5, dbos5)]
        rows.append([s.name, s.pool, s.store, tasks, len(s.times), s.med, p90, *vs] + ([s.error] if errors else []))
    for lane in unsupported:
        rows.append([lane.label, lane.pool, "n/a: the engine has no local steps", "n/a", 0, "n/a", "n/a", "n/a", "n/a"])
    headers = ["system", "pool", "durable store", "tasks/turn", "turns", "median ms", "p90 ms"]
    headers += ["vs LangGraph async (5 steps)", "vs DBOS (5 steps)"]
    print_table(headers + (["error"] if errors else []), rows)
    print("note: agent-platform and the raw chains cross the Celery broker between tasks (a worker process, -c 1;")
    print(
        f"      gevent -c {GEVENT_CONCURRENCY}: a green worker with fewer greenlets than steps waiting stalls up to 2 s"
        " a step, see bench/lanes.py);"
    )
    print("      DBOS and LangGraph run every step in the calling process and commit each checkpoint to the database.")
    for line in notes:
        print(f"note: {line}")
    print(f"model call (direct, from the driver): median {model_ms:.2f} ms over {len(model_times)} calls")
    if not _local_in_effect(systems):
        print(
            "WARNING: local steps were asked for, yet the turn took as many Celery tasks as in the default "
            "mode: the setting is not in effect on this engine"
        )
    print()
    _overhead(systems, model_ms)
    _events(systems)
    _pools(systems, model_ms)
    _redis(systems)
    _targets(systems, peers, model_ms)


def _local_in_effect(systems: list[System]) -> bool:
    """False when the local-steps row took as many tasks per turn as the default mode's
    (the setting accepted but not acted on); True otherwise (or when either is missing)."""
    default, local = _celery(systems, OURS, local=False), _celery(systems, OURS, local=True)
    if default and local and local.cost and default.cost:
        return local.tasks < default.tasks
    return True


def _celery(systems: list[System], system: str, pool: str = "prefork", **match: Any) -> System | None:
    for s in systems:
        lane = s.lane
        if lane and lane.system == system and lane.pool == pool and s.times:
            if all(getattr(lane, k) == v for k, v in match.items()):
                return s
    return None


def _overhead_ms(s: System, model_ms: float) -> float:
    return (s.med - MODEL_CALLS * model_ms) / s.tasks if s.tasks and s.tasks > 0 else float("nan")


def _raw_like(systems: list[System], s: System) -> System | None:
    """The raw chain on ``s``'s pool with as many tasks per turn as ``s`` (rounded)."""
    tasks = round(s.tasks) if s.tasks == s.tasks else None
    return _celery(systems, RAW, s.pool, tasks=tasks, events=True) if tasks else None


def _overhead(systems: list[System], model_ms: float) -> None:
    rows = []
    for s in systems:
        if not (s.lane and s.lane.ours and s.times):
            continue
        raw = _raw_like(systems, s)
        ours_ms = _overhead_ms(s, model_ms)
        raw_ms = _overhead_ms(raw, model_ms) if raw else float("nan")
        rows.append(
            [s.name, s.pool, s.tasks, ours_ms, raw.name if raw else "none with as many tasks", raw_ms,
             ratio(ours_ms, raw_ms) if raw else "n/a"]
        )  # fmt: skip
    print("step overhead per Celery task: (median turn - 2 model calls) / tasks per turn, vs the raw chain with as")
    print("many tasks on the same pool (target <= 1.2x)")
    print_table(["system", "pool", "tasks/turn", "overhead ms/task", "raw chain", "raw ms/task", "ratio"], rows)


def _events(systems: list[System]) -> None:
    on, off = _celery(systems, RAW, tasks=5, events=True), _celery(systems, RAW, tasks=5, events=False)
    if on and off:
        per_hop = (on.med - off.med) / 5
        print(
            f"task events (raw chain, 5 tasks, prefork): {on.med:.2f} ms with, {off.med:.2f} ms without: "
            f"{per_hop:.2f} ms per hop ({ratio(on.med, off.med)} the turn)"
        )
        print()


def _pools(systems: list[System], model_ms: float) -> None:
    rows = []
    for pool in POOLS:
        ours, raw = _celery(systems, OURS, pool, local=False), _celery(systems, RAW, pool, tasks=3, events=True)
        if not ours and not raw:
            continue
        rows.append(
            [
                pool,
                ours.med if ours else "-",
                raw.med if raw else "-",
                ratio(ours.med, raw.med) if ours and raw else "n/a",
                _overhead_ms(ours, model_ms) if ours else "-",
                _overhead_ms(raw, model_ms) if raw else "-",
            ]
        )
    if rows:
        print(
            f"worker pools (-c 1, gevent -c {GEVENT_CONCURRENCY}): median turn of agent-platform (default mode) and of the 3-task raw chain"
        )
        print_table(["pool", "agent-platform ms", "raw 3 tasks ms", "ratio", "ours ms/task", "raw ms/task"], rows)


def _redis(systems: list[System]) -> None:
    rows = []
    for s in systems:
        c = s.cost
        if c is None or not c.turns or s.pool != "prefork":
            continue
        rows.append(
            [s.name, s.tasks, c.per_turn("commands_sent"), c.per_turn("round_trips"), c.per_turn("executed"),
             c.per_turn("bytes_in"), c.per_turn("usec")]
        )  # fmt: skip
    if not rows:
        return
    print("Redis work per turn (prefork; all clients: worker, broker, driver; net of the idle background)")
    print("  commands sent: by clients (MONITOR, Lua's left out); round trips: the round trips that carried them (a")
    print(
        "  pipeline or MULTI/EXEC is one; told apart by MONITOR's timestamps); executed: commandstats calls, commands"
    )
    print("  inside Lua scripts included; bytes written: total_net_input_bytes; usec: commandstats time executing them")
    headers = ["system", "tasks/turn", "commands sent", "round trips", "commands executed", "bytes written"]
    print_table(headers + ["usec in commands"], rows)
    ours, raw = _celery(systems, OURS, local=False), None
    if ours and ours.cost:
        raw = _raw_like(systems, ours)
    if ours and raw and ours.cost and raw.cost:
        print(
            f"agent-platform (default mode) vs the raw chain of {raw.tasks:g} tasks: "
            f"{ratio(ours.cost.per_turn('commands_sent'), raw.cost.per_turn('commands_sent'))} the commands sent, "
            f"{ratio(ours.cost.per_turn('round_trips'), raw.cost.per_turn('round_trips'))} the round trips, "
            f"{ratio(ours.cost.per_turn('executed'), raw.cost.per_turn('executed'))} the commands executed, "
            f"{ratio(ours.cost.per_turn('bytes_in'), raw.cost.per_turn('bytes_in'))} the bytes written"
        )
        print()


def _streaming(quick: bool) -> None:
    """HOOK for issue 14: the cost of streaming per ``llm`` step, printed by
    ``bench.streaming_cost.report`` (the streaming work's module) when this tree has it;
    otherwise a line saying it is not measured (never a made-up figure)."""
    if importlib.util.find_spec("bench.streaming_cost") is None:
        print("streaming cost per llm step: not measured (no bench/streaming_cost.py in this tree: issue 14)")
        print()
        return
    try:
        streaming = importlib.import_module("bench.streaming_cost")
    except ImportError as exc:  # the module is there, the engine's streaming is not
        print(f"streaming cost per llm step: not measured ({exc})")
        print()
        return
    streaming.report(**({"calls": 20, "warmup": 5} if quick else {}))
    print()


def _targets(systems: list[System], peers: dict[tuple[str, int], System], model_ms: float) -> None:
    print("targets (issues 15 and 17; peers' 5-step shape as the issues measured them, the 3-step one for reference):")
    for local in (False, True):
        ours = _celery(systems, OURS, local=local)
        mode = "local steps" if local else "default mode"
        if ours is None or (local and not _local_in_effect(systems)):
            print(f"  agent-platform, {mode}: n/a{'' if ours is None else ' (not in effect on this engine)'}")
            continue
        for key in ("LangGraph async", "DBOS"):
            for steps in (5, 3):
                peer = peers.get((key, steps))
                if peer is None:
                    continue
                r = ours.med / peer.med
                verdict = (" -> met" if r <= TARGET_VS_PEERS else " -> NOT met") if steps == 5 else " (reference)"
                print(f"  {mode}: median turn <= 0.8x {key} ({steps} steps): {r:.2f}x{verdict}")
    ours = _celery(systems, OURS, local=False)
    raw = _raw_like(systems, ours) if ours else None
    if ours and raw:
        r = _overhead_ms(ours, model_ms) / _overhead_ms(raw, model_ms)
        verdict = "met" if r <= TARGET_OVERHEAD else "NOT met"
        print(f"  step overhead <= 1.2x the raw chain's per task ({raw.tasks:g} tasks, prefork): {r:.2f}x -> {verdict}")


if __name__ == "__main__":
    main()
