"""Bytes written to Redis per checkpoint as the session grows: ``python -m bench.checkpoint_growth``.

A turn of ``bench_bot`` (start, llm, tool, llm, finish: 5 step records) runs in a session that already holds
10, 100 and 1,000 messages (seeded through the memory API,
``RedisSessionHistory.append_turn``, ~200 characters each), ``--repeat`` times per size,
with one ``celery -A tasks worker -c 1``. Two passes:

1. ``INFO stats`` deltas over each turn (nothing else runs against this Redis but the
   worker's own sweeper and registry timers): ``total_net_input_bytes`` is every byte
   written to Redis by every client (checkpoints, leases, broker messages, Celery
   events, the memory append), shown per step record of the turn (its step log's
   length, whatever the number of Celery tasks); ``total_net_output_bytes`` is every
   byte read back, per turn (the ``llm`` steps read the session's history).
2. ``MONITOR`` over each turn: the exact size (RESP encoding) of the checkpoint script
   calls (``EVALSHA`` of the store's checkpoint script), per call; ``checkpoints/turn``
   counts those calls.

The ratio 1000/10 of each column shows whether a checkpoint costs O(step) or
O(history) (target for the bytes per checkpoint: at most 1.1x).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from .common import Bench, median, note, parse_args, print_header, print_table, ratio, run_turn, start_and_wait
from .redis_cost import Monitor, label, resp_size

SIZES = (10, 100, 1000)
FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt. " * 2


def seed(history: Any, session: str, messages: int) -> None:
    """Give ``session`` ``messages`` prior messages (user/assistant pairs)."""
    for i in range(messages // 2):
        history.append_turn(
            session,
            f"seed{i}",
            [
                {"role": "user", "content": f"question {i}: {FILLER}"[:200]},
                {"role": "assistant", "content": f"answer {i}: {FILLER}"[:200]},
            ],
        )


def info_bytes(client: Any) -> tuple[int, int]:
    stats = client.info("stats")
    return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


def is_checkpoint(args: list[str]) -> bool:
    """A call of one of the store's checkpoint scripts (``scripts.*CHECKPOINT*``)."""
    return label(args).startswith("EVALSHA") and "CHECKPOINT" in label(args)


def settle(history: Any, session: str, expected: int) -> None:
    """Wait until the turn's memory append landed, and the worker's last writes after it."""
    deadline = time.monotonic() + 10
    while history.length(session) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint_growth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="turns per session size and pass (default 5)")
    args = parse_args(parser, argv, quick={"repeat": 2})

    print_header("bench.checkpoint_growth: Redis bytes per checkpoint vs session length")
    results: dict[int, dict[str, list[float]]] = {
        n: {"input": [], "output": [], "ckpt": [], "count": [], "records": []} for n in SIZES
    }
    breakdown: dict[str, tuple[int, int]] = {}
    with Bench("growth") as bench:
        print(bench.describe())
        print()
        bench.worker("tasks", concurrency=1)
        runtime = bench.platform().runtime
        store = runtime.store_for("BenchBot")
        history = runtime.history_for(runtime.agent("BenchBot"))
        for _ in range(3):  # warm-up: scripts loaded, connections open
            run_turn(runtime, "BenchBot", f"warm{uuid.uuid4().hex[:8]}")
        for size in SIZES:
            note(f"{size} prior messages: {args.repeat} turns with INFO, {args.repeat} with MONITOR")
            for _ in range(args.repeat):
                session = f"g{size}-{uuid.uuid4().hex[:8]}"
                seed(history, session, size)
                before = info_bytes(bench.client)
                workflow_id, _ = start_and_wait(runtime, "BenchBot", session)
                settle(history, session, size + 2)
                after = info_bytes(bench.client)
                records = len(store.steps(workflow_id))
                results[size]["records"].append(records)
                results[size]["input"].append((after[0] - before[0]) / records)
                results[size]["output"].append(after[1] - before[1])
            for _ in range(args.repeat):
                session = f"m{size}-{uuid.uuid4().hex[:8]}"
                seed(history, session, size)
                monitor = Monitor(bench.redis.host, bench.redis.port)
                run_turn(runtime, "BenchBot", session)
                settle(history, session, size + 2)
                commands = monitor.stop()
                checkpoints = [resp_size(c) for c in commands if is_checkpoint(c)]
                for command in commands:
                    size_, count = breakdown.get(label(command), (0, 0))
                    breakdown[label(command)] = (size_ + resp_size(command), count + 1)
                results[size]["ckpt"].append(sum(checkpoints) / max(1, len(checkpoints)))
                results[size]["count"].append(len(checkpoints))
    _report(results, args.repeat)
    turns = args.repeat * len(SIZES)
    top = sorted(breakdown.items(), key=lambda kv: -kv[1][0])[:14]
    total = sum(size for size, _ in breakdown.values())
    commands = sum(count for _, count in breakdown.values())
    print(f"where the bytes written by one turn go (MONITOR, mean of {turns} turns; top commands by bytes)")
    print_table(
        ["command", "bytes/turn", "share", "commands/turn"],
        [[name, size // turns, f"{size / total:.0%}", count / turns] for name, (size, count) in top]
        + [["all commands", total // turns, "100%", commands / turns]],
    )


def _report(results: dict[int, dict[str, list[float]]], repeat: int) -> None:
    rows = []
    for size in SIZES:
        r = results[size]
        rows.append(
            [
                size,
                int(median(r["records"])),
                int(median(r["count"])),
                median(r["ckpt"]),
                median(r["input"]),
                median(r["output"]) / 1024,
            ]
        )
    first, last = results[SIZES[0]], results[SIZES[-1]]
    rows.append(
        [
            f"ratio {SIZES[-1]}/{SIZES[0]}",
            "",
            "",
            ratio(median(last["ckpt"]), median(first["ckpt"])),
            ratio(median(last["input"]), median(first["input"])),
            ratio(median(last["output"]), median(first["output"])),
        ]
    )
    print(f"medians over {repeat} turns per size and pass")
    print_table(
        [
            "prior messages",
            "step records/turn",
            "checkpoints/turn",
            "checkpoint script bytes/checkpoint (MONITOR)",
            "all bytes written/step record (INFO)",
            "KiB read/turn (INFO)",
        ],
        rows,
    )
    ckpt = median(last["ckpt"]) / median(first["ckpt"])
    written = median(last["input"]) / median(first["input"])
    print("targets:")
    print(
        f"  checkpoint bytes at 1,000 messages <= 1.1x those at 10: {ckpt:.2f}x -> {'met' if ckpt <= 1.1 else 'NOT met'}"
    )
    print(
        f"  all bytes written per step record, same ratio: {written:.2f}x -> {'met' if written <= 1.1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
