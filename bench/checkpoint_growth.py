"""Bytes written to Redis per checkpoint as the session grows: ``python -m bench.checkpoint_growth``.

A turn of ``bench_bot`` (5 steps, so 5 checkpoints) runs in a session that already holds
10, 100 and 1,000 messages (seeded through the memory API,
``RedisSessionHistory.append_turn``, ~200 characters each), ``--repeat`` times per size,
with one ``celery -A tasks worker -c 1``. Two passes:

1. ``INFO stats`` deltas over each turn (nothing else runs against this Redis but the
   worker's own sweeper and registry timers): ``total_net_input_bytes`` is every byte
   written to Redis by every client (checkpoints, leases, broker messages, Celery
   events, the memory append), shown per checkpoint; ``total_net_output_bytes`` is every
   byte read back, per turn (the ``llm`` steps read the session's history).
2. ``MONITOR`` over each turn: the exact size (RESP encoding) of the checkpoint script
   calls (``EVALSHA`` of the store's CHECKPOINT script), per checkpoint.

The ratio 1000/10 of each column shows whether a checkpoint costs O(step) or
O(history) (target for the bytes per checkpoint: at most 1.1x).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
import threading
import time
import uuid
from typing import Any

from agent_platform.memory.redis_memory import append_turn_script
from agent_platform.store import scripts

from .common import Bench, median, note, print_header, print_table, ratio, run_turn

SIZES = (10, 100, 1000)
FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt. " * 2
CHECKPOINT_SHA = hashlib.sha1(scripts.source("checkpoint").encode()).hexdigest()
SCRIPT_NAMES = {
    hashlib.sha1(scripts.source(name).encode()).hexdigest(): name.upper()
    for name in ("open_step", "checkpoint", "renew", "release", "void_lease", "control", "raise_event")
}
SCRIPT_NAMES[hashlib.sha1(append_turn_script().encode()).hexdigest()] = "memory APPEND"
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


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


class Monitor:
    """``MONITOR`` on a raw socket in a thread; :meth:`stop` returns the client commands seen
    (each a list of its arguments), leaving out the commands that Lua scripts issue."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(b"MONITOR\r\n")
        self.buffer = b""
        while b"\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer.split(b"\r\n", 1)[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.sock.settimeout(0.1)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.buffer += chunk

    def stop(self) -> list[list[str]]:
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        commands = []
        for line in self.buffer.decode(errors="replace").split("\r\n"):
            head, _, rest = line.partition("] ")
            if not rest or " lua" in head:
                continue
            commands.append([_unescape(a) for a in _ARG.findall(rest)])
        return commands


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "x" and i + 3 < len(text):
                out.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def resp_size(args: list[str]) -> int:
    """Bytes of a command in RESP, as a client sends it."""
    size = len(f"*{len(args)}\r\n")
    for arg in args:
        n = len(arg.encode("latin-1", errors="replace"))
        size += len(f"${n}\r\n") + n + 2
    return size


def is_checkpoint(args: list[str]) -> bool:
    name = args[0].lower() if args else ""
    return (name == "evalsha" and args[1] == CHECKPOINT_SHA) or (
        name == "eval" and args[1] == scripts.source("checkpoint")
    )


def label(args: list[str]) -> str:
    """What a command is, for the breakdown: the script's name, or the command and its key."""
    name = args[0].upper()
    if name == "EVALSHA":
        return f"EVALSHA {SCRIPT_NAMES.get(args[1], args[1][:8])}"
    if name in ("PUBLISH", "LPUSH", "RPUSH", "BRPOP", "ZADD", "HSET", "SET"):
        key = args[1] if len(args) > 1 else ""
        return f"{name} {re.sub(r'[0-9a-f]{32}', '<id>', key)[:48]}"
    return name


def settle(history: Any, session: str, expected: int) -> None:
    """Wait until the turn's memory append landed, and the worker's last writes after it."""
    deadline = time.monotonic() + 10
    while history.length(session) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint_growth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="turns per session size and pass (default 5)")
    args = parser.parse_args(argv)

    print_header("bench.checkpoint_growth: Redis bytes per checkpoint vs session length")
    results: dict[int, dict[str, list[float]]] = {
        n: {"input": [], "output": [], "ckpt": [], "count": []} for n in SIZES
    }
    breakdown: dict[str, tuple[int, int]] = {}
    with Bench("growth") as bench:
        print(bench.describe())
        print()
        bench.worker("tasks", concurrency=1)
        runtime = bench.platform().runtime
        history = runtime.history_for(runtime.agent("BenchBot"))
        for _ in range(3):  # warm-up: scripts loaded, connections open
            run_turn(runtime, "BenchBot", f"warm{uuid.uuid4().hex[:8]}")
        for size in SIZES:
            note(f"{size} prior messages: {args.repeat} turns with INFO, {args.repeat} with MONITOR")
            for _ in range(args.repeat):
                session = f"g{size}-{uuid.uuid4().hex[:8]}"
                seed(history, session, size)
                before = info_bytes(bench.client)
                run_turn(runtime, "BenchBot", session)
                settle(history, session, size + 2)
                after = info_bytes(bench.client)
                results[size]["input"].append((after[0] - before[0]) / 5)
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
        rows.append([size, int(median(r["count"])), median(r["ckpt"]), median(r["input"]), median(r["output"]) / 1024])
    first, last = results[SIZES[0]], results[SIZES[-1]]
    rows.append(
        [
            f"ratio {SIZES[-1]}/{SIZES[0]}",
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
            "checkpoints/turn",
            "checkpoint script bytes/checkpoint (MONITOR)",
            "all bytes written/checkpoint (INFO)",
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
    print(f"  all bytes written per checkpoint, same ratio: {written:.2f}x -> {'met' if written <= 1.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
