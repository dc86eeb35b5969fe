"""``POST /start-workflow`` through gunicorn: ``python -m bench.http``.

The web app (``gunicorn "web:create_app()"`` with 2 gevent workers from
``web/gunicorn.conf.py``, as in the Procfile) serves on 127.0.0.1 against the benchmark's private
Redis; no Celery worker runs, so every request does the API's own work only: validate,
create the workflow (status hash, indexes, session list) and enqueue its ``start`` step
on the broker. The load client is this process: ``--clients`` threads, each with its own
``httpx.Client`` (keep-alive), sending ``{"task": ..., "session_id": <new>}`` back to
back for ``--seconds`` seconds or ``--max-requests`` requests, whichever comes first,
after ``--warmup`` requests that are not counted.

Figures: ``requests/s`` (answered requests / seconds), latency percentiles of one
request in ms as the client sees it, the count of answers that were not 202, and, as a
check, the workflows created and ``start`` steps queued in Redis. The client shares the
2 CPUs with gunicorn and Redis, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import httpx

from agent_platform.processes import ManagedProcess, ProcessFailed, free_port, gunicorn_command

from .common import REPO, Bench, note, percentile, print_header, print_table


def start_gunicorn(bench: Bench, port: int, workers: int) -> ManagedProcess:
    cmd = gunicorn_command("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning")
    proc = ManagedProcess("gunicorn", cmd, env=bench.env, cwd=REPO, log_path=bench.dir / "gunicorn.log").start()

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        proc.wait_ready(up, 60)
    except ProcessFailed as exc:
        proc.stop()
        raise RuntimeError(str(exc)) from None
    return proc


def load(base_url: str, clients: int, seconds: float, max_requests: int) -> tuple[list[float], int, float]:
    """Send requests from ``clients`` threads; returns (latencies s, non-202 count, seconds)."""
    latencies: list[float] = []
    bad = [0]
    lock = threading.Lock()
    budget = [max_requests]
    stop_at = time.perf_counter() + seconds

    def client(n: int) -> None:
        mine: list[float] = []
        errors = 0
        with httpx.Client(base_url=base_url, timeout=10) as http:
            while time.perf_counter() < stop_at:
                with lock:
                    if budget[0] <= 0:
                        break
                    budget[0] -= 1
                body = {"task": "Run the benchmark step.", "session_id": f"h{n}-{uuid.uuid4().hex[:12]}"}
                t0 = time.perf_counter()
                try:
                    status = http.post("/start-workflow", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                mine.append(time.perf_counter() - t0)
                errors += status != 202
        with lock:
            latencies.extend(mine)
            bad[0] += errors

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, bad[0], time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="request cap (default 50000)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted warm-up requests (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    args = parser.parse_args(argv)

    print_header("bench.http: POST /start-workflow through gunicorn")
    with Bench("http") as bench:
        print(bench.describe())
        print()
        port = free_port()
        proc = start_gunicorn(bench, port, args.workers)
        try:
            base = f"http://127.0.0.1:{port}"
            note(f"gunicorn up on {base}; {args.warmup} warm-up requests")
            load(base, args.clients, 30, args.warmup)
            created_before = bench.client.zcard("workflow_state:index")
            note(f"{args.seconds:g} s of load from {args.clients} client threads")
            latencies, bad, seconds = load(base, args.clients, args.seconds, args.max_requests)
            created = bench.client.zcard("workflow_state:index") - created_before
            queued = bench.client.llen("agent.BenchBot")
        finally:
            proc.stop(timeout=15)
    ms = [x * 1000 for x in latencies]
    print(
        f"gunicorn: {args.workers} gevent workers (web/gunicorn.conf.py); client: {args.clients} threads "
        f"(httpx, keep-alive), {args.seconds:g} s or {args.max_requests} requests"
    )
    print_table(
        ["requests", "not 202", "seconds", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [
            [
                len(ms),
                bad,
                seconds,
                len(ms) / seconds,
                percentile(ms, 50),
                percentile(ms, 90),
                percentile(ms, 99),
                max(ms),
            ]
        ],
    )
    print(f"check: {created} workflows created during the measured load, {queued} start steps queued in all")


if __name__ == "__main__":
    main()
