"""The Procfile as ops run it: ``honcho start`` of web, worker and flower with a ``.env``.

TravelBuddy from ``examples/``, the scripted model, a private redis-server that needs a
password. One turn over HTTP must show in Flower's ``/api/tasks`` (case C09: every step,
named by its kind, with the workflow id in its kwargs), every log line must be free of
secrets, and SIGTERM to honcho must leave no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_platform.processes import free_port
from agent_platform.testing import ScriptedModel, error, text, tool_call
from agent_platform.testing.replies import error_body

from .ops_helpers import PasswordRedis, Proc, descendants, dotenv, process_env, process_groups, wait_http
from .workers import REPO, wait_until

REDIS_PASSWORD = "redis-pw-7f3a9c2e"
OPENAI_KEY = "sk-test-4b1d0c8e9f7a6b5c"
API_TOKEN = "api-token-2c9e7a1f5d"
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-pw-9a8b7c"
ANSWER = "SkyHighAir flies to Paris for $450.00 and GlobalWings for $375.50."
KINDS = ["start", "llm", "tool", "llm", "finish"]
#: The Celery tasks of that turn: start rides with the first model call, finish with the last.
TASKS = ["llm", "tool", "llm"]


def _trip(body: dict[str, Any]) -> Any:
    if body["messages"][-1]["role"] == "tool":
        return text(ANSWER)
    return tool_call("search_flights", {"destination": "Paris"})


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[PasswordRedis]:
    server = PasswordRedis(tmp_path / "redis", REDIS_PASSWORD)
    try:
        yield server
    finally:
        server.stop()


class Honcho:
    """``honcho start -e <.env> web worker flower`` in the repository, as an operator runs it."""

    def __init__(self, tmp_path: Path, values: dict[str, str]) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text(dotenv(values))
        argv = [
            sys.executable,
            "-m",
            "honcho",
            "start",
            "-f",
            "Procfile",
            "-e",
            str(env_file),
            "web",
            "worker",
            "flower",
        ]
        self.proc = Proc(argv, process_env({}), tmp_path / "honcho.log", cwd=REPO)

    def pids(self) -> dict[str, int]:
        """Process type -> pid of its shell, from honcho's ``<name>.1 started (pid=N)`` lines."""
        return {m[0]: int(m[1]) for m in re.findall(r"(\w+)\.1 started \(pid=(\d+)\)", self.proc.log())}


