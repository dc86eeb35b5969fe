"""What a turn costs Redis: commands, round trips, bytes, CPU and AOF, measured two ways.

- :func:`info_pass`: ``INFO`` deltas over some turns (nothing slows Redis down):
  ``commandstats`` calls (every command Redis executed, those run inside Lua scripts
  included, the ``INFO`` calls of the measure left out), ``total_net_input_bytes`` (every
  byte every client sent: checkpoints, broker messages, task events, leases, the driver),
  ``total_net_output_bytes``, ``used_cpu_user + used_cpu_sys`` of the server (all its
  threads) and ``aof_current_size`` (bytes appended to the AOF).
- :func:`monitor_pass`: ``MONITOR`` over some turns: the commands clients sent (the
  commands that Lua scripts issue left out), the round trips that carried them (a
  pipeline is one: :func:`split_round_trips`), their RESP size, and the Celery messages
  published (``LPUSH`` to a queue: tasks per turn). MONITOR slows Redis, so time and CPU
  come from the INFO pass only.

Both count every client of the server: the worker(s), the broker client, the driver
waiting for the turn (``XREAD BLOCK`` for agent-platform, ``BLPOP`` for the raw chain)
and whatever runs on a timer (sweeper, registry heartbeat, worker heartbeat events, the
broker's idle ``BRPOP`` polls). :meth:`Cost.net_of` removes such a background, measured
over idle seconds, in proportion to the seconds of the measure.

``python -m bench.redis_cost`` checks the count of round trips on known traffic.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Sequence
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
        commands_sent: commands sent by clients (``MONITOR``, Lua-issued ones left out).
        round_trips: the round trips that carried them (``MONITOR``; :func:`round_trips`).
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
    commands_sent: float = 0.0
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
        for name in MONITORED:
            values[name] = getattr(monitored, name) * scale
        return Cost(**values)


#: The figures of :class:`Cost` that the MONITOR pass measures.
MONITORED = ("commands_sent", "round_trips", "tasks", "client_bytes")


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
        commands_sent=len(commands),
        round_trips=round_trips(monitor.lines),
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
    for name in MONITORED:
        setattr(info, name, getattr(monitored, name) * scale)
    return info


def is_task_message(args: list[str]) -> bool:
    """A Celery task message published on the Redis transport (``LPUSH <queue>``)."""
    return len(args) > 1 and args[0].upper() == "LPUSH" and args[1].startswith(QUEUE_PREFIXES)


# -- MONITOR ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of ``MONITOR``: ``1764490000.123456 [0 127.0.0.1:54321] "EVALSHA" ...``.

    Attributes:
        time: Redis's clock, seconds.
        client: the client's address, or ``lua`` for a command a script issued.
        args: the command and its arguments.
    """

    time: float
    client: str
    args: list[str]

    @property
    def lua(self) -> bool:
        return self.client == "lua"


_LINE = re.compile(r'^\+?(\d+\.\d+) \[\d+ (.+?)\] (".*)$')


def parse_monitor(text: str) -> list[Line]:
    """The lines of a ``MONITOR`` feed (its first ``+OK`` and any partial line left out)."""
    lines = []
    for raw in text.split("\r\n"):
        match = _LINE.match(raw)
        if match:
            stamp, client, rest = match.groups()
            lines.append(Line(float(stamp), client, [_unescape(a) for a in _ARG.findall(rest)]))
    return lines


#: Microseconds MONITOR spends quoting one byte of a line's arguments after it stamps the
#: line, which land in the gap before the next line (measured: 30 ns/byte, 45 for binary).
QUOTE_US_PER_BYTE = 0.03
#: The largest gap (us, quoting taken off) between two commands of one round trip.
PIPELINE_GAP_US = 25.0
#: The same after a script, whose work after its last ``redis.call`` the feed does not show.
SCRIPT_GAP_US = 100.0
SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


