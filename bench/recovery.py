"""Recovery from a whole-worker crash: ``python -m bench.recovery [--broker redis rabbitmq]``.

``slow_bot``'s turn is start, llm (tool call), tool (5 s), llm, finish. With the
production settings (the defaults: broker ``visibility_timeout`` 3600 s, step lease TTL
10 s renewed every 10/3 s, sweep every 2 s, dispatch grace 30 s; none is shortened here),
one ``celery -A tasks worker -c 1`` runs the turn; ``--kill-at`` seconds into the tool
step, the worker's main process and its pool child are SIGKILLed together, and a fresh
worker is started at once. The state is on Redis; the broker is, in turn:

- ``redis``: nothing is redelivered by the broker (the visibility timeout is an hour):
  the fresh worker's sweeper finds the dead process's lease and re-dispatches the tool
  step, which runs again from the start (5 s more);
- ``rabbitmq`` (the machine's RabbitMQ on 127.0.0.1:5672, a vhost of this run's own,
  quorum queues): the killed worker's connection closes and RabbitMQ puts its
  unacknowledged tool message back in the queue at once (redelivery on connection loss);
  the fresh worker receives it as it starts, or its sweeper dispatches the step first,
  whichever comes first (``rerun by``: the redelivered message or the sweeper's).

Figures, per run:

- ``fresh worker ready``: seconds from the kill until the new worker logs ``ready.``.
- ``tool restarted``: seconds from the kill until the tool step runs again.
- ``kill -> COMPLETED``: seconds from the kill until the turn's final checkpoint
  (target: at most 15 s; it includes the 5 s the tool takes again).
- ``duplicate checkpoints``: step records beyond the one of each step that the turn
  needs (must be 0; the killed run's ``lost`` record is not one); ``tool runs`` counts
  the tool's starts (2: killed, then re-run).
"""

from __future__ import annotations

import argparse
import re
import time
import uuid

from agent_platform.settings import Settings
from tests.topologies import RabbitVhost, rabbitmq_unavailable

from .agent import SLOW_FINISHED, SLOW_STARTED
from .common import Bench, median, note, parse_args, print_header, print_table, wait_turn

EXPECTED = ["start", "llm", "tool", "llm", "finish"]


