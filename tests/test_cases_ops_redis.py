"""Field cases of the Redis side (issue 10): C17 the API while Redis is stopped, C18 Redis
URLs with redis-py's options, and background threads that crash (issue point 2).

Real redis-server (SIGSTOPped for C17), real Celery workers, the Procfile's gunicorn
``web`` line and real ``agent-platform bus`` processes.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agent_platform.bus.dedup import derived_workflow_id
from agent_platform.bus.messages import TriggerAction, envelope
from agent_platform.bus.streams import StreamBus
from agent_platform.ids import new_workflow_id
from agent_platform.processes import free_port
from agent_platform.registry import list_agents
from agent_platform.runtime import Runtime
from agent_platform.settings import Settings
from agent_platform.testing import ScriptedModel, delay, text, tool_call

from .agents_failures import tool_events
from .bus_helpers import BusProcess, dump
from .helpers import Api, Platform, platform_env
from .ops_helpers import Proc, SseStream, process_env, shell_procfile_line, wait_http
from .workers import Stack, wait_until

OUTAGE_SECONDS = 30.0  # as the case says: the outage outlasts every client retry and timeout
PARIS = "I want to find flights to Paris"
ANSWER = "SkyHighAir flies to Paris for $450.00."


def _redis_url(server: Any, db: int, query: str = "") -> str:
    return f"{server.url.rsplit('/', 1)[0]}/{db}{query}"


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url.split("?")[0])
    client.flushdb()
    client.close()


def _gunicorn(env: dict[str, str | None], log: Path, wait: bool = True) -> tuple[Proc, str]:
    """The Procfile's web line as written, with ``env``; returns it and its base URL."""
    port = free_port()
    web = shell_procfile_line("web", process_env({k: v for k, v in env.items() if v} | {"PORT": str(port)}), log)
    if wait:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
    return web, f"http://127.0.0.1:{port}"


