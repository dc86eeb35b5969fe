"""Dev mode: the whole platform in one command (DESIGN section 8).

Starts, as needed: a private redis-server (no ``REDIS_URL``), the embedded local model
(no ``OPENAI_API_KEY`` and no ``OPENAI_BASE_URL``), one Celery worker and the web app
(gunicorn), prints where each listens, and stops them all on Ctrl-C or SIGTERM.

A launcher: it starts ``celery -A tasks`` and ``gunicorn web:create_app()`` as
subprocesses and imports neither.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .embedded_redis import EmbeddedRedis
from .errors import ConfigurationError
from .local_model import LocalModelServer
from .processes import stop_process, tail

if TYPE_CHECKING:
    from .agent import AssistantAgent  # agent.start() imports this module

log = logging.getLogger("agent_platform.dev")

#: The embedded model's profile: deterministic, short answers, one tool round, tool
#: results as user messages (its chat template drops ``tool`` messages).
LOCAL_MODEL_PROFILE = {
    "AGENT_PLATFORM_LLM_TEMPERATURE": "0",
    "AGENT_PLATFORM_LLM_MAX_TOOL_ROUNDS": "1",
    "AGENT_PLATFORM_LLM_MAX_TOKENS": "160",
    "AGENT_PLATFORM_LLM_TOOL_RESULT_ROLE": "user",
}


def agent_app_spec(agents: Iterable[AssistantAgent], cwd: Path | None = None) -> tuple[str, str | None]:
    """``(AGENT_APP, extra PYTHONPATH entry or None)`` naming where ``agents`` are defined.

    An agent defined in a script run as ``__main__`` is named by the script's path
    (``examples/travel_planner.py`` -> ``examples.travel_planner``).

    Raises:
        ConfigurationError: an agent is not a module-level attribute of any module.
    """
    cwd = (cwd or Path.cwd()).resolve()
    specs: list[str] = []
    extra_path: str | None = None
    for agent in agents:
        found = None
        for module_name, module in list(sys.modules.items()):
            for attr, value in list(vars(module).items()) if module is not None else []:
                if value is agent:
                    found = (module_name, attr, module)
                    break
            if found and module_name != "__main__":
                break
        if found is None:
            raise ConfigurationError(f"agent {agent.name} is not a module-level attribute: set AGENT_APP")
        module_name, attr, module = found
        if module_name == "__main__":
            path = Path(str(module.__file__)).resolve()
            try:
                module_name = ".".join(path.relative_to(cwd).with_suffix("").parts)
            except ValueError:
                extra_path, module_name = str(path.parent), path.stem
        specs.append(f"{module_name}:{attr}")
    return ",".join(dict.fromkeys(specs)), extra_path


class DevMode:
    """The dev-mode processes; a context manager.

    Args:
        agents: the agents to serve.
        port: the web app's port.
        host: the web app's address.
        data_dir: folder of the embedded Redis's data (AOF) and the logs (default
            ``$AGENT_PLATFORM_DATA_DIR`` or ``.agent-platform``).
        concurrency: the worker's pool size.
        agent_app: ``AGENT_APP`` to use instead of deriving it from ``agents``.

    Attributes:
        env: the environment the worker and web app run with.
        base_url: the web app's URL once started.
    """

    def __init__(
        self,
        agents: list[AssistantAgent],
        port: int = 8001,
        host: str = "127.0.0.1",
        data_dir: str | Path | None = None,
        concurrency: int = 2,
        agent_app: str | None = None,
    ) -> None:
        self.agents = agents
        self.port = port
        self.host = host
        self.data_dir = Path(data_dir or os.environ.get("AGENT_PLATFORM_DATA_DIR") or ".agent-platform")
        self.concurrency = concurrency
        self.agent_app = agent_app
        self.redis: EmbeddedRedis | None = None
        self.model: LocalModelServer | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self._logs: list[Any] = []

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the web app."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Start everything and wait until the web app answers and the worker is ready.

        Raises:
            ConfigurationError: a process did not start (its log tail is in the message).
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        app, extra_path = (self.agent_app, None) if self.agent_app else agent_app_spec(self.agents)
        env["AGENT_APP"] = app
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path.cwd()), extra_path, env.get("PYTHONPATH")) if p)
        if not env.get("REDIS_URL"):
            self.redis = EmbeddedRedis(self.data_dir / "redis").start()
            env["REDIS_URL"] = self.redis.url
            _say(f"redis      {self.redis.url}  (embedded, data in {self.data_dir / 'redis'})")
        else:
            _say("redis      $REDIS_URL")
        if not env.get("OPENAI_API_KEY") and not env.get("OPENAI_BASE_URL"):
            _say("model      starting the embedded SmolLM2-135M-Instruct (llama-cpp-python)...")
            self.model = LocalModelServer().start()
            env.update(OPENAI_BASE_URL=self.model.base_url, OPENAI_MODEL=self.model.model_name, **LOCAL_MODEL_PROFILE)
            env.setdefault("OPENAI_API_KEY", "local")
            _say(f"model      {self.model.base_url}  ({self.model.model_name})")
        else:
            _say(f"model      {env.get('OPENAI_BASE_URL') or 'OpenAI'} ({env.get('OPENAI_MODEL') or 'default model'})")
        self.env = env
        self.worker = self._spawn(
            "worker",
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--loglevel", "INFO",
             "-c", str(self.concurrency), "-n", "dev@%h", "--without-mingle", "--without-gossip"],
        )  # fmt: skip
        self.web = self._spawn(
            "web",
            [sys.executable, "-m", "gunicorn", "web:create_app()", "--bind", f"{self.host}:{self.port}",
             "--worker-class", "gthread", "--threads", "8", "--workers", "1"],
        )  # fmt: skip
        self._wait(lambda: _http_ok(f"{self.base_url}/health"), self.web, "web", 60)
        self._wait(lambda: " ready." in _read(self.data_dir / "worker.log"), self.worker, "worker", 90)
        _say(f"worker     celery -A tasks worker (queues: {', '.join(a.queue for a in self.agents)})")
        _say(f"web        {self.base_url}  (POST /start-workflow, GET /workflows/<id>, /openapi.json)")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.data_dir / f"{name}.log"
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(handle)
        return subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait(self, ready: Any, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the {name} did not start; {self.data_dir / (name + '.log')}:\n{tail(self.data_dir / (name + '.log'), 30)}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the web app, the worker, the model and Redis, in that order; idempotent."""
        stop_process(self.web, timeout=10)
        stop_process(self.worker, timeout=10)
        self.web = self.worker = None
        if self.model is not None:
            self.model.stop()
            self.model = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_dev(agents: list[AssistantAgent], port: int = 8001, host: str = "127.0.0.1") -> None:
    """Run dev mode until Ctrl-C or SIGTERM, then stop every process it started."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopped.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        with DevMode(agents, port=port, host=host) as dev:
            _say(f"ready: curl -XPOST {dev.base_url}/start-workflow -H 'Content-Type: application/json' "
                 "-d '{\"task\": \"I want to find flights to Paris\"}'   (Ctrl-C stops)")  # fmt: skip
            while not stopped.wait(0.5):
                for proc, name in ((dev.worker, "worker"), (dev.web, "web")):
                    if proc is not None and proc.poll() is not None:
                        raise ConfigurationError(f"the {name} exited; see {dev.data_dir / (name + '.log')}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _say("stopped")


def _say(text: str) -> None:
    print(f"[agent-platform] {text}", flush=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
