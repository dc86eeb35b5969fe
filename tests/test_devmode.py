"""Dev mode (DESIGN section 8): one command runs Redis, model, worker and web; stopping it
mid-turn and starting it again resumes the turn; nothing is left running after it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent_platform.processes import descendants, free_port
from agent_platform.testing import ScriptedModel, text, tool_call

from .workers import REPO, wait_until

TERMINAL = ("COMPLETED", "FAILED", "TERMINATED")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def dev_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "AGENT_PLATFORM_", "REDIS_URL", "AGENT_APP"))
    }
    env.update(PYTHONPATH=str(REPO), AGENT_PLATFORM_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def start_dev(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "agent_platform.cli", "dev", app, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        handle.close()


def wait_web(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    def up() -> bool:
        assert proc.poll() is None, f"dev mode exited:\n{log.read_text()[-4000:]}"
        if "ready: curl" not in log.read_text():
            return False
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, interval=0.2, message="dev mode to be ready")


def stop_dev(proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_final(http: httpx.Client, wf: str, timeout: float) -> dict:
    return wait_until(
        lambda: (s := http.get(f"/workflows/{wf}").json())["runtime_status"] in TERMINAL and s,
        timeout,
        interval=0.2,
        message=f"workflow {wf} to end",
    )


def test_sigterm_mid_turn_then_restart_resumes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """Stop dev mode (SIGTERM) while a tool runs, start it again: the turn resumes from
    its checkpoint and completes, memory is intact, and no process outlives dev mode."""
    marker = tmp_path / "tool-started"
    model = ScriptedModel(
        [
            text("Lisbon is lovely."),  # turn 1: a plain answer
            tool_call("slow_lookup", {"city": "Porto"}),  # turn 2: a slow tool
            text("Porto found."),
        ]
    ).start()
    port = free_port()
    env = dev_env(
        tmp_path,
        OPENAI_BASE_URL=model.base_url,
        DEV_TEST_MARKER=str(marker),
        DEV_TEST_TOOL_SECONDS="30",
        AGENT_PLATFORM_LEASE_TTL="2",
        AGENT_PLATFORM_SWEEP_INTERVAL="0.5",
    )
    log = tmp_path / "dev.log"
    base = f"http://127.0.0.1:{port}"
    proc = start_dev("tests.agents_dev:sleepy", port, env, log)
    try:
        wait_web(base, proc, log)
        with httpx.Client(base_url=base, timeout=10) as http:
            first = http.post("/start-workflow", json={"task": "Tell me about Lisbon", "session_id": "trip"}).json()
            assert wait_final(http, first["workflow_instance_id"], 30)["runtime_status"] == "COMPLETED"
            wf = http.post("/start-workflow", json={"task": "Look up Porto", "session_id": "trip"}).json()[
                "workflow_instance_id"
            ]
            wait_until(marker.exists, 30, message="the slow tool to start")
        family = {proc.pid, *descendants(proc.pid)}
        assert len(family) >= 4, family  # dev, redis, worker (+pool), web (+workers)
        stop_dev(proc)
        wait_until(lambda: not any(alive(p) for p in family), 15, message="every dev-mode process to exit")
        steps_before = [s["kind"] for s in _read_steps_offline(tmp_path, wf)]
        assert "tool" not in steps_before  # stopped mid-tool: the tool never checkpointed

        proc = start_dev("tests.agents_dev:sleepy", port, {**env, "DEV_TEST_TOOL_SECONDS": "0.2"}, log)
        wait_web(base, proc, log)
        with httpx.Client(base_url=base, timeout=10) as http:
            status = wait_final(http, wf, 60)
            assert status["runtime_status"] == "COMPLETED", status
            assert status["output"] == "Porto found."
            kinds = [s["kind"] for s in http.get(f"/workflows/{wf}/steps").json()["steps"]]
            assert kinds == ["start", "llm", "tool", "llm", "finish"], kinds
        # The resumed turn's last model call saw the first turn of the session (memory intact).
        last = model.requests[-1]["messages"]
        assert any(m.get("content") == "Lisbon is lovely." for m in last), last
        assert model.calls == 3  # the first model call of turn 2 was not made again
        family = {proc.pid, *descendants(proc.pid)}
        stop_dev(proc)
        wait_until(lambda: not any(alive(p) for p in family), 15, message="every dev-mode process to exit")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        model.stop()


def _read_steps_offline(tmp_path: Path, wf: str) -> list[dict]:
    """Read a workflow's step log from the dev-mode Redis data folder, with dev mode stopped."""
    from agent_platform.embedded_redis import EmbeddedRedis
    from agent_platform.runtime import redis_client
    from agent_platform.store.workflows import WorkflowStore

    with EmbeddedRedis(tmp_path / "data" / "redis") as server:
        client = redis_client(server.url)
        try:
            return WorkflowStore(client, "", "workflow_state").steps(wf)
        finally:
            client.close()


@pytest.mark.local_model
def test_paris_turn_on_the_local_model(tmp_path: Path) -> None:
    """The demo's turn on the real embedded model: a search_flights tool step, COMPLETED."""
    pytest.importorskip("llama_cpp", reason="needs the [local] extra (llama-cpp-python)")
    port = free_port()
    log = tmp_path / "dev.log"
    base = f"http://127.0.0.1:{port}"
    proc = start_dev("examples.travel_planner:travel_planner", port, dev_env(tmp_path), log)
    try:
        wait_web(base, proc, log, timeout=180)
        with httpx.Client(base_url=base, timeout=10) as http:
            wf = http.post("/start-workflow", json={"task": "I want to find flights to Paris"}).json()[
                "workflow_instance_id"
            ]
            status = wait_final(http, wf, 240)
            steps = http.get(f"/workflows/{wf}/steps").json()["steps"]
        assert status["runtime_status"] == "COMPLETED", status
        tools = [s for s in steps if s["kind"] == "tool"]
        assert tools and tools[0]["data"]["name"] == "search_flights", steps
        assert [f["airline"] for f in tools[0]["data"]["result"]] == ["SkyHighAir", "GlobalWings"]
        assert status["output"], status
    finally:
        family = {proc.pid, *descendants(proc.pid)}
        stop_dev(proc)
        wait_until(lambda: not any(alive(p) for p in family), 15, message="every dev-mode process to exit")
