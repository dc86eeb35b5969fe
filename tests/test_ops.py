"""Operating the platform: scale-out over two workers, live events (SSE) with resume,
SSE under gunicorn's threaded workers, /ready naming the missing dependency, the token.

Two real ``celery -A tasks worker`` processes under different hostnames, the web app over
real HTTP, and for the gunicorn tests the Procfile's ``web`` line as a subprocess.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agent_platform.processes import free_port
from agent_platform.testing import ScriptedModel, text, tool_call

from .helpers import Api, Platform, WebServer, chain_problems, create_web_app
from .ops_helpers import SseEvent, SseStream, process_env, shell_procfile_line, wait_http
from .workers import Stack, apply_env

PLATFORM_WORKERS = 2

QUESTION = "I want to find flights to Paris"
ANSWER = "SkyHighAir flies to Paris for $450.00 and GlobalWings for $375.50."
KINDS = ["start", "llm", "tool", "llm", "finish"]


def _trip(body: dict[str, Any]) -> Any:
    """Each turn: call search_flights, then answer once the tool result is back."""
    if body["messages"][-1]["role"] == "tool":
        return text(ANSWER)
    return tool_call("search_flights", {"destination": "Paris"})


def _held(gate: threading.Event, reply: Any) -> Any:
    """A scripted reply that waits until the test opens ``gate`` (at most 30 s)."""

    def respond(body: dict[str, Any]) -> Any:
        gate.wait(30)
        return reply

    return respond


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave the model (and a worker) waiting on a failed test


def _steps_and_status(events: list[SseEvent]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The step records and the final status; the model's ``token`` events between them
    (tests/test_streaming.py checks those) are set aside."""
    assert events and events[-1].event == "status", [e.event for e in events]
    assert {e.event for e in events[:-1]} <= {"step", "token"}, [e.event for e in events]
    steps = [e for e in events[:-1] if e.event == "step"]
    for event in steps:
        assert event.id == str(event.data["seq"]), event
    assert events[-1].id is None
    return [e.data for e in steps], events[-1].data


# -- scale-out --------------------------------------------------------------------------


def test_steps_of_one_workflow_run_on_both_worker_hostnames(api: Api, model: ScriptedModel, platform: Platform) -> None:
    model.set_responder(_trip)
    hostnames = {w.hostname for w in platform.stack.workers}
    assert len(hostnames) == 2

    ids = [api.start_turn(f"{QUESTION} (traveller {n})", session_id=f"scale-{n}") for n in range(20)]

    workers_of: dict[str, set[str]] = {}
    for wf in ids:
        status = api.wait_status(wf, timeout=60)
        assert status["runtime_status"] == "COMPLETED", status
        steps = api.steps(wf)
        assert [s["kind"] for s in steps] == KINDS and chain_problems(steps) == []
        workers_of[wf] = {s["worker"] for s in steps}
    assert set().union(*workers_of.values()) == hostnames
    spread = [wf for wf, used in workers_of.items() if used == hostnames]
    assert spread, f"no workflow ran on both workers: {workers_of}"


# -- Server-Sent Events -----------------------------------------------------------------


def test_sse_client_connected_before_the_turn_gets_every_step_in_order_then_the_status(
    api: Api, model: ScriptedModel, gate: threading.Event
) -> None:
    # The first model reply is held until the client is connected and has seen `start`.
    model.add(_held(gate, tool_call("search_flights", {"destination": "Paris"})), text(ANSWER))
    wf = api.start_turn(QUESTION, session_id="sse-live")

    with SseStream(api.http, f"/workflows/{wf}/events") as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-cache"
        assert stream.response.headers["x-accel-buffering"] == "no"
        first = stream.next_event()
        assert first is not None and first.event == "step" and first.data["kind"] == "start", first
        assert model.calls <= 1 and api.status(wf)["runtime_status"] == "RUNNING"
        gate.set()  # now the llm step can finish: the client sees it live
        steps, status = _steps_and_status([first, *stream.read_to_end()])

    assert [s["seq"] for s in steps] == [0, 1, 2, 3, 4]
    assert [s["kind"] for s in steps] == KINDS
    assert steps == api.steps(wf)
    assert status == api.status(wf)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == ANSWER


