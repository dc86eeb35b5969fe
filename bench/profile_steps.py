"""Where agent-platform's time goes per turn, next to the raw chain's: ``python -m bench.profile_steps``.

Two measurements of the same turn as ``bench.steps`` (one worker, ``-c 1``, turns back
to back), for agent-platform and for the raw Celery chain:

1. Redis commands per turn, by command (``MONITOR`` over ``--monitor-turns`` turns):
   every command that the worker, the broker client and the driver send, and the round
   trips that carry them (a pipeline or a transaction is one:
   :func:`bench.redis_cost.split_round_trips`).
2. A wall-clock profile of the worker's pool process (``py-spy record --idle``, its main
   thread, ``--seconds`` seconds while turns run), with each sample put in the category
   of the innermost frame that names one (the model call, the enqueue of the next step,
   the checkpoint script, the status-hash reads, the lease, ...), shown in ms per turn.
   "pool waiting" is time between tasks: the hop through the broker and the worker's
   main process. Sampling slows the worker (more for a process with more threads), so
   compare the categories with each other, not with ``bench.steps``.

Needs ``py-spy`` (in the ``[bench]`` extra) and the right to ptrace the worker (root, or
``CAP_SYS_PTRACE``); without it only part 1 is printed.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .common import Bench, note, parse_args, print_header, print_table, run_raw_turn, run_turn
from .redis_cost import Monitor, label, round_trips

RATE = 250  # samples per second
CATEGORIES = [
    (r"OpenAIChatClient\.chat|call_model", "model call (openai SDK + HTTP)"),
    (r"\bsend_task\b|apply_async", "enqueue next step (send_task + task-sent event)"),
    (r"WorkflowStore\.checkpoint", "checkpoint script (EVALSHA)"),
    (r"WorkflowStore\.state|WorkflowState\.decode", "status hash reads (HGETALL)"),
    (r"open_step|release_lease", "lease (SET NX PX, release script)"),
    (r"set_due", "set_due (ZADD active)"),
    (r"WorkflowStore\.steps|is_done", "step log / done reads (XRANGE, HEXISTS)"),
    (r"RedisSessionHistory", "memory (LLEN, LRANGE, append script)"),
    (r"_done_client|finish \(.*raw_chain\.py", "raw chain's end signal (LPUSH)"),
    (r"leave_session|session_head", "session list (LINDEX, LREM)"),
    (r"Heartbeat", "heartbeat thread start/join"),
    (r"Logger\.", "logging"),
    (
        r"build_messages|AssistantReply|parse_chat_completion|tool_schemas|Tool\.invoke|system_prompt",
        "prompt, reply, tool",
    ),
    (r"run_step|raw_chain\.py", "other code inside the step"),
    (r"trace_task", "Celery's task tracing around the step"),
]
WAITING = "pool waiting for the next task (broker hop, main process)"


def categorize(raw_profile: Path) -> collections.Counter[str]:
    """Samples of the pool process's main thread per category (py-spy ``--format raw``)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        for frame in reversed(frames):
            hit = next((name for rx, name in CATEGORIES if re.search(rx, frame)), None)
            if hit:
                counts[hit] += int(n)
                break
        else:
            counts[WAITING] += int(n)
    return counts


