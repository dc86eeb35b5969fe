"""What a turn costs Redis: commands, round trips, bytes, CPU and AOF, measured two ways.

- :func:`info_pass`: ``INFO`` deltas over some turns (nothing slows Redis down):
  ``commandstats`` calls (every command Redis executed, those run inside Lua scripts
  included, the ``INFO`` calls of the measure left out), ``total_net_input_bytes`` (every
  byte every client sent: checkpoints, broker messages, task events, leases, the driver),
  ``total_net_output_bytes``, ``used_cpu_user + used_cpu_sys`` of the server (all its
  threads) and ``aof_current_size`` (bytes appended to the AOF).
- :func:`monitor_pass`: ``MONITOR`` over some turns: the commands clients sent (round
  trips; the commands that Lua scripts issue are left out), their RESP size, and the
  Celery messages published (``LPUSH`` to a queue: tasks per turn). MONITOR slows Redis,
  so time and CPU come from the INFO pass only.

Both count every client of the server: the worker(s), the broker client, the driver
waiting for the turn (``XREAD BLOCK`` for agent-platform, ``BLPOP`` for the raw chain)
and whatever runs on a timer (sweeper, registry heartbeat, worker heartbeat events, the
broker's idle ``BRPOP`` polls). :meth:`Cost.net_of` removes such a background, measured
over idle seconds, in proportion to the seconds of the measure.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

#: Queue key prefixes of the benchmarks' Celery queues (agent-platform's and the raw chain's).
QUEUE_PREFIXES = ("agent.", "bench.raw")


def script_names() -> dict[str, str]:
    """SHA1 -> name (upper case) of the store's Lua scripts and of the memory's append
    script, so that a breakdown names each ``EVALSHA``; works with the scripts as string
    constants of ``agent_platform.store.scripts`` or as ``store/lua/*.lua`` files."""
    from agent_platform.memory import redis_memory
    from agent_platform.store import scripts

    sources: dict[str, str] = {}
    for name in dir(scripts):
        value = getattr(scripts, name)
        if name.isupper() and isinstance(value, str):
            sources[name] = value
    source = getattr(scripts, "source", None)
    if callable(source):
        folder = importlib.resources.files("agent_platform.store").joinpath("lua")
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.name.endswith(".lua") and not entry.name.startswith("_"):
                sources[entry.name[:-4].upper()] = source(entry.name[:-4])
    append = getattr(redis_memory, "append_turn_script", None)
    sources["memory APPEND"] = append() if callable(append) else getattr(redis_memory, "_APPEND", "")
    return {hashlib.sha1(text.encode()).hexdigest(): name for name, text in sources.items() if text}


SCRIPT_NAMES = script_names()
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}
_OWN = ("cmdstat_info", "cmdstat_monitor")


@dataclass
class Cost:
    """Redis work over ``turns`` turns (or idle ``seconds``); absent figures stay 0.

    Attributes:
        executed: commands executed (``commandstats`` calls, Lua-issued ones included).
        usec: microseconds Redis spent executing them (``commandstats`` usec).
        bytes_in / bytes_out: bytes received from / sent to clients (``INFO stats``).
        cpu: CPU seconds of the server process (``INFO cpu``, user + sys).
        aof: bytes appended to the append-only file.
        round_trips: commands sent by clients (``MONITOR``, Lua-issued ones left out).
        tasks: Celery task messages published (``LPUSH`` to a queue, ``MONITOR``).
        client_bytes: RESP size of the commands clients sent (``MONITOR``).
    """

    turns: int = 0
    seconds: float = 0.0
    executed: float = 0.0
    usec: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    cpu: float = 0.0
    aof: float = 0.0
    round_trips: float = 0.0
    tasks: float = 0.0
    client_bytes: float = 0.0

    def per_turn(self, name: str) -> float:
        """``name`` divided by the turns (nan without turns)."""
        return getattr(self, name) / self.turns if self.turns else float("nan")

    def net_of(self, idle: Cost | None) -> Cost:
        """This cost less ``idle``'s rate per second times this measure's seconds (each
        figure at least 0); ``idle`` None: unchanged."""
        if idle is None or idle.seconds <= 0:
            return self
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in values:
            if name not in ("turns", "seconds"):
                values[name] = max(0.0, values[name] - getattr(idle, name) / idle.seconds * self.seconds)
        return Cost(**values)

    def merged(self, monitored: Cost) -> Cost:
        """The INFO figures of this cost with the MONITOR figures of ``monitored`` scaled to
        this cost's turns (each pass is per turn)."""
        scale = self.turns / monitored.turns if monitored.turns else 0.0
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("round_trips", "tasks", "client_bytes"):
            values[name] = getattr(monitored, name) * scale
        return Cost(**values)


def _info(client: Any) -> dict[str, float]:
    info = client.info("all")
    stats = {
        "bytes_in": float(info["total_net_input_bytes"]),
        "bytes_out": float(info["total_net_output_bytes"]),
        "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "aof": float(info.get("aof_current_size", 0)),
        "executed": 0.0,
        "usec": 0.0,
    }
    for key, value in info.items():
        if key.startswith("cmdstat_") and key not in _OWN and isinstance(value, dict):
            stats["executed"] += value.get("calls", 0)
            stats["usec"] += value.get("usec", 0)
    return stats


def info_pass(client: Any, run: Callable[[], int]) -> Cost:
    """INFO deltas around ``run()``, which runs turns and returns how many."""
    before = _info(client)
    t0 = time.perf_counter()
    turns = run()
    seconds = time.perf_counter() - t0
    after = _info(client)
    return Cost(turns=turns, seconds=seconds, **{k: after[k] - before[k] for k in before})


def monitor_pass(host: str, port: int, run: Callable[[], int]) -> tuple[Cost, list[list[str]]]:
    """MONITOR around ``run()``; returns the cost and the client commands seen."""
    monitor = Monitor(host, port)
    t0 = time.perf_counter()
    try:
        turns = run()
    finally:
        time.sleep(0.05)  # the feed of the last commands
        commands = monitor.stop()
    seconds = time.perf_counter() - t0
    cost = Cost(
        turns=turns,
        seconds=seconds,
        round_trips=len(commands),
        tasks=sum(1 for c in commands if is_task_message(c)),
        client_bytes=sum(resp_size(c) for c in commands),
    )
    return cost, commands


def idle(client: Any, host: str, port: int, seconds: float) -> Cost:
    """The background of the deployment with no turn running: both passes over ``seconds``."""
    info = info_pass(client, lambda: time.sleep(seconds / 2) or 0)
    monitored, _ = monitor_pass(host, port, lambda: time.sleep(seconds / 2) or 0)
    # MONITOR's figures as rates over the INFO pass's seconds.
    scale = info.seconds / monitored.seconds if monitored.seconds else 0.0
    info.round_trips = monitored.round_trips * scale
    info.tasks = monitored.tasks * scale
    info.client_bytes = monitored.client_bytes * scale
    return info


def is_task_message(args: list[str]) -> bool:
    """A Celery task message published on the Redis transport (``LPUSH <queue>``)."""
    return len(args) > 1 and args[0].upper() == "LPUSH" and args[1].startswith(QUEUE_PREFIXES)


# -- MONITOR ---------------------------------------------------------------------------


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


def label(args: list[str]) -> str:
    """What a command is, for a breakdown: the script's name, or the command and its key."""
    name = args[0].upper()
    if name == "EVALSHA":
        return f"EVALSHA {SCRIPT_NAMES.get(args[1], args[1][:8])}"
    if name in ("PUBLISH", "LPUSH", "RPUSH", "BRPOP", "ZADD", "HSET", "SET"):
        key = args[1] if len(args) > 1 else ""
        return f"{name} {re.sub(r'[0-9a-f]{32}', '<id>', key)[:48]}"
    return name
