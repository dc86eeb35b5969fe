"""The ``agent-platform`` command: run (live steps, answer, exit code), status, tail,
components check, and the worker / web / flower wrappers, as real subprocesses against
a real worker, Redis and the scripted model."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from agent_platform.cli import main
from agent_platform.processes import free_port
from agent_platform.testing import ScriptedModel, error, text, tool_call
from agent_platform.testing.replies import error_body

from .helpers import Api, Platform
from .ops_helpers import Proc, wait_http
from .workers import REPO

_SCRIPT = Path(sys.executable).with_name("agent-platform")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agent_platform.cli"]
APP = "tests.agents:travel_buddy"
QUESTION = "I want to find flights to Paris"
ANSWER = "SkyHighAir flies to Paris for $450.00 and GlobalWings for $375.50."


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def _held(gate: threading.Event, reply: Any) -> Any:
    def respond(body: dict[str, Any]) -> Any:
        gate.wait(30)
        return reply

    return respond


def test_run_prints_each_step_live_then_the_answer_and_exits_0(
    api: Api, model: ScriptedModel, gate: threading.Event
) -> None:
    model.add(_held(gate, tool_call("search_flights", {"destination": "Paris"})), text(ANSWER))
    with subprocess.Popen(
        [*CLI, "run", APP, "--task", QUESTION, "--session", "cli"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stdout], daemon=True)
        reader.start()
        try:
            first = lines.get(timeout=60)
            # printed while the model call of the next step is still held: live, not at the end
            assert re.match(r"\[0\] start +ok +attempt=1 \d+ms session=cli history=0$", first), first
            assert proc.poll() is None
        finally:
            gate.set()
        code = proc.wait(60)
        reader.join(10)
        err = proc.stderr.read()
    assert code == 0, err
    out = [first, *iter_queue(lines)]

    assert [re.match(r"\[(\d)\] (\w+)", line).groups() for line in out[:5]] == [  # type: ignore[union-attr]
        ("0", "start"), ("1", "llm"), ("2", "tool"), ("3", "llm"), ("4", "finish"),
    ]  # fmt: skip
    assert 'search_flights({"destination": "Paris"})' in out[1]
    assert "SkyHighAir" in out[2] and "GlobalWings" in out[2]
    assert out[5:] == ["status: COMPLETED", f"answer: {ANSWER}"]
    wf = re.search(r"workflow (\S+) started \(agent TravelBuddy\)", err).group(1)  # type: ignore[union-attr]
    assert re.search(rf"^run page: http://localhost:\d+/ui/workflows/{wf}$", err, re.M), err  # issue 12

    status = _cli("status", wf)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == api.status(wf)
    tail = _cli("tail", wf)
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == out
    tail_after = _cli("tail", wf, "--after", "2")
    assert [line.split()[0] for line in tail_after.stdout.splitlines()[:2]] == ["[3]", "[4]"]


def iter_queue(lines: queue.Queue[str]) -> list[str]:
    found = []
    while not lines.empty():
        found.append(lines.get_nowait())
    return found


def test_run_exits_non_zero_when_the_turn_fails(api: Api, model: ScriptedModel) -> None:
    model.add(error(400, error_body(400, "the scripted model refuses this request")))

    result = _cli("run", APP, "--task", QUESTION, "--session", "cli-failed")

    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[0] start") and re.match(r"\[1\] llm +error", lines[1]), lines
    assert "status: FAILED" in lines
    assert any(line.startswith("failure: ") and "refuses this request" in line for line in lines), lines
    assert model.calls == 1  # a 400 is not retried


def test_status_of_an_unknown_workflow_fails_with_a_message(api: Api) -> None:
    result = _cli("status", "no-such-workflow")

    assert result.returncode != 0
    assert "no workflow 'no-such-workflow'" in result.stderr and "Traceback" not in result.stderr


def _check(folder: Path, **env: str | None) -> Result:
    """``agent-platform components check FOLDER`` in this process (click's CliRunner)."""
    return CliRunner().invoke(main, ["components", "check", str(folder)], env={"REDIS_URL": None, **env})


def test_components_check_names_the_file_and_the_field(tmp_path: Path) -> None:
    ok = _check(REPO / "components")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[-1].startswith("4 component(s) valid")

    broken = tmp_path / "broken"
    shutil.copytree(REPO / "components", broken)
    state = broken / "workflowstatestore.yaml"
    state.write_text(re.sub(r"  - name: redisHost\n    value: .*\n", "", state.read_text()))
    for redis_url in (None, "redis://127.0.0.1:6399/0"):  # REDIS_URL overrides the host, yet names the gap
        missing = _check(broken, REDIS_URL=redis_url)
        assert missing.exit_code == 1
        assert str(state) in missing.stderr and "'redisHost'" in missing.stderr, missing.stderr

    state.write_text(state.read_text().replace("  name: workflowstatestore\n", ""))
    nameless = _check(broken)
    assert nameless.exit_code == 1 and str(state) in nameless.stderr and "metadata.name" in nameless.stderr

    (broken / "bad.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: [oops\n")
    malformed = _check(broken)
    assert malformed.exit_code == 1 and "bad.yaml" in malformed.stderr and "line" in malformed.stderr


def test_worker_web_and_flower_commands_start_the_standard_servers(platform: Platform, tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        **{"FLOWER_PORT": str(flower_port), "FLOWER_BASIC_AUTH": "ops:cli-pw"},
        **{"WORKER_CONCURRENCY": "1", "WEB_CONCURRENCY": "1", "WEB_CONNECTIONS": "50"},
    }
    procs = {
        "worker": Proc(
            [*CLI, "worker", "-n", "cli@%h", "--without-mingle", "--without-gossip"], env, tmp_path / "w.log"
        ),
        "web": Proc([*CLI, "web", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "web.log"),
        "flower": Proc([*CLI, "flower"], env, tmp_path / "flower.log"),
    }
    try:
        procs["worker"].wait_for(r"cli@\S+ ready\.")
        assert "-c 1" in procs["worker"].log() or "--concurrency 1" in procs["worker"].log()
        assert wait_http(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        assert procs["web"].wait_for(r"Using worker: (\w+)").group(1) == "gevent"  # web/gunicorn.conf.py
        assert "gunicorn.conf.py web:create_app() --bind" in procs["web"].log()
        wait_http(f"http://127.0.0.1:{flower_port}/api/tasks", auth=("ops", "cli-pw"))
        assert httpx.get(f"http://127.0.0.1:{flower_port}/api/tasks", timeout=10).status_code == 401
    finally:
        for proc in procs.values():
            proc.stop()