def test_honcho_runs_the_procfile_flower_shows_every_step_and_nothing_leaks(
    tmp_path: Path, model: ScriptedModel, password_redis: PasswordRedis
) -> None:
    model.set_responder(_trip)
    port, flower_port = free_port(), free_port()
    web, flower = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{flower_port}"
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    flower_auth = (FLOWER_USER, FLOWER_PASSWORD)
    honcho = Honcho(
        tmp_path,
        {
            "AGENT_APP": "examples.travel_planner:travel_planner",
            "REDIS_URL": password_redis.url,
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": OPENAI_KEY,
            "PORT": str(port),
            "FLOWER_PORT": str(flower_port),
            "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
            "AGENT_PLATFORM_API_TOKEN": API_TOKEN,
            "WEB_CONCURRENCY": "1",
            "WORKER_CONCURRENCY": "2",
        },
    )
    groups: dict[str, int] = {"honcho": honcho.proc.pid}
    tree: set[int] = set()
    try:
        wait_http(f"{web}/health", timeout=90)
        wait_until(lambda: httpx.get(f"{web}/ready", headers=bearer, timeout=10).status_code == 200, 90, 0.3, "ready")
        # Flower follows the worker's events: wait until it has seen it (worker-online).
        worker = wait_until(lambda: _flower_workers(flower, flower_auth), 90, 0.3, "Flower to see the worker")
        assert re.fullmatch(r"worker\.1@.+", worker[0]), worker  # the Procfile names it per process
        groups.update({name: os.getpgid(pid) for name, pid in honcho.pids().items()})
        tree = descendants(honcho.proc.pid)
        assert set(groups) == {"honcho", "web", "worker", "flower"}, honcho.proc.log()

        # one turn over HTTP, with the token
        assert httpx.post(f"{web}/start-workflow", json={"task": "Flights to Paris"}).status_code == 401
        started = httpx.post(f"{web}/start-workflow", json={"task": "Flights to Paris"}, headers=bearer, timeout=10)
        assert started.status_code == 202, started.text
        wf = started.json()["workflow_instance_id"]
        status = wait_until(lambda: _final(web, wf, bearer), 60, 0.1, f"workflow {wf} to finish")
        assert status["runtime_status"] == "COMPLETED" and status["output"] == ANSWER, status
        steps = httpx.get(f"{web}/workflows/{wf}/steps", headers=bearer, timeout=10).json()["steps"]
        assert [s["kind"] for s in steps] == KINDS
        assert httpx.get(f"{web}/health", timeout=10).status_code == 200  # open without the token

        # C09: Flower's task list shows each step, with the workflow id: a task per model
        # call and per tool call, named by its kind, whose result names the steps it ran
        assert httpx.get(f"{flower}/api/tasks", timeout=10).status_code == 401
        tasks = wait_until(lambda: _flower_steps(flower, flower_auth, wf), 30, 0.3, "Flower to list 3 tasks")
        assert [t["name"] for t in tasks] == [f"agent_platform.step.{kind}" for kind in TASKS]
        ran = [t["result"].strip("'\"").partition(": ")[2].split() for t in tasks]
        assert ran == [["start", "llm"], ["tool"], ["llm", "finish"]], [t["result"] for t in tasks]
        first_seq = [0, 2, 3]  # each task's step_seq: the first step it ran
        for task, seq in zip(tasks, first_seq, strict=True):
            assert task["state"] == "SUCCESS" and task["worker"] == worker[0], task
            assert f"'workflow_id': '{wf}'" in task["kwargs"] and f"'step_seq': {seq}" in task["kwargs"]

        # a step that fails its turn shows as a failed task, with the error
        model.add(error(400, error_body(400, "the scripted model refuses this request")))
        started = httpx.post(
            f"{web}/start-workflow", json={"task": "Fail", "session_id": "b"}, headers=bearer, timeout=10
        )
        failed_wf = started.json()["workflow_instance_id"]
        status = wait_until(lambda: _final(web, failed_wf, bearer), 60, 0.1, f"workflow {failed_wf} to finish")
        assert status["runtime_status"] == "FAILED", status
        failed = wait_until(
            lambda: _flower_failed(flower, flower_auth, failed_wf), 30, 0.3, "Flower to list the failure"
        )
        assert failed["name"] == "agent_platform.step.llm" and "'step_seq': 0" in failed["kwargs"], failed
        assert "FAILED at llm step 1" in failed["exception"], failed  # the step that failed
        assert "StepFailed" in failed["exception"] and "refuses this request" in failed["exception"], failed
    finally:
        code = honcho.proc.terminate(timeout=60)  # SIGTERM to honcho only, as an operator's Ctrl-C
        try:
            wait_until(lambda: not _left(groups, tree), 15, 0.1, "every process to exit")
        except AssertionError:
            pass
        left = _left(groups, tree)
        log = honcho.proc.log()
        honcho.proc.stop()
        for pgid in set(groups.values()):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    # stopped cleanly: every process got SIGTERM and exited, honcho too, nothing is left
    assert code is not None, log[-3000:]
    for name in ("web", "worker", "flower"):
        assert re.search(rf"{name}\.1 stopped \(rc=", log), log[-3000:]
    assert "Warm shutdown" in log
    assert left == {}, f"left behind: {left}\n{log[-3000:]}"
    # one log line per step with workflow id, agent, kind, attempt and duration
    for step in steps:
        pattern = rf"workflow={wf} agent=TravelBuddy step={step['kind']} seq={step['seq']} step_seq=\d+ attempt=1 status=ok duration_ms="
        assert re.search(pattern, log), pattern
    # secrets never logged; Celery's banner and Flower mask the Redis password
    for secret in (REDIS_PASSWORD, OPENAI_KEY, API_TOKEN, FLOWER_PASSWORD):
        assert secret not in log
    assert f"redis://:**@127.0.0.1:{password_redis.port}/0" in log


def _left(groups: dict[str, int], tree: set[int]) -> dict[int, int]:
    live = process_groups()
    return {pid: pgid for pid, pgid in live.items() if pgid in groups.values() or pid in tree}


def _flower_workers(flower: str, auth: tuple[str, str]) -> list[str] | None:
    try:
        response = httpx.get(f"{flower}/workers", params={"json": 1}, auth=auth, timeout=5)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    names = [w["hostname"] for w in response.json()["data"] if w.get("status")]
    return names or None


def _final(web: str, wf: str, headers: dict[str, str]) -> dict[str, Any] | None:
    status = httpx.get(f"{web}/workflows/{wf}", headers=headers, timeout=10).json()
    return status if status["runtime_status"] in ("COMPLETED", "FAILED", "TERMINATED") else None


def _flower_failed(flower: str, auth: tuple[str, str], wf: str) -> dict[str, Any] | None:
    tasks = httpx.get(f"{flower}/api/tasks", params={"state": "FAILURE"}, auth=auth, timeout=10).json()
    return next((t for t in tasks.values() if wf in (t.get("kwargs") or "")), None)


def _flower_steps(flower: str, auth: tuple[str, str], wf: str) -> list[dict[str, Any]] | None:
    tasks = httpx.get(f"{flower}/api/tasks", auth=auth, timeout=10).json()
    ours = [t for t in tasks.values() if wf in (t.get("kwargs") or "") and t.get("state") == "SUCCESS"]
    ours.sort(key=lambda t: t["received"] or 0)
    return ours if len(ours) >= len(TASKS) else None
