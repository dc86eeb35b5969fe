"""How many turns per second one Redis primary can carry: ``python -m bench.capacity``.

The figure an ops team needs to size Redis. Two measurements on this machine:

1. What a turn costs Redis, under load: for agent-platform (default mode; local steps
   too when the engine has them) and the raw Celery chain of 3 and 5 tasks, one worker
   ``-c 2`` runs a closed loop (8 turns outstanding, as ``bench.throughput``) while
   :mod:`bench.redis_cost` measures ``--turns`` turns with ``INFO`` (commands executed,
   Lua's included; bytes in and out; the server's CPU seconds; AOF bytes) and
   ``--monitor-turns`` more with ``MONITOR`` (commands clients sent, and the round trips
   that carried them: a pipeline or a transaction is one; Celery task messages).
   Everything the deployment sends is counted (worker, broker client, task events, the
   driver waiting for the ends), less what the same worker costs idle
   (``--idle`` seconds measured after the warm-up: sweeper, heartbeats, broker polls;
   a cost per second, not per turn).
2. What this Redis does per second: ``redis-benchmark`` (``-c 50``, no pipelining, values
   of the turns' mean command size, ``--requests`` per test) against a private
   redis-server on a free port with the same settings (AOF, everysec), briefly.

From them, the turns per second one Redis can carry (each estimate assumes Redis is the
bottleneck, with its main thread on one full core):

- ``by commands sent``: redis-benchmark ops/s (mean over its tests) / commands sent per
  turn. redis-benchmark does not pipeline: each op is one command in its own round trip,
  so this counts each command of a turn as a round trip of its own (a floor: a pipeline's
  commands share one read and one write of the server);
- ``by Redis CPU``: 1 / the server's CPU seconds per turn, measured during the turns.
  This one weighs a Lua script by what it does; it is the sizing figure when lower.

The machine runs the workers, the driver and redis-benchmark on the same 2 CPUs, so both
estimates are floors for a Redis host of its own; and at the turns' modest rate Redis
wakes up for nearly every command, while near saturation it serves several per wake-up,
so the CPU per turn measured here is an upper bound too.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent_platform.embedded_redis import EmbeddedRedis

from . import redis_cost
from .common import Bench, note, parse_args, print_header, print_table, ratio
from .lanes import OURS, RAW, Lane
from .throughput import drive, loop_for

TESTS = "set,get,incr,lpush,rpop,hset,zadd"
INFLIGHT = 8


def turn_cost(bench: Bench, lane: Lane, turns: int, monitor_turns: int, warmup: int, idle: float) -> redis_cost.Cost:
    """Redis work per turn of ``lane`` under a closed loop on one worker ``-c 2``, net of
    what the idle worker costs over ``idle`` seconds (timers, polls: a cost per second,
    not per turn)."""
    worker = lane.start_worker(bench, 2, end_signal=True)  # loop_for waits on the finish hook's list
    try:
        loop = loop_for(bench, lane)
        drive(loop, warmup, INFLIGHT, limit=60)
        background = redis_cost.idle(bench.client, bench.redis.host, bench.redis.port, idle)

        def run(n: int) -> int:
            return drive(loop, n, INFLIGHT, limit=120)[0]

        info = redis_cost.info_pass(bench.client, lambda: run(turns))
        monitored, _ = redis_cost.monitor_pass(bench.redis.host, bench.redis.port, lambda: run(monitor_turns))
        return info.net_of(background).merged(monitored.net_of(background))
    finally:
        worker.stop()


def redis_benchmark(requests: int, size: int) -> tuple[dict[str, float], float]:
    """``redis-benchmark`` against a private redis-server (AOF everysec); returns ops/s per
    test and the server's CPU microseconds per operation.

    Raises:
        FileNotFoundError: no ``redis-benchmark`` on PATH.
    """
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise FileNotFoundError("redis-benchmark is not on PATH (it comes with redis-server)")
    folder = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    server = EmbeddedRedis(data_dir=folder, appendonly=True).start()
    try:
        import redis

        client = redis.Redis(host=server.host, port=server.port)
        before = client.info("cpu")
        cmd = [exe, "-h", server.host, "-p", str(server.port), "-n", str(requests), "-c", "50", "-d", str(size)]
        out = subprocess.run([*cmd, "-t", TESTS, "--csv"], capture_output=True, text=True, timeout=300, check=True)
        after = client.info("cpu")
        client.close()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    rates = {row["test"]: float(row["rps"]) for row in csv.DictReader(io.StringIO(out.stdout))}
    cpu = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    return rates, cpu * 1e6 / (requests * len(rates)) if rates else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="turns under INFO per system (default 200)")
    parser.add_argument("--monitor-turns", type=int, default=40, help="turns under MONITOR per system (default 40)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up turns per system (default 10)")
    parser.add_argument(
        "--requests", type=int, default=50_000, help="redis-benchmark requests per test (default 50000)"
    )
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle background measured (default 2)")
    quick = {"turns": 30, "monitor_turns": 8, "warmup": 3, "requests": 10_000, "idle": 1.0}
    args = parse_args(parser, argv, quick=quick)

    print_header("bench.capacity: Redis work per turn and the turns/s one Redis primary can carry")
    lanes = [Lane(OURS), Lane(OURS, local=True), Lane(RAW, tasks=3), Lane(RAW, tasks=5)]
    costs: dict[Lane, redis_cost.Cost] = {}
    with Bench("capacity", agent_app="bench.agent:lanes") as bench:
        print(bench.describe())
        print()
        for lane in lanes:
            if lane.supported:
                note(f"{lane.label}: {args.turns} turns under INFO, {args.monitor_turns} under MONITOR")
                costs[lane] = turn_cost(bench, lane, args.turns, args.monitor_turns, args.warmup, args.idle)
    ours = costs.get(Lane(OURS))
    size = int(ours.per_turn("client_bytes") / ours.per_turn("commands_sent")) if ours else 256
    note(f"redis-benchmark: {args.requests} requests per test, {size}-byte values")
    try:
        rates, usec_per_op = redis_benchmark(args.requests, size)
    except (OSError, subprocess.SubprocessError) as exc:
        note(f"redis-benchmark failed: {exc}")
        rates, usec_per_op = {}, float("nan")
    _report(costs, [lane for lane in lanes if not lane.supported], rates, usec_per_op, size)


def _report(
    costs: dict[Lane, redis_cost.Cost], unsupported: list[Lane], rates: dict[str, float], usec_per_op: float, size: int
) -> None:
    rows = []
    for lane, c in costs.items():
        rows.append(
            [lane.label, c.turns, c.per_turn("tasks"), c.per_turn("commands_sent"), c.per_turn("round_trips"),
             c.per_turn("executed"), c.per_turn("bytes_in") / 1024, c.per_turn("bytes_out") / 1024,
             c.per_turn("aof") / 1024, c.per_turn("cpu") * 1e6, c.turns / c.seconds]
        )  # fmt: skip
    for lane in unsupported:
        rows.append([lane.label, "n/a", "", "", "", "", "", "", "", "", ""])
    print("Redis work per turn (one worker -c 2, closed loop of 8 turns; all clients; net of the idle worker)")
    print("  commands sent: by clients (MONITOR, Lua's left out); round trips: the round trips that carried them")
    print("  (a pipeline or MULTI/EXEC is one); commands executed: commandstats calls, Lua's included")
    headers = ["system", "turns", "tasks", "commands sent", "round trips", "commands executed", "KiB written"]
    headers += ["KiB read"]
    print_table(headers + ["KiB to AOF", "Redis CPU us", "turns/s here"], rows)
    if rates:
        print(f"redis-benchmark on this machine (-c 50, no pipelining, {size}-byte values; ops/s per test)")
        print_table(list(rates), [[rates[t] for t in rates]])
    ops = len(rates) / sum(1 / r for r in rates.values()) if rates else float("nan")  # mean time per op
    print(f"one Redis: {ops:.0f} ops/s (harmonic mean of the tests), {usec_per_op:.1f} us of server CPU per op")
    print()
    rows = []
    for lane, c in costs.items():
        by_commands = ops / c.per_turn("commands_sent")
        by_cpu = 1 / c.per_turn("cpu") if c.per_turn("cpu") > 0 else float("nan")
        low = min(by_commands, by_cpu)
        net = (c.per_turn("bytes_in") + c.per_turn("bytes_out")) * low / 1e6
        rows.append([lane.label, by_commands, by_cpu, low, net, c.per_turn("aof") * low / 1e6])
    print("turns/s one Redis primary can carry (Redis the bottleneck, its main thread on one core)")
    print("  by commands sent: redis-benchmark's ops/s (one command per round trip) / commands sent per turn")
    headers = ["system", "by commands sent", "by Redis CPU", "sizing figure (lower)", "MB/s network", "MB/s AOF"]
    print_table(headers, rows)
    ours, raw = costs.get(Lane(OURS)), None
    if ours:
        raw = costs.get(Lane(RAW, tasks=round(ours.per_turn("tasks"))))
    if ours and raw:
        print(
            f"agent-platform (default mode) vs the raw chain with as many tasks: "
            f"{ratio(ours.per_turn('commands_sent'), raw.per_turn('commands_sent'))} the commands sent, "
            f"{ratio(ours.per_turn('round_trips'), raw.per_turn('round_trips'))} the round trips, "
            f"{ratio(ours.per_turn('cpu'), raw.per_turn('cpu'))} the Redis CPU, "
            f"{ratio(ours.per_turn('bytes_in'), raw.per_turn('bytes_in'))} the bytes written per turn"
        )


if __name__ == "__main__":
    main()