def _paris(body: dict[str, Any]) -> Any:
    """The model of these tests: a slow answer for "slow" tasks, else the Paris turn."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return text(ANSWER)
    if "slow" in str(last.get("content")):
        return delay(11, text("Slowly answered."))
    return tool_call("search_flights", {"destination": "Paris"})


# -- C17: the API while Redis is down ---------------------------------------------------


def _timed(http: httpx.Client, method: str, path: str, body: Any = None) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = http.request(method, path, json=body)
    return response, time.monotonic() - began


def test_c17_while_redis_is_stopped_the_api_answers_503_within_3s_then_recovers_without_restart(
    api: Api, model: ScriptedModel, platform: Platform, redis_server: Any, tmp_path: Path
) -> None:
    model.set_responder(_paris)
    web, base = _gunicorn(platform.env, tmp_path / "web.log")
    try:
        with httpx.Client(base_url=base, timeout=20) as http:
            done = api.start_turn(PARIS, session_id="before")
            assert api.wait_status(done)["runtime_status"] == "COMPLETED"
            model.add(delay(4, tool_call("search_flights", {"destination": "Paris"})))  # in flight when Redis stops
            flying = api.start_turn(PARIS, session_id="flying")
            wait_until(lambda: model.calls >= 3, timeout=15, message="the in-flight model call")

            os.kill(redis_server.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            rounds = 0
            try:
                while time.monotonic() - stopped_at < OUTAGE_SECONDS:
                    health, took = _timed(http, "GET", "/health")
                    assert health.status_code == 200 and took < 1.0, (health.text, took)
                    for method, path, body in (
                        ("GET", f"/workflows/{done}", None),
                        ("POST", "/start-workflow", {"task": PARIS, "session_id": "during"}),
                        ("GET", "/ready", None),
                    ):
                        response, took = _timed(http, method, path, body)
                        assert response.status_code == 503, (path, response.status_code, response.text)
                        assert took < 3.0, f"{method} {path} took {took:.2f} s (case C17: within 3 s)"
                        assert response.headers["Retry-After"] == "5"
                        if path == "/ready":
                            assert {"redis", "broker"} <= set(response.json()["missing"]), response.text
                        else:
                            error = response.json()["error"]
                            assert error["code"] == "redis_unavailable" and "Redis" in error["message"], error
                    rounds += 1
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)
            assert rounds >= 3

            # Redis is back: the same processes answer again, nothing was lost
            first = http.get(f"/workflows/{done}")
            assert first.status_code == 200 and first.json()["runtime_status"] == "COMPLETED", first.text
            assert api.wait_status(flying, timeout=120)["runtime_status"] == "COMPLETED"
            after = http.post("/start-workflow", json={"task": PARIS, "session_id": "after"})
            assert after.status_code == 202, after.text
            assert api.wait_status(after.json()["workflow_instance_id"])["runtime_status"] == "COMPLETED"
            wait_until(lambda: http.get("/ready").status_code == 200, timeout=30, message="/ready 200 again")
            sessions = sorted(w["session_id"] for w in http.get("/workflows").json()["workflows"])
            assert sessions == ["after", "before", "flying"]  # no start during the outage half-happened
            assert all(w.alive() for w in platform.stack.workers)  # no restart was needed
    finally:
        web.stop()
        if not all(w.alive() for w in platform.stack.workers):
            dump("web", web.log())


# -- C18: Redis URLs as redis-py documents them -----------------------------------------


@pytest.fixture(params=["?socket_timeout=2", "?protocol=3"], ids=["socket_timeout", "resp3"])
def url_stack(
    request: pytest.FixtureRequest, redis_server: Any, model: ScriptedModel, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """A worker, the Procfile's web line and a bus, all with ``REDIS_URL=...<option>``
    (on a database of their own: no other worker takes their steps)."""
    url = _redis_url(redis_server, 13, request.param)
    _flush(url)
    env = platform_env(url, model.base_url, "tests.agents:travel_buddy")
    stack = Stack(process_env({k: v for k, v in env.items() if v}), tmp_path / "workers", 2)
    bus = BusProcess(stack.env, tmp_path / "bus.log")
    web = None
    try:  # all three start at once
        worker = stack.start_worker(wait=False)
        web, base = _gunicorn(env, tmp_path / "web.log", wait=False)
        bus.start(wait=False)
        stack.wait_ready(worker)  # kombu took the URL
        wait_http(f"{base}/health", timeout=60)
        bus.wait_ready()
        yield url, base
    except BaseException:
        dump("workers", stack.logs(since_mark=False))
        dump("bus", bus.log())
        raise
    finally:  # all three stop at once
        stoppers = [threading.Thread(target=f) for f in (bus.stop, stack.stop, *([web.stop] if web else []))]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


def test_c18_worker_web_and_bus_run_turns_and_keep_an_idle_stream_with_redis_py_url_options(
    url_stack: tuple[str, str], model: ScriptedModel
) -> None:
    url, base = url_stack
    model.set_responder(_paris)
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/ready").json()["checks"] == {"redis": "ok", "broker": "ok", "workers": 1}
        slow = http.post("/start-workflow", json={"task": "A slow question", "session_id": "slow"}).json()
        began = time.monotonic()
        with SseStream(http, f"/workflows/{slow['workflow_instance_id']}/events?tokens=0", read_timeout=30) as stream:
            # meanwhile: a Paris turn over HTTP and one triggered over the bus
            paris = http.post("/start-workflow", json={"task": PARIS, "session_id": "paris"}).json()
            client = redis.Redis.from_url(url.split("?")[0], decode_responses=True)
            try:
                StreamBus(client).publish(
                    "TravelBuddy", envelope(TriggerAction(task=PARIS, session_id="bus"), "test/c18", message_id="c18")
                )
            finally:
                client.close()
            by_bus = derived_workflow_id("TravelBuddy", "c18")
            for wf in (paris["workflow_instance_id"], by_bus):
                wait_until(
                    lambda wf=wf: http.get(f"/workflows/{wf}").json().get("runtime_status") == "COMPLETED",  # type: ignore[misc]
                    timeout=60,
                    message=f"{wf} COMPLETED",
                )
                steps = http.get(f"/workflows/{wf}/steps").json()["steps"]
                assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]
                assert http.get(f"/workflows/{wf}").json()["output"] == ANSWER
            events = stream.read_to_end()  # ~11 s with no step: the stream must stay open
        assert time.monotonic() - began >= 10
        # the model's text may also come as `token` events (a side channel, DESIGN rule 12)
        events = [e for e in events if e.event != "token"]
        assert [e.event for e in events] == ["step", "step", "step", "status"], [(e.event, e.data) for e in events]
        assert [e.data["kind"] for e in events[:3]] == ["start", "llm", "finish"]
        assert events[-1].data["runtime_status"] == "COMPLETED"


# -- background threads that crash ------------------------------------------------------


def test_threads_that_crash_restart_with_a_log_line_and_their_work_goes_on(
    redis_server: Any, model: ScriptedModel, tmp_path: Path
) -> None:
    url = _redis_url(redis_server, 14)
    _flush(url)
    env = platform_env(
        url,
        model.base_url,
        "tests.agents_failures:ops_buddy",
        AGENT_PLATFORM_LEASE_TTL="4.5",  # renewed every 1.5 s
        AGENT_PLATFORM_SWEEP_INTERVAL="0.5",
        AGENT_PLATFORM_REGISTRY_HEARTBEAT="0.5",
        AGENT_PLATFORM_BUS_BLOCK="0.2",
        AGENT_PLATFORM_DISPATCH_GRACE="1",  # the sweeper looks again soon: only a live lease keeps it off
    )
    stack = Stack(process_env({k: v for k, v in env.items() if v}), tmp_path / "workers", 2)
    bus = BusProcess(stack.env, tmp_path / "bus.log", AGENT_PLATFORM_FAULT="thread_crash:bus")
    runtime = Runtime(Settings.from_env({k: v for k, v in env.items() if v}), worker="test")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        stack.start_worker("faulty", AGENT_PLATFORM_FAULT="thread_crash:sweeper,registry,leases")
        bus.start()
        for name in ("sweeper", "registry"):
            stack.find_in_logs(rf"thread {name} crashed; restarting it in 1 s", timeout=15)
            stack.find_in_logs(rf"thread {name} restarted", timeout=15)
        wait_until(lambda: "thread bus-OpsBuddy restarted" in bus.log(), 15, message="the bus thread to restart")
        assert "InjectedFault" in bus.log() and bus.alive()

        # the sweeper: a turn whose start message was lost (created, never dispatched) is
        # dispatched by it; the leases: its tool runs longer than the lease TTL and the lease
        # keeper crashes at its first renewal: restarted, it keeps the lease, the tool runs once
        model.add(tool_call("slow_task", {"seconds": 6, "label": "lease"}), text("Slow task done."))
        store = runtime.store_for("OpsBuddy")
        lost = store.create(new_workflow_id(), "OpsBuddy", "lost", "Nobody sent my start step", due_in=0.2)[0]
        wait_until(lambda: store.state(lost).runtime_status == "COMPLETED", 60, message="the swept turn")
        stack.find_in_logs(r"thread leases crashed; restarting it in 1 s")
        assert len(tool_events(client, "slow_task:start")) == 1  # its lease was renewed after the crash
        assert not re.search(r"re-dispatching \S+ step tool/", stack.logs(since_mark=False))

        # the registry heartbeat goes on
        first = list_agents(runtime)[0]["heartbeat_ms"]
        wait_until(lambda: list_agents(runtime)[0]["heartbeat_ms"] > first, 10, message="a newer heartbeat")
        assert not list_agents(runtime)[0]["stale"]

        # the bus consumer: a triggered turn still starts and ends
        model.add(text("Triggered."))
        StreamBus(client).publish("OpsBuddy", envelope(TriggerAction(task="Hello"), "test/threads", message_id="t1"))
        by_bus = derived_workflow_id("OpsBuddy", "t1")
        wait_until(
            lambda: store.exists(by_bus) and store.state(by_bus).runtime_status == "COMPLETED",
            30,
            message="the bus-triggered turn",
        )
    except BaseException:
        dump("workers", stack.logs(since_mark=False))
        dump("bus", bus.log())
        raise
    finally:
        client.close()
        runtime.close()
        bus.stop()
        stack.stop()
