"""Recovery from a whole-worker crash: ``python -m bench.recovery``.

``slow_bot``'s turn is start, llm (tool call), tool (5 s), llm, finish. With the
production settings (the defaults: broker ``visibility_timeout`` 3600 s, step lease TTL
10 s renewed every 10/3 s, sweep every 2 s, dispatch grace 30 s; none is shortened here),
one ``celery -A tasks worker -c 1`` runs the turn; ``--kill-at`` seconds into the tool
step, the worker's main process and its pool child are SIGKILLed together, and a fresh
worker is started at once. Nothing is redelivered by the broker (the visibility timeout
is an hour): the fresh worker's sweeper finds the expired lease and re-dispatches the
tool step, which runs again from the start (5 s more).

Figures, per run:

- ``fresh worker ready``: seconds from the kill until the new worker logs ``ready.``.
- ``tool restarted``: seconds from the kill until the tool step runs again.
- ``kill -> COMPLETED``: seconds from the kill until the turn's final checkpoint
  (target: at most 15 s; it includes the 5 s the tool takes again).
- ``duplicate checkpoints``: step records beyond the one of each step that the turn
  needs (must be 0); ``tool runs`` counts the tool's starts (2: killed, then re-run).
"""

from __future__ import annotations

import argparse
import time
import uuid

from agent_platform.settings import Settings

from .agent import SLOW_FINISHED, SLOW_STARTED
from .common import Bench, median, note, print_header, print_table, wait_turn

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kill-at",
        type=float,
        nargs="+",
        default=[1.0, 2.5, 4.0],
        help="seconds into the 5 s tool step at which to kill, one run each (default 1.0 2.5 4.0)",
    )
    args = parser.parse_args(argv)

    print_header("bench.recovery: whole-worker SIGKILL during a 5 s tool step")
    rows = []
    with Bench("recovery", agent_app="bench.agent:slow_bot") as bench:
        print(bench.describe())
        print()
        runtime = bench.platform().runtime
        s = runtime.settings
        defaults = Settings()
        same = all(
            getattr(s, f) == getattr(defaults, f)
            for f in ("visibility_timeout", "lease_ttl", "sweep_interval", "dispatch_grace")
        )
        print(
            f"settings: visibility_timeout {s.visibility_timeout:.0f} s, lease_ttl {s.lease_ttl:g} s, "
            f"sweep_interval {s.sweep_interval:g} s, dispatch_grace {s.dispatch_grace:g} s "
            f"({'the production defaults' if same else 'NOT the defaults'})"
        )
        store = runtime.store_for("SlowBot")
        client = bench.client
        worker = bench.worker("tasks", concurrency=1)
        for kill_at in args.kill_at:
            wf, _ = runtime.start_workflow("SlowBot", "Run the slow step.", session_id=f"r{uuid.uuid4().hex[:8]}")
            started = wait_for(lambda: client.hget(SLOW_STARTED, wf) == "1", 30, "the tool step")  # noqa: B023
            time.sleep(max(0.0, kill_at - (time.monotonic() - started)))
            killed = time.monotonic()
            worker.kill()
            note(f"killed the worker {kill_at:g} s into the tool step of {wf}")
            worker = bench.worker("tasks", concurrency=1, wait=False)
            ready = worker.started_at + worker.wait_ready()
            restarted = wait_for(lambda: client.hget(SLOW_STARTED, wf) == "2", 60, "the tool to run again")  # noqa: B023
            record = wait_turn(store, wf, timeout=60)
            done = time.monotonic()
            state = store.state(wf)
            kinds = [
                r["kind"] for r in store.steps(wf) if r["status"] != "retry" and r["kind"] not in ("event", "message")
            ]
            runs = int(client.hget(SLOW_STARTED, wf) or 0)
            ends = int(client.hget(SLOW_FINISHED, wf) or 0)
            note(f"{wf}: {state.runtime_status} ({record['kind']}), {done - killed:.1f} s after the kill")
            rows.append(
                [kill_at, ready - killed, restarted - killed, done - killed, state.runtime_status.value, duplicates(kinds),
                 f"{runs} started, {ends} finished", " ".join(kinds)]
            )  # fmt: skip
    print_table(
        [
            "killed at s into tool",
            "fresh worker ready s",
            "tool restarted s",
            "kill -> COMPLETED s",
            "status",
            "duplicate checkpoints",
            "tool runs",
            "step log",
        ],
        rows,
    )
    worst = max(r[3] for r in rows)
    dups = sum(r[5] for r in rows)
    print(f"median kill -> COMPLETED: {median([r[3] for r in rows]):.1f} s; worst {worst:.1f} s")
    print("targets:")
    print(
        f"  recovery <= 15 s after a whole-worker SIGKILL (worst run): {worst:.1f} s -> {'met' if worst <= 15 else 'NOT met'}"
    )
    ok = dups == 0 and all(r[4] == "COMPLETED" for r in rows)
    print(f"  0 duplicate checkpoints: {dups} -> {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
