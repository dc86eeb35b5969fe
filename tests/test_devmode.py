"""Dev mode (DESIGN section 8): one command runs Redis, model, worker and web; stopping it
mid-turn and starting it again resumes the turn; nothing is left running after it stops."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import httpx
import pytest

from agent_platform.testing import ScriptedModel, text, tool_call

from .dev_helpers import (
    assert_all_gone,
    base_url,
    dev_env,
    family,
    kill_all,
    sigterm_and_wait,
    start_dev,
    start_program,
    wait_final,
    wait_web,
)
from .ops_helpers import PasswordRedis
from .workers import wait_until


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
    env = dev_env(
        tmp_path,
        OPENAI_BASE_URL=model.base_url,
        DEV_TEST_MARKER=str(marker),
        DEV_TEST_TOOL_SECONDS="30",
        AGENT_PLATFORM_LEASE_TTL="2",
        AGENT_PLATFORM_SWEEP_INTERVAL="0.5",
    )
    log = tmp_path / "dev.log"
    proc = start_dev("tests.agents_dev:sleepy", env, log)
    seen: set[int] = set()
    try:
        wait_web(proc, env)
        assert "(embedded, data in" in log.read_text()  # the components' Redis did not answer
        with httpx.Client(base_url=base_url(env), timeout=10) as http:
            first = http.post("/start-workflow", json={"task": "Tell me about Lisbon", "session_id": "trip"}).json()
            assert wait_final(http, f"/workflows/{first['workflow_instance_id']}", 30)["runtime_status"] == "COMPLETED"
            wf = http.post("/start-workflow", json={"task": "Look up Porto", "session_id": "trip"}).json()[
                "workflow_instance_id"
            ]
            wait_until(marker.exists, 30, message="the slow tool to start")
        seen = family(proc)
        assert len(seen) >= 4, seen  # dev, redis, worker (+pool), web (+workers)
        assert sigterm_and_wait(proc) == 0, log.read_text()[-3000:]
        assert_all_gone(seen)
        steps_before = [s["kind"] for s in _read_steps_offline(tmp_path, wf)]
        assert "tool" not in steps_before  # stopped mid-tool: the tool never checkpointed

        proc = start_dev("tests.agents_dev:sleepy", {**env, "DEV_TEST_TOOL_SECONDS": "0.2"}, tmp_path / "dev2.log")
        wait_web(proc, env)
        with httpx.Client(base_url=base_url(env), timeout=10) as http:
            status = wait_final(http, f"/workflows/{wf}", 60)
            assert status["runtime_status"] == "COMPLETED", status
            assert status["output"] == "Porto found."
            steps = http.get(f"/workflows/{wf}/steps").json()["steps"]
            kinds = [s["kind"] for s in steps if s["status"] != "lost"]
            assert kinds == ["start", "llm", "tool", "llm", "finish"], kinds
            # the run stopped mid-tool is one `lost` record (DESIGN rule 11), then the tool ran again
            assert [s["kind"] for s in steps if s["status"] == "lost"] == ["tool"], steps
        # The resumed turn's last model call saw the first turn of the session (memory intact).
        last = model.requests[-1]["messages"]
        assert any(m.get("content") == "Lisbon is lovely." for m in last), last
        assert model.calls == 3  # the first model call of turn 2 was not made again
        seen = family(proc)
        assert sigterm_and_wait(proc) == 0
        assert_all_gone(seen)
    finally:
        proc.kill()
        kill_all(seen)
        model.stop()


def test_dev_mode_names_the_redis_of_redis_url_with_its_password_masked(tmp_path: Path) -> None:
    """With ``REDIS_URL`` set (``.env``, a deployment's Redis), dev mode's first line names
    that Redis, password masked (``redis://:***@host``), not the text ``$REDIS_URL``; a turn
    then runs on it, and the password appears nowhere in what dev mode prints (C17's rule:
    secrets never logged)."""
    password = "s3cret-dev-pw"
    server = PasswordRedis(tmp_path / "redis", password)
    model = ScriptedModel([text("Hello from Lisbon.")]).start()
    env = dev_env(tmp_path, REDIS_URL=server.url, OPENAI_BASE_URL=model.base_url)
    log = tmp_path / "dev.log"
    proc = start_dev("tests.agents_dev:sleepy", env, log)
    seen: set[int] = set()
    try:
        wait_web(proc, env)
        seen = family(proc)
        first = log.read_text().splitlines()[0]
        assert f"@127.0.0.1:{server.port}/0  ($REDIS_URL)" in first and password not in first, first
        with httpx.Client(base_url=base_url(env), timeout=10) as http:
            wf = http.post("/start-workflow", json={"task": "Lisbon?"}).json()["workflow_instance_id"]
            assert wait_final(http, f"/workflows/{wf}", 30)["runtime_status"] == "COMPLETED"
        assert sigterm_and_wait(proc) == 0
        assert_all_gone(seen)
        assert password not in log.read_text()
    finally:
        proc.kill()
        kill_all(seen)
        model.stop()
        server.stop()


def test_dev_mode_on_a_port_in_use_says_so_before_starting_anything(tmp_path: Path) -> None:
    """The web app's port held by another server (a dev mode left running answers /health
    there): dev mode exits 1 at once with one line naming the port and how to choose
    another, never prints ``ready`` for a server that is not its own, and leaves nothing
    running (it used to start the model and worker, report ready on the other server's
    /health, then stop when its gunicorn could not bind)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = dev_env(tmp_path, AGENT_PLATFORM_APP_PORT=str(port), OPENAI_BASE_URL="http://127.0.0.1:9/v1")
        proc = start_dev("tests.agents_dev:sleepy", env, tmp_path / "dev.log")
        try:
            assert proc.wait(30) == 1, proc.log()[-3000:]
            output = proc.log()
            assert f"port {port} on 127.0.0.1 is in use" in output and "AGENT_PLATFORM_APP_PORT" in output, output
            assert "ready:" not in output and "worker     " not in output, output
        finally:
            proc.kill()


def _read_steps_offline(tmp_path: Path, wf: str) -> list[dict]:
    """Read a workflow's step log from the dev-mode Redis data folder, with dev mode stopped."""
    from agent_platform.connections import redis_client
    from agent_platform.embedded_redis import EmbeddedRedis
    from agent_platform.store.workflows import WorkflowStore

    with EmbeddedRedis(tmp_path / "data" / "redis") as server:
        client = redis_client(server.url)
        try:
            return WorkflowStore(client, "", "workflow_state").steps(wf)
        finally:
            client.close()


HTML_ENTITY = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|quot|amp|lt|gt|apos);")