def split_round_trips(
    lines: Sequence[Line], gap_us: float = PIPELINE_GAP_US, script_gap_us: float = SCRIPT_GAP_US
) -> list[list[Line]]:
    """The client commands of a ``MONITOR`` feed, grouped by the round trip that carried them.

    Redis reads what a client pipelined in one batch and runs all of it before it serves
    anyone else, and a client that waits for a reply sends its next command one loopback
    round trip later at the soonest. So a round trip is a run of consecutive client lines
    (``[0 lua]`` lines left out) from one address, each close to the line before it:
    within ``gap_us`` of the previous line of any kind (a script's commands run between
    its ``EVALSHA`` line and its end), less :data:`QUOTE_US_PER_BYTE` per byte of that
    line; within ``script_gap_us`` when that line is a script's. ``MULTI`` ... ``EXEC``
    (or ``DISCARD``) of one client is one round trip whatever the gaps and whoever comes
    between: redis-py and kombu send a transaction as one pipeline, and Redis 7 feeds the
    queued commands as ``EXEC`` runs them.

    How the thresholds were chosen (redis-server 7.0.15, redis-py 8.1 with hiredis, 2 CPUs;
    ``python -m bench.redis_cost`` prints the gaps and checks the count on known traffic):
    Redis stamps a line once the command has run (a script's ``EVALSHA`` as it starts), then
    quotes it into the feed, so a gap is the quoting of the line before (30 ns a byte:
    45 us after a 1.5 KB command), the command's own run time and, between round trips,
    the client's wait for its reply. With the quoting taken off:

    - within a round trip: redis-py pipelines of small commands 2 us at the median, 11-16
      us at the 99th percentile (outliers to 150 us when the server is descheduled); the
      engine's pipelines in the benchmarks' turns (its creation, ``CHECKPOINT`` + ``ZADD``,
      token batch + ``CHECKPOINT`` + ``ZADD``, memory + ``ZREM``, ``LINDEX`` + ``LRANGE``)
      at most 13 us after a plain command and 98 us after a script (what the checkpoint
      does after its last ``redis.call`` is not in the feed);
    - between round trips: at least 168 us in the benchmarks' turns (their clients do
      work between two commands); a loop of redis-py calls with nothing between them,
      about 27 us at the least after a plain command (median ~100) and 36 us after a
      script (median 80-120).

    Hence 25 us, and 100 us after a script. On MONITOR traces of 10-20 turns of each
    Celery system of ``bench.steps`` (sequential and 8 in flight; 2,470 round trips) the
    count is exact, and over 20 turns of each it matched, within 1, the read events the
    server counted meanwhile (``INFO stats`` ``total_reads_processed``: one per round trip
    when a pipeline fits in one read). On known traffic: back-to-back plain commands, pipelines of 4,
    transactions, ``EVALSHA`` + ``ZADD`` pipelines and two clients at once are counted
    right (pipelines: +1 in 200 at times); pipelines carrying 1.5 KB values +2-5% (the
    quoting time varies); a script followed at once by a separate command is often taken
    for a pipeline (-1% to -45%): the benchmarks' clients never send like that.
    """
    trips: list[list[Line]] = []
    in_multi: dict[str, list[Line]] = {}  # client -> its trip, from MULTI to EXEC
    previous: Line | None = None  # the last client line
    trip: list[Line] = []  # ... and its trip
    last: Line | None = None  # the last line of any kind
    for line in lines:
        if line.lua:
            last = line
            continue
        joined = in_multi.get(line.client)
        if joined is None and previous is not None and last is not None and previous.client == line.client:
            after_script = last.lua or _name(last) in SCRIPTS
            gap = (line.time - last.time) * 1e6 - QUOTE_US_PER_BYTE * sum(len(a) for a in last.args)
            if gap <= (script_gap_us if after_script else gap_us):
                joined = trip
        if joined is None:
            joined = []
            trips.append(joined)
        joined.append(line)
        name = _name(line)
        if name == "MULTI":
            in_multi[line.client] = joined
        elif name in ("EXEC", "DISCARD"):
            in_multi.pop(line.client, None)
        previous, trip, last = line, joined, line
    return trips