def profile(bench: Bench, app: str, turn: Callable[[int], float], seconds: float, monitor_turns: int) -> dict:
    worker = bench.worker(app, concurrency=1)
    try:
        for i in range(10):
            turn(i)
        time.sleep(0.3)
        monitor = Monitor(bench.redis.host, bench.redis.port)
        for i in range(monitor_turns):
            turn(100 + i)
        time.sleep(0.3)
        commands = collections.Counter(label(c) for c in monitor.stop())
        result: dict = {
            "commands": commands,
            "round_trips": round_trips(monitor.lines),
            "monitor_turns": monitor_turns,
            "samples": None,
        }
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            note("py-spy not found: pip install -e '.[dev,bench]'; skipping the profile")
            return result
        out = bench.dir / f"{app}.profile"
        pool = worker.pids()[1]  # the first pool process
        cmd = [spy, "record", "-p", str(pool), "--idle", "--threads", "-r", str(RATE), "-d", str(int(seconds)),
               "--format", "raw", "-o", str(out)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        turns = 0
        while proc.poll() is None:
            turn(1000 + turns)
            turns += 1
        if proc.returncode != 0 or not out.exists():
            note(f"py-spy failed ({proc.returncode}): {proc.stderr.read().decode()[-300:] if proc.stderr else ''}")
            return result
        result.update(samples=categorize(out), turns=turns)
        return result
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_steps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12, help="profiled seconds per system (default 12)")
    parser.add_argument("--monitor-turns", type=int, default=10, help="turns under MONITOR per system (default 10)")
    args = parse_args(parser, argv, quick={"seconds": 4, "monitor_turns": 3})

    print_header("bench.profile_steps: where a turn's time goes, agent-platform vs raw Celery chain")
    with Bench("profile") as bench:
        print(bench.describe())
        print()
        runtime = bench.platform().runtime
        raw_app = bench.raw_app()
        note("agent-platform")
        ours = profile(
            bench, "tasks", lambda i: run_turn(runtime, "BenchBot", f"p{uuid.uuid4().hex[:8]}"), args.seconds,
            args.monitor_turns,
        )  # fmt: skip
        note("raw Celery chain")
        raw = profile(
            bench, "bench.raw_chain", lambda i: run_raw_turn(raw_app, bench.client, uuid.uuid4().hex), args.seconds,
            args.monitor_turns,
        )  # fmt: skip
    _report(ours, raw)


def _report(ours: dict, raw: dict) -> None:
    names = sorted(set(ours["commands"]) | set(raw["commands"]), key=lambda k: -ours["commands"].get(k, 0))
    rows = []
    for name in names:
        a = ours["commands"].get(name, 0) / ours["monitor_turns"]
        b = raw["commands"].get(name, 0) / raw["monitor_turns"]
        if a >= 0.5 or b >= 0.5:
            rows.append([re.sub(r"BenchBot|bench\.raw", "<queue>", name), a, b, a - b])
    total_a = sum(ours["commands"].values()) / ours["monitor_turns"]
    total_b = sum(raw["commands"].values()) / raw["monitor_turns"]
    rows.append(["all commands", total_a, total_b, total_a - total_b])
    trips_a, trips_b = (r["round_trips"] / r["monitor_turns"] for r in (ours, raw))
    rows.append(["round trips (a pipeline or MULTI/EXEC is one)", trips_a, trips_b, trips_a - trips_b])
    print("Redis commands per turn (MONITOR; all clients: worker, broker, driver)")
    print_table(["command", "agent-platform", "raw chain", "difference"], rows)
    if ours["samples"] is None or raw["samples"] is None:
        return
    per_turn = {
        key: {c: n / RATE / r["turns"] * 1000 for c, n in r["samples"].items()}
        for key, r in (("ours", ours), ("raw", raw))
    }
    cats = [name for _, name in CATEGORIES] + [WAITING]
    cats = sorted(cats, key=lambda c: -per_turn["ours"].get(c, 0))
    rows = [
        [
            c,
            per_turn["ours"].get(c, 0.0),
            per_turn["raw"].get(c, 0.0),
            per_turn["ours"].get(c, 0.0) - per_turn["raw"].get(c, 0.0),
        ]
        for c in cats
        if per_turn["ours"].get(c, 0) or per_turn["raw"].get(c, 0)
    ]
    total = [sum(per_turn[k].values()) for k in ("ours", "raw")]
    rows.append(["all (wall time of the pool process per turn)", total[0], total[1], total[0] - total[1]])
    print(f"pool process wall time per turn, ms (py-spy --idle, {RATE} Hz; {ours['turns']} and {raw['turns']} turns)")
    print_table(["category", "agent-platform", "raw chain", "difference"], rows)


if __name__ == "__main__":
    main()