@pytest.mark.local_model
def test_the_demo_on_the_local_model_prints_plain_text(tmp_path: Path) -> None:
    """``python -m agent_platform.demo`` on the real embedded model: a search_flights tool
    step, COMPLETED, exit 0, no process left, and no HTML entity anywhere in what it
    prints (llama-cpp-python's chatml-function-calling template HTML-escaped the prompt,
    and the model echoed ``&#34;``; the embedded server now renders it as plain text)."""
    pytest.importorskip("llama_cpp", reason="needs the [local] extra (llama-cpp-python)")
    env = dev_env(tmp_path)  # components name a closed port: the demo embeds its Redis
    proc = start_program([sys.executable, "-m", "agent_platform.demo"], env, tmp_path / "demo.log")
    seen: set[int] = set()
    try:
        wait_until(lambda: "POST /start-workflow" in proc.log() or not proc.alive(), 240, message="the demo's turn")
        seen = family(proc)
        assert proc.wait(300) == 0, proc.log()[-4000:]
        output = proc.log()
        assert "status: COMPLETED" in output, output[-4000:]
        assert re.search(r"\] tool +ok .*search_flights\(.*SkyHighAir.*GlobalWings", output), output[-4000:]
        assert "answer: " in output and not HTML_ENTITY.search(output), output[-4000:]
        # the answer is shown as the model writes it (issue 14), before the step that records it
        lines = output.splitlines()
        answer_step = max(i for i, line in enumerate(lines) if re.match(r"\[\d+\] llm ", line))
        assert any(line.startswith("  > ") for line in lines[:answer_step]), output[-4000:]
        assert_all_gone(seen)
    finally:
        proc.kill()
        kill_all(seen)


def test_the_embedded_servers_chat_template_renders_plain_text() -> None:
    """The patch the embedded model server runs with: llama-cpp-python's handler asks
    Jinja for ``select_autoescape(["html", "xml"])`` (on for a template from a string);
    the environment it gets renders quotes and brackets as they are."""
    from jinja2 import select_autoescape
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from agent_platform.local_model import plain_text_environment

    template = "{{ message.content }} {{ args | tojson }}"
    values = {"message": {"content": '[{"airline": "SkyHighAir"}] <ok> & more'}, "args": {"city": "Paris"}}
    escaping = ImmutableSandboxedEnvironment(autoescape=select_autoescape(["html", "xml"]))
    assert "&#34;" in escaping.from_string(template).render(**values)  # what the handler did
    plain = plain_text_environment(ImmutableSandboxedEnvironment)(autoescape=select_autoescape(["html", "xml"]))
    assert plain.from_string(template).render(**values) == ('[{"airline": "SkyHighAir"}] <ok> & more {"city": "Paris"}')


def test_dev_mode_sigkilled_takes_its_worker_and_web_app_with_it(tmp_path: Path) -> None:
    """A dev mode that is SIGKILLed (a notebook kernel restart, ``kill -9``) leaves no worker
    or web app behind consuming its queue and holding its ports: the forked children ask
    the kernel for SIGTERM when their parent dies (found by a new user's walkthrough)."""
    import psutil

    model = ScriptedModel([text("unused")]).start()
    env = dev_env(tmp_path, OPENAI_BASE_URL=model.base_url)
    proc = start_dev("tests.agents_dev:sleepy", env, tmp_path / "dev.log")
    seen: set[int] = set()
    try:
        wait_web(proc, env)
        seen = family(proc)
        assert proc.pid is not None
        forked = {
            c.pid: {c.pid, *(g.pid for g in c.children(recursive=True))}
            for c in psutil.Process(proc.pid).children()
            if "redis-server" not in " ".join(c.cmdline())
        }
        assert len(forked) >= 2, forked  # the worker and the web app
        proc.kill()
        assert_all_gone({pid for group in forked.values() for pid in group})
    finally:
        proc.kill()
        kill_all(seen)
        model.stop()