def test_sse_reconnect_with_last_event_id_resumes_without_gaps_or_duplicates(
    api: Api, model: ScriptedModel, gate: threading.Event
) -> None:
    # The answer (second model reply) is held: the first connection ends mid-turn.
    model.add(tool_call("search_flights", {"destination": "Paris"}), _held(gate, text(ANSWER)))
    wf = api.start_turn(QUESTION, session_id="sse-resume")
    url = f"/workflows/{wf}/events"

    with SseStream(api.http, f"{url}?tokens=0") as stream:  # steps only
        seen = [stream.next_event() for _ in range(3)]
    assert [e.data["kind"] for e in seen if e] == ["start", "llm", "tool"]
    assert api.status(wf)["runtime_status"] == "RUNNING"
    gate.set()

    with SseStream(api.http, url, headers={"Last-Event-ID": seen[-1].id}) as stream:
        rest, status = _steps_and_status(stream.read_to_end())

    resumed = [e.data["seq"] for e in seen if e] + [s["seq"] for s in rest]
    assert resumed == [0, 1, 2, 3, 4]
    assert [s["kind"] for s in rest] == ["llm", "finish"]
    assert status["runtime_status"] == "COMPLETED"
    # ?last_event_id= when no header can be sent; the header wins over the query
    with SseStream(api.http, f"{url}?last_event_id=3") as stream:
        by_query, _ = _steps_and_status(stream.read_to_end())
    with SseStream(api.http, f"{url}?last_event_id=0", headers={"Last-Event-ID": "3"}) as stream:
        by_header, _ = _steps_and_status(stream.read_to_end())
    assert [s["seq"] for s in by_query] == [s["seq"] for s in by_header] == [4]
    # after the last step: the final status only
    with SseStream(api.http, url, headers={"Last-Event-ID": "4"}) as stream:
        assert [e.event for e in stream.read_to_end()] == ["status"]


def test_sse_errors_are_json(api: Api, model: ScriptedModel) -> None:
    model.add(text(ANSWER))
    wf = api.start_turn(QUESTION, session_id="sse-errors")

    unknown = api.http.get("/workflows/no-such-workflow/events")
    bad_header = api.http.get(f"/workflows/{wf}/events", headers={"Last-Event-ID": "step-3"})
    bad_query = api.http.get(f"/workflows/{wf}/events?last_event_id=-7")

    for response, status, code in [
        (unknown, 404, "workflow_not_found"),
        (bad_header, 400, "invalid_request"),
        (bad_query, 422, "validation_error"),
    ]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == code
    api.wait_status(wf)


# -- the bearer token -------------------------------------------------------------------

TOKEN = "test-token-0123456789"


@pytest.fixture
def guarded(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebServer]:
    """A second web app of the same deployment, with AGENT_PLATFORM_API_TOKEN set."""
    monkeypatch.setenv("AGENT_PLATFORM_API_TOKEN", TOKEN)
    web = WebServer(create_web_app())
    try:
        yield web
    finally:
        web.stop()


def _sample_url(rule: Any) -> str:
    values = {name: f"x-{name}" for name in rule.arguments}
    path = "/".join(
        values.get(part.strip("<>").split(":")[-1], part) for part in rule.rule.strip("/").split("/") if part
    )
    return f"/{path}/" if path and rule.rule.endswith("/") else f"/{path}"


