"""Dapr Agents code runs by changing its imports only (issue 11).

``examples/dapr_tutorial.py`` is the Dapr Agents tutorial's file with the ``dapr_agents``
imports changed: the agent is built inside ``async def main()`` and served with
``await travel_planner.start()``. It runs here as a real subprocess against a scripted
model; the tutorial's request is POSTed, the status read with the tutorial's own curl
path on the sidecar port (component ``durableTaskHub``), and Ctrl-C / SIGTERM end it
with exit status 0 and no process left. ``examples/durable_agent_runner.py`` is the
newer form: a ``DurableAgent`` built inside a function, served by ``AgentRunner.serve``.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import httpx
import pytest
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, text, tool_call

from .dev_helpers import (
    assert_all_gone,
    base_url,
    dev_env,
    family,
    kill_all,
    sidecar_url,
    start_program,
    wait_final,
    wait_web,
    write_components,
)
from .workers import REPO

TASK = "I want to find flights to Paris"
ANSWER = 'SkyHighAir flies to Paris for $450 and GlobalWings for $375.50 ("direct").'


@pytest.fixture
def components_redis(tmp_path: Path):
    """A Redis of the test's own, named by the tutorial's components (as a Dapr user's
    local Redis would be): dev mode must use it rather than its embedded one."""
    server = EmbeddedRedis(tmp_path / "components-redis", appendonly=False).start()
    try:
        yield server, write_components(tmp_path / "components", f"127.0.0.1:{server.port}")
    finally:
        server.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_tutorial_file_runs_with_its_imports_changed(tmp_path: Path, components_redis, stop_signal) -> None:
    """Issue 11, shown 1: the tutorial's Paris turn reaches COMPLETED in dev mode, its curl
    on the sidecar port (durableTaskHub) reads it, and Ctrl-C / SIGTERM end the program
    with exit status 0 and no process left."""
    server, components = components_redis
    model = ScriptedModel([tool_call("search_flights", {"destination": "Paris"}), text(ANSWER)]).start()
    env = dev_env(tmp_path, components, OPENAI_BASE_URL=model.base_url)
    proc = start_program([sys.executable, str(REPO / "examples" / "dapr_tutorial.py")], env, tmp_path / "out.log")
    seen: set[int] = set()
    try:
        wait_web(proc, env)
        seen = family(proc)
        first_line = proc.log().splitlines()[0]
        assert f"127.0.0.1:{server.port}" in first_line and "components in" in first_line, first_line
        with httpx.Client(base_url=base_url(env), timeout=10) as http:
            reply = http.post("/start-workflow", json={"task": TASK})  # the tutorial's request
            assert reply.status_code == 202, reply.text
            body = reply.json()
            assert body["message"] == "Workflow initiated successfully."
            wf = body["workflow_instance_id"]
            assert body["status_url"].endswith(f"/workflows/{wf}")
            assert http.get("/status").json() == {"ok": True}
        with httpx.Client(base_url=sidecar_url(env), timeout=10) as sidecar:
            status = wait_final(sidecar, f"/v1.0/workflows/durableTaskHub/{wf}", 60, key="runtimeStatus")
            assert sidecar.get(f"/workflows/{wf}").status_code == 404  # the sidecar port is the Dapr API only
        assert status["runtimeStatus"] == "COMPLETED", status
        assert status["instanceID"] == wf and status["workflowName"] == "TravelBuddy"
        assert json.loads(status["properties"]["dapr.workflow.input"]) == {"task": TASK}
        assert json.loads(status["properties"]["dapr.workflow.output"]) == ANSWER
        assert not any(key.startswith("dapr.workflow.failure") for key in status["properties"])
        # ConversationDaprStateMemory(store_name="conversationstore", session_id="my-unique-id"):
        # the turn is in that component's Redis, under the tutorial's session.
        with redis.Redis(port=server.port, decode_responses=True) as client:
            history = [json.loads(m) for m in client.lrange("conversation:{TravelBuddy:my-unique-id}", 0, -1)]
        assert [m["role"] for m in history][0] == "user" and history[-1]["content"] == ANSWER, history

        proc.send_signal(stop_signal)
        assert proc.wait(60) == 0, proc.log()[-3000:]
        assert_all_gone(seen)
        output = proc.log()
        assert "Travel Planner Agent is running" in output  # `await start()` returned after the stop
        assert "Error starting service" not in output and "Traceback" not in output, output[-3000:]
    finally:
        proc.kill()
        kill_all(seen)
        model.stop()


def test_a_durable_agent_built_in_a_function_is_served_by_agent_runner(tmp_path: Path) -> None:
    """Issue 11, shown 2: ``DurableAgent`` + ``AgentRunner.serve`` (the agent built inside
    a function) answers ``POST /agent/run`` and ``GET /agent/instances/<id>`` in Dapr
    Agents' shapes; terminate and purge answer too; SIGTERM leaves no process."""
    model = ScriptedModel([tool_call("search_flights", {"destination": "Paris"}), text(ANSWER)]).start()
    env = dev_env(tmp_path, OPENAI_BASE_URL=model.base_url)
    argv = [sys.executable, str(REPO / "examples" / "durable_agent_runner.py")]
    proc = start_program(argv, env, tmp_path / "out.log")
    seen: set[int] = set()
    try:
        wait_web(proc, env)
        seen = family(proc)
        assert "(embedded, data in" in proc.log()  # the components name a closed port
        with httpx.Client(base_url=base_url(env), timeout=10) as http:
            started = http.post("/agent/run", json={"task": TASK})
            assert started.status_code == 200, started.text
            wf = started.json()["instance_id"]
            assert started.json() == {"instance_id": wf, "status_url": f"/agent/instances/{wf}"}
            state = wait_final(http, f"/agent/instances/{wf}", 60)
            assert set(state) >= {
                "instance_id", "name", "runtime_status", "created_at", "last_updated_at",
                "serialized_input", "serialized_output", "failure_details",
            }  # fmt: skip
            assert state["runtime_status"] == "COMPLETED" and state["name"] == "TravelBuddy"
            assert json.loads(state["serialized_input"]) == {"task": TASK}
            assert json.loads(state["serialized_output"]) == ANSWER and state["failure_details"] is None
            assert http.post(f"/agent/instances/{wf}/purge").json() == {"instance_id": wf, "status": "purged"}
            assert http.get(f"/agent/instances/{wf}").status_code == 404
            assert http.get("/agent/instances/nope").status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.log()[-3000:]
        assert_all_gone(seen)
    finally:
        proc.kill()
        kill_all(seen)
        model.stop()