def round_trips(lines: Sequence[Line]) -> int:
    """How many round trips carried the client commands of a ``MONITOR`` feed
    (:func:`split_round_trips`)."""
    return len(split_round_trips(lines))


def _name(line: Line) -> str:
    return line.args[0].upper() if line.args else ""


class Monitor:
    """``MONITOR`` on a raw socket in a thread; :meth:`stop` returns the client commands seen
    (each a list of its arguments), leaving out the commands that Lua scripts issue, and
    keeps every line of the feed in :attr:`lines` (for :func:`round_trips`)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(b"MONITOR\r\n")
        self.buffer = b""
        while b"\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer.split(b"\r\n", 1)[1]
        self.lines: list[Line] = []
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
        self.lines = parse_monitor(self.buffer.decode(errors="replace"))
        return [line.args for line in self.lines if not line.lua]


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


# -- the check of split_round_trips: python -m bench.redis_cost --------------------------

#: Another process: a pipeline of 8 commands, then a GET, back to back, for 60 s at most.
_NEIGHBOUR = """
import time, redis
client, t0 = redis.Redis(host="{host}", port={port}), time.time()
while time.time() - t0 < 60:
    pipe = client.pipeline(transaction=False)
    for _ in range(8):
        pipe.incr("neighbour")
    pipe.execute()
    client.get("neighbour")