def test_token_guards_every_route_but_health(guarded: WebServer, api: Api, model: ScriptedModel) -> None:
    # Static files and the inspector's sign-in form are the door, not what it guards.
    rules = [r for r in guarded.app.url_map.iter_rules() if r.endpoint not in ("static", "ui.static", "ui.sign_in")]
    assert {r.rule for r in rules} >= {"/start-workflow", "/workflows/<workflow_id>/events", "/ready", "/health"}

    with httpx.Client(base_url=guarded.base_url, timeout=15) as http:
        for rule in rules:
            method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
            url = _sample_url(rule)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = http.request(method, url, headers=headers)
                if rule.rule == "/health":
                    assert response.status_code == 200, response.text
                    continue
                assert response.status_code == 401, (method, url, headers, response.text)
                if rule.endpoint.startswith("ui."):  # an inspector page: its sign-in form (issue 12)
                    assert "Sign in" in response.text and "www-authenticate" in response.headers
                    continue
                assert response.json()["error"]["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in response.text

        with_token = {"Authorization": f"Bearer {TOKEN}"}
        for url in ("/workflows", "/agents", "/openapi.json", "/ready", "/health"):
            response = http.get(url, headers=with_token)
            assert response.status_code == 200, (url, response.text)
        model.add(text(ANSWER))
        started = http.post("/start-workflow", json={"task": QUESTION, "session_id": "auth"}, headers=with_token)
        assert started.status_code == 202, started.text
        wf = started.json()["workflow_instance_id"]
        with SseStream(http, f"/workflows/{wf}/events", headers=with_token) as stream:
            steps, status = _steps_and_status(stream.read_to_end())
        assert status["runtime_status"] == "COMPLETED" and [s["kind"] for s in steps] == ["start", "llm", "finish"]


# -- gunicorn (the Procfile's web line) -------------------------------------------------


@pytest.fixture
def gunicorn_web(platform: Platform, redis_server: Any, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The Procfile's ``web`` line, as written, on a Redis database no worker serves;
    2 gevent processes of 11 connections: 22 at once, barely more than the test's 20 streams."""
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/11")
    client.flushdb()
    client.close()
    env = apply_env(dict(platform.env), {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/11"})
    port = free_port()
    web = shell_procfile_line(
        "web",
        process_env(
            {k: v for k, v in env.items() if v is not None}
            | {"PORT": str(port), "WEB_CONCURRENCY": "2", "WEB_CONNECTIONS": "11"}
        ),
        tmp_path / "web.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", timeout=60)
        yield base, env
    finally:
        web.stop()
        log = web.log()
        assert "Error handling request" not in log, log[-4000:]  # gunicorn's line for a crashed request


def test_gunicorn_serves_20_open_streams_while_start_workflow_answers_and_ready_names_workers(
    gunicorn_web: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = gunicorn_web
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=10, limits=limits) as http:
        # no worker serves this Redis database: /ready names what is missing
        ready = http.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["missing"] == ["workers"], ready.text
        assert ready.json()["checks"]["redis"] == ready.json()["checks"]["broker"] == "ok"

        held = http.post("/start-workflow", json={"task": QUESTION, "session_id": "held"})
        assert held.status_code == 202, held.text
        wf = held.json()["workflow_instance_id"]  # PENDING: no worker runs its start step
        streams = [SseStream(http, f"/workflows/{wf}/events") for _ in range(20)]
        try:
            assert all(s.response.status_code == 200 for s in streams)
            started = []
            for n in range(6):  # several requests, so both gunicorn workers take some
                response = http.post("/start-workflow", json={"task": QUESTION, "session_id": f"busy-{n}"})
                assert response.status_code == 202, response.text
                started.append(response.json()["workflow_instance_id"])
                assert http.get("/health").status_code == 200
            for other in [wf, *started]:
                assert http.post(f"/workflows/{other}/terminate").status_code == 202
            # every open stream ends with the final status
            for stream in streams:
                steps, status = _steps_and_status(stream.read_to_end())
                assert steps == [] and status["runtime_status"] == "TERMINATED"
        finally:
            for stream in streams:
                stream.close()

        # with a worker on that database, /ready is 200
        stack = Stack(apply_env(process_env({}), {k: v for k, v in env.items()}), tmp_path / "workers", 1)
        try:
            stack.start(1)
            ready = http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"redis": "ok", "broker": "ok", "workers": 1}
        finally:
            stack.stop()