def wait_for(predicate, timeout: float, what: str) -> float:  # noqa: ANN001
    """Poll every 10 ms; returns ``time.monotonic()`` when ``predicate()`` held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


def duplicates(kinds: list[str]) -> int:
    """Records beyond the expected one per step (retries and events set aside)."""
    return sum(max(0, kinds.count(k) - EXPECTED.count(k)) for k in set(kinds))


def rerun_by(killed_log: str, fresh_log: str) -> str:
    """``broker`` when the fresh worker completed the very tool task the killed one had
    received (the broker redelivered it), ``sweeper`` when another message ran it."""
    received = re.findall(r"step\.tool\[([\w-]+)\] received", killed_log)
    done = re.findall(r"step\.tool\[([\w-]+)\] succeeded in [\d.e-]+s: 'done", fresh_log)
    if not done:
        return "?"
    return "broker" if received and done[0] == received[-1] else "sweeper"


def measure(broker: str, kill_at: list[float], **env: str) -> list[list[object]]:
    """One row per kill (see the module docstring) on a fresh deployment whose broker is
    ``broker`` (``env`` names it); prints the deployment's description first."""
    rows: list[list[object]] = []
    with Bench(f"recovery-{broker}", agent_app="bench.agent:slow_bot", **env) as bench:
        print(f"{broker}: {bench.describe()}")
        runtime = bench.platform().runtime
        s = runtime.settings
        defaults = Settings()
        same = all(
            getattr(s, f) == getattr(defaults, f)
            for f in ("visibility_timeout", "lease_ttl", "sweep_interval", "dispatch_grace")
        )
        print(
            f"{broker}: broker {runtime.broker().redacted_url()}; settings: visibility_timeout "
            f"{s.visibility_timeout:.0f} s, lease_ttl {s.lease_ttl:g} s, sweep_interval {s.sweep_interval:g} s, "
            f"dispatch_grace {s.dispatch_grace:g} s ({'the production defaults' if same else 'NOT the defaults'})"
        )
        store = runtime.store_for("SlowBot")
        client = bench.client
        worker = bench.worker("tasks", concurrency=1)
        for at in kill_at:
            wf, _ = runtime.start_workflow("SlowBot", "Run the slow step.", session_id=f"r{uuid.uuid4().hex[:8]}")
            started = wait_for(lambda: client.hget(SLOW_STARTED, wf) == "1", 30, "the tool step")  # noqa: B023
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            killed = time.monotonic()
            worker.kill()
            note(f"{broker}: killed the worker {at:g} s into the tool step of {wf}")
            dead, worker = worker, bench.worker("tasks", concurrency=1, wait=False)
            ready = worker.started_at + worker.wait_ready()
            restarted = wait_for(lambda: client.hget(SLOW_STARTED, wf) == "2", 60, "the tool to run again")  # noqa: B023
            record = wait_turn(store, wf, timeout=60)
            done = time.monotonic()
            state = store.state(wf)
            records = [r for r in store.steps(wf) if r["status"] != "retry" and r["kind"] not in ("event", "message")]
            kinds = [r["kind"] for r in records if r["status"] != "lost"]
            runs = int(client.hget(SLOW_STARTED, wf) or 0)
            ends = int(client.hget(SLOW_FINISHED, wf) or 0)
            note(f"{broker}: {wf}: {state.runtime_status} ({record['kind']}), {done - killed:.1f} s after the kill")
            rows.append(
                [broker, at, ready - killed, restarted - killed, done - killed, state.runtime_status.value,
                 duplicates(kinds), rerun_by(dead.log(), worker.log()), f"{runs} started, {ends} finished",
                 " ".join(f"{r['kind']}({r['status']})" if r["status"] != "ok" else r["kind"] for r in records)]
            )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kill-at",
        type=float,
        nargs="+",
        default=[1.0, 2.5, 4.0],
        help="seconds into the 5 s tool step at which to kill, one run each (default 1.0 2.5 4.0)",
    )
    parser.add_argument(
        "--broker",
        nargs="+",
        choices=("redis", "rabbitmq"),
        default=["redis", "rabbitmq"],
        help="the brokers to measure, one deployment each (default both; rabbitmq needs 127.0.0.1:5672)",
    )
    args = parse_args(parser, argv, quick={"kill_at": [2.5]})

    print_header("bench.recovery: whole-worker SIGKILL during a 5 s tool step")
    rows: list[list[object]] = []
    for broker in args.broker:
        if broker == "redis":
            rows += measure(broker, args.kill_at)
            continue
        unavailable = rabbitmq_unavailable()
        if unavailable:
            print(f"rabbitmq: not measured ({unavailable})")
            continue
        vhost = RabbitVhost("agent-platform-bench").create()
        try:
            rows += measure(broker, args.kill_at, AGENT_PLATFORM_BROKER_URL=vhost.url)
        finally:
            vhost.delete()
    print()
    print_table(
        [
            "broker",
            "killed at s into tool",
            "fresh worker ready s",
            "tool restarted s",
            "kill -> COMPLETED s",
            "status",
            "duplicate checkpoints",
            "rerun by",
            "tool runs",
            "step log",
        ],
        rows,
    )
    print("targets:")
    for broker in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == broker]
        worst = max(float(r[4]) for r in mine)
        dups = sum(int(r[6]) for r in mine)
        ok = dups == 0 and all(r[5] == "COMPLETED" for r in mine)
        print(
            f"  {broker}: median kill -> COMPLETED {median([float(r[4]) for r in mine]):.1f} s; "
            f"recovery <= 15 s after a whole-worker SIGKILL (worst run): {worst:.1f} s -> "
            f"{'met' if worst <= 15 else 'NOT met'}; 0 duplicate checkpoints: {dups} -> {'met' if ok else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