"""
_SCRIPT = "redis.call('HSET', KEYS[1], 'f', ARGV[1]); redis.call('ZADD', KEYS[2], 1, ARGV[1]); return 1"


def _check_traffic(client: Any, n: int) -> dict[str, tuple[Callable[[], None], int]]:
    """Traffic of a known number of round trips, each command's first key naming its trip
    (``rt<trip>:...``): name -> (send it, round trips)."""
    sha = client.script_load(_SCRIPT)
    seq = iter(range(10**9))

    def plain() -> None:
        for i in range(n):
            key = f"rt{next(seq)}:k"
            if i % 4 == 0:
                client.set(key, i)
            elif i % 4 == 1:
                client.get(key)
            elif i % 4 == 2:
                client.incr(key)
            else:
                client.zadd(key + "z", {"m": i})

    def pipelined(transaction: bool = False, script: bool = False, big: bool = False) -> Callable[[], None]:
        def send() -> None:
            for i in range(n):
                key = f"rt{next(seq)}:k"
                pipe = client.pipeline(transaction=transaction)
                if script:  # as the engine's checkpoint: the script, then the sweeper's ZADD
                    pipe.evalsha(sha, 2, key + "h", key + "z", i)
                elif big:
                    pipe.set(key, i).get(key).lpush(key + "l", "x" * 1500)
                else:
                    pipe.set(key, i).get(key).incr(key + "n")
                pipe.zadd(key + "z", {"m": i}).execute()

        return send

    def script_then_plain() -> None:
        for i in range(n):
            key = f"rt{next(seq)}:k"
            client.evalsha(sha, 2, key + "h", key + "z", i)
            client.zadd(f"rt{next(seq)}:kz", {"m": i})

    return {
        f"{n} plain commands, back to back": (plain, n),
        f"{n} pipelines of 4 (SET GET INCR ZADD)": (pipelined(), n),
        f"{n} transactions (MULTI, SET GET INCR ZADD, EXEC)": (pipelined(transaction=True), n),
        f"{n} pipelines EVALSHA + ZADD (as a checkpoint)": (pipelined(script=True), n),
        f"{n} pipelines of 4 with a 1.5 KB value (SET GET LPUSH ZADD)": (pipelined(big=True), n),
        f"{n} x (EVALSHA, then ZADD at once)": (script_then_plain, 2 * n),
    }


def _trip_of(line: Line) -> str | None:
    key = line.args[1] if len(line.args) > 1 and _name(line) != "EVALSHA" else (line.args[3:4] or [""])[0]
    return key.split(":", 1)[0] if key.startswith("rt") else None


def _gaps(lines: Sequence[Line]) -> dict[str, list[float]]:
    """Gaps (us, quoting taken off) between consecutive lines of one client with no other
    client's line between, by kind: within a round trip or between two, after a plain
    command or after a script."""
    out: dict[str, list[float]] = {}
    previous: Line | None = None
    last: Line | None = None
    for line in lines:
        if line.lua:
            last = line
            continue
        if previous and last and previous.client == line.client and _trip_of(previous) and _trip_of(line):
            after = "after a script" if last.lua or _name(last) in SCRIPTS else "after a plain command"
            kind = "within a round trip" if _trip_of(previous) == _trip_of(line) else "between round trips"
            gap = (line.time - last.time) * 1e6 - QUOTE_US_PER_BYTE * sum(len(a) for a in last.args)
            out.setdefault(f"{kind}, {after}", []).append(gap)
        previous = last = line
    return out


def main() -> None:
    """Counts round trips of known traffic on a private redis-server, idle and next to a
    busy client, and prints the distribution of the gaps the thresholds were chosen from."""
    import statistics
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import redis

    from agent_platform.embedded_redis import EmbeddedRedis

    from .common import print_table

    folder = Path(tempfile.mkdtemp(prefix="bench-round-trips-"))
    server = EmbeddedRedis(data_dir=folder, appendonly=True).start()
    neighbour = None
    gaps: dict[str, list[float]] = {}
    rows = []
    try:
        client = redis.Redis(host=server.host, port=server.port)
        for setting in ("idle server", "busy neighbour"):
            if setting == "busy neighbour":
                code = _NEIGHBOUR.format(host=server.host, port=server.port)
                neighbour = subprocess.Popen([sys.executable, "-c", code])
                time.sleep(0.5)
            for name, (send, expected) in _check_traffic(client, 200).items():
                monitor = Monitor(server.host, server.port)
                send()
                time.sleep(0.05)
                monitor.stop()
                for kind, values in _gaps(monitor.lines).items():
                    gaps.setdefault(kind, []).extend(values)
                ours = [t for t in split_round_trips(monitor.lines) if any(_trip_of(line) for line in t)]
                verdict = "right" if len(ours) == expected else f"{len(ours) - expected:+d}"
                rows.append([setting, name, expected, len(ours), verdict])
            # two clients at once, each on its own connection, interleaved at the server
            other = redis.Redis(host=server.host, port=server.port)
            both = list(_check_traffic(client, 100).values())[0], list(_check_traffic(other, 100).values())[1]
            monitor = Monitor(server.host, server.port)
            thread = threading.Thread(target=both[1][0])
            thread.start()
            both[0][0]()
            thread.join()
            time.sleep(0.05)
            monitor.stop()
            ours = [t for t in split_round_trips(monitor.lines) if any(_trip_of(line) for line in t)]
            mixed = sum(1 for t in ours if len({line.client for line in t}) > 1)
            expected = both[0][1] + both[1][1]
            verdict = "right" if len(ours) == expected and not mixed else f"{len(ours) - expected:+d}, {mixed} mixed"
            rows.append([setting, "100 plain commands and 100 pipelines of 4, two clients at once", expected,
                         len(ours), verdict])  # fmt: skip
            other.close()
        client.close()
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"gaps between consecutive commands of one client (us, MONITOR's quoting of the line before taken off at "
          f"{QUOTE_US_PER_BYTE * 1000:g} ns/byte); thresholds: {PIPELINE_GAP_US:g} us, {SCRIPT_GAP_US:g} us after a script")  # fmt: skip
    table = []
    for kind, values in sorted(gaps.items()):
        q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
        table.append([kind, len(values), min(values), q[0], q[49], q[98], max(values)])
    print_table(["gap", "pairs", "min", "p1", "median", "p99", "max"], table)
    print("round trips counted on known traffic (private redis-server; the busy neighbour's own trips left out)")
    print_table(["setting", "traffic", "round trips", "counted", "verdict"], rows)


if __name__ == "__main__":
    main()