RUN_PROGRAM = """
import asyncio
from agent_platform import AgentRunner, DurableAgent, AgentExecutionConfig, tool

def build():
    @tool
    def search_flights(destination: str) -> list:
        \"\"\"Search for flights to the specified destination.\"\"\"
        return [{"airline": "SkyHighAir", "price": 450.0}]

    return DurableAgent(name="TravelBuddy", role="Travel Planner", tools=[search_flights],
                        execution=AgentExecutionConfig(max_iterations=3))

async def main():
    runner = AgentRunner()
    try:
        answer = await runner.run(build(), {"task": "I want to find flights to Paris"})
        print("ANSWER:", answer, flush=True)
    finally:
        runner.shutdown()

asyncio.run(main())
"""


def test_agent_runner_run_is_awaitable_and_returns_the_output(tmp_path: Path) -> None:
    """``await AgentRunner().run(agent, payload)`` (wait=True) returns the turn's answer,
    with the agent built inside a function; ``shutdown()`` stops every process."""
    model = ScriptedModel([tool_call("search_flights", {"destination": "Paris"}), text(ANSWER)]).start()
    env = dev_env(tmp_path, OPENAI_BASE_URL=model.base_url)
    script = tmp_path / "run_once.py"
    script.write_text(RUN_PROGRAM)
    proc = start_program([sys.executable, str(script)], env, tmp_path / "out.log")
    try:
        assert proc.wait(120) == 0, proc.log()[-3000:]
        assert f"ANSWER: {ANSWER}" in proc.log()
        assert model.calls == 2
    finally:
        proc.kill()
        model.stop()
