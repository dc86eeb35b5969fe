"""Dev mode: the whole platform from the process that holds the agents (DESIGN section 8).

Starts, as needed: the Redis the components name when it answers, else a private
redis-server; the embedded local model (no ``OPENAI_API_KEY`` and no ``OPENAI_BASE_URL``);
one Celery worker; the web app (gunicorn), also on the Dapr sidecar's HTTP port; prints
which of each it uses, and stops them all.

The worker and the web app are **forked** from this process (:class:`ManagedProcess`
with a target), the way Celery's prefork pool and gunicorn's arbiter fork their own
workers: each child inherits the agent objects as they are in memory, so an agent built
anywhere (inside ``async def main()``, a notebook cell, a test) is served without being
importable by name. ``AGENT_APP`` stays the production way (every process of a
deployment imports the agents by ``module:attribute``). A launcher: it imports ``tasks``
and ``web`` lazily, inside the children.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import redis

from .components import load_components
from .embedded_redis import EmbeddedRedis
from .errors import ConfigurationError
from .local_model import LocalModelServer
from .processes import ManagedProcess
from .runtime import Runtime
from .settings import Settings

if TYPE_CHECKING:
    from .agent import AssistantAgent  # agent.start() imports this module

log = logging.getLogger("agent_platform.dev")

#: The embedded model's profile: deterministic, short answers, one tool round, tool
#: results as user messages (its chat template drops ``tool`` messages), answers streamed
#: but not tool calls (its chatml-function-calling cannot stream an automatic tool choice).
LOCAL_MODEL_PROFILE = {
    "AGENT_PLATFORM_LLM_STREAM": "text",
    "AGENT_PLATFORM_LLM_TEMPERATURE": "0",
    "AGENT_PLATFORM_LLM_MAX_TOOL_ROUNDS": "1",
    "AGENT_PLATFORM_LLM_MAX_TOKENS": "160",
    "AGENT_PLATFORM_LLM_TOOL_RESULT_ROLE": "user",
}
#: The Dapr sidecar's default HTTP port (``dapr run --dapr-http-port``).
DAPR_HTTP_PORT = 3500


class Interrupted(Exception):
    """Raised inside dev mode's start-up when it was asked to stop meanwhile."""


def app_port(default: int) -> int:
    """The web app's port: ``$AGENT_PLATFORM_APP_PORT`` when set, else ``default`` (the
    port given to ``as_service()`` / ``serve()``), so a program with a fixed port can run
    beside another service or in a test."""
    return _port_var("AGENT_PLATFORM_APP_PORT", default)


def sidecar_port() -> int:
    """The port of the Dapr workflow API: ``$AGENT_PLATFORM_DAPR_HTTP_PORT``, default 3500
    (Dapr's); 0 turns it off."""
    return _port_var("AGENT_PLATFORM_DAPR_HTTP_PORT", DAPR_HTTP_PORT)


def _port_var(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigurationError(f"{name}={raw!r} is not a TCP port (0-65535)")
    return int(raw)


class DevMode:
    """The dev-mode processes; a context manager.

    Args:
        agents: the agents to serve (objects; they need not be importable).
        port: the web app's port (0: no web app, a worker only); taken, it is an error
            (:meth:`start` raises ConfigurationError naming it, before starting anything).
        host: the address the web app binds.
        dapr_port: the port of the Dapr workflow API (default :func:`sidecar_port`; 0 off);
            skipped with a warning line when the port is taken.
        data_dir: folder of the embedded Redis's data (AOF) and the logs (default
            ``$AGENT_PLATFORM_DATA_DIR`` or ``.agent-platform``).
        concurrency: the worker's pool size.
        stopping: an event that, once set, ends a start-up in progress (:class:`Interrupted`).

    Attributes:
        env: the environment the worker and web app run with.
        runtime: a runtime in this process over the same stores (read status, follow steps).
        redis_note: which Redis dev mode uses and why (its first line of output).
    """

    def __init__(
        self,
        agents: list[AssistantAgent],
        port: int = 8001,
        host: str = "127.0.0.1",
        dapr_port: int | None = None,
        data_dir: str | Path | None = None,
        concurrency: int = 2,
        stopping: threading.Event | None = None,
    ) -> None:
        self.agents = agents
        self.port = port
        self.host = host
        self.dapr_port = sidecar_port() if dapr_port is None else dapr_port
        self.data_dir = Path(data_dir or os.environ.get("AGENT_PLATFORM_DATA_DIR") or ".agent-platform").resolve()
        self.concurrency = concurrency
        self.stopping = stopping or threading.Event()
        self.redis: EmbeddedRedis | None = None
        self.model: LocalModelServer | None = None
        self.worker: ManagedProcess | None = None
        self.web: ManagedProcess | None = None
        self.env: dict[str, str] = {}
        self.runtime: Runtime | None = None
        self.redis_note = ""
        # One name per dev mode: two dev modes on one Redis (the components' 6379) must not
        # answer each other's readiness ping.
        self.worker_name = f"dev-{os.getpid()}@{socket.gethostname()}"

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the web app."""
        return f"http://{self.host}:{self.port}"

    @property
    def dapr_url(self) -> str | None:
        """``http://host:port`` of the Dapr workflow API, or None when off."""
        return f"http://{self.host}:{self.dapr_port}" if self.dapr_port else None

    def start(self) -> Self:
        """Start everything and wait until the worker answers a ping and the web app /health.

        Raises:
            ConfigurationError: the web app's port is in use, a process did not start (its
                log tail is in the message), or a component the agents name is missing.
            Interrupted: ``stopping`` was set meanwhile.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.port and not _port_free(self.host, self.port):
            # Checked first: gunicorn would retry the bind for seconds after the model and
            # worker started, and whatever holds the port (a dev mode left running) would
            # answer the readiness check meanwhile.
            raise ConfigurationError(
                f"port {self.port} on {self.host} is in use (another dev mode still running?): stop what holds "
                "it, or choose another port (as_service(port=...), agent-platform dev --port, AGENT_PLATFORM_APP_PORT)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        self._choose_redis(env)
        say(self.redis_note)
        if not env.get("OPENAI_API_KEY") and not env.get("OPENAI_BASE_URL"):
            say("model      starting the embedded SmolLM2-135M-Instruct (llama-cpp-python)...")
            self.model = LocalModelServer().start()
            env.update(OPENAI_BASE_URL=self.model.base_url, OPENAI_MODEL=self.model.model_name, **LOCAL_MODEL_PROFILE)
            env.setdefault("OPENAI_API_KEY", "local")
            say(f"model      {self.model.base_url}  ({self.model.model_name}, embedded)")
        else:
            say(f"model      {env.get('OPENAI_BASE_URL') or 'OpenAI'} ({env.get('OPENAI_MODEL') or 'default model'})")
        self.env = env
        self._check_stop()
        self.worker = ManagedProcess("worker", target=self._run_worker, env=env, log_path=self.data_dir / "worker.log")
        self.worker.start()
        if self.port:
            if self.dapr_port and not _port_free(self.host, self.dapr_port):
                say(f"dapr api   port {self.dapr_port} is in use: the Dapr workflow API is served on {self.port} only")
                self.dapr_port = 0
            self.web = ManagedProcess("web", target=self._run_web, env=env, log_path=self.data_dir / "web.log")
            self.web.start()
            self.web.wait_ready(self._interruptible(lambda: _http_ok(f"{self.base_url}/health")), 60)
        self.worker.wait_ready(self._interruptible(self._worker_answers), 90, interval=0.2)
        say(f"worker     {self.worker_name} (forked; queues: {', '.join(a.queue for a in self.agents)})")
        if self.web is not None:
            say(f"web        {self.base_url}  (POST /start-workflow, GET /workflows/<id>, /openapi.json)")
            if self.dapr_port:
                say(f"dapr api   {self.dapr_url}/v1.0/workflows/<component>/<id>  (the sidecar's workflow API)")
            say(f"inspector  {self.base_url}/ui/  (every workflow, live; AGENT_PLATFORM_UI=0 turns it off)")

    # -- choices ------------------------------------------------------------------------
    def _choose_redis(self, env: dict[str, str]) -> None:
        """Use ``REDIS_URL``; else the Redis the components name when every one answers;
        else a private redis-server (``REDIS_URL`` then points every component at it)."""
        if env.get("REDIS_URL"):
            self.runtime = Runtime(Settings.from_env(env), agents=self.agents)
            self.redis_note = f"redis      {', '.join(_redis_urls(self.runtime, redacted=True))}  ($REDIS_URL)"
            return
        settings = Settings.from_env(env)
        found = load_components(settings.components_path, env)
        why = f"no Redis components in {found.folder}"
        if found:
            runtime = Runtime(settings, agents=self.agents)
            silent = [url for url in _redis_urls(runtime) if not _answers(url)]
            if not silent:
                self.runtime = runtime
                self.redis_note = (
                    f"redis      {', '.join(_redis_urls(runtime, redacted=True))}  (components in {found.folder})"
                )
                return
            runtime.close()
            why = f"the components' Redis at {', '.join(silent)} did not answer"
        self.redis = EmbeddedRedis(self.data_dir / "redis").start()
        env["REDIS_URL"] = self.redis.url
        self.runtime = Runtime(Settings.from_env(env), agents=self.agents)
        self.redis_note = f"redis      {self.redis.url}  (embedded, data in {self.data_dir / 'redis'}; {why})"

    # -- the children -------------------------------------------------------------------
    def _run_worker(self) -> int:
        """The forked worker: ``celery worker`` on an app built for these agent objects."""
        from tasks import create_celery  # launcher: tasks only in the child

        app = create_celery(runtime=Runtime(Settings.from_env(), agents=self.agents))
        argv = ["worker", "--loglevel", "INFO", "-c", str(self.concurrency), "-n", self.worker_name,
                "--without-mingle", "--without-gossip"]  # fmt: skip
        return app.start(argv) or 0  # type: ignore[no-any-return]

    def _run_web(self) -> None:
        """The forked web app: gunicorn (gthread) on the app and the Dapr sidecar ports."""
        from web import create_app  # launcher: web only in the child
        from web.dapr import sidecar_only

        settings = Settings.from_env()  # the web's Redis clients fail fast, as in create_app (C17)
        app = create_app(runtime=Runtime(settings, agents=self.agents, redis_timeout=settings.web_redis_timeout))
        binds = [f"{self.host}:{self.port}"]
        if self.dapr_port:
            binds.append(f"{self.host}:{self.dapr_port}")
        wsgi = sidecar_only(app, self.dapr_port) if self.dapr_port else app
        options = {"bind": binds, "workers": 1, "worker_class": "gthread", "threads": 8, "accesslog": "-"}
        _serve_gunicorn(wsgi, options)

    def _worker_answers(self) -> bool:
        """Celery's ``control.ping`` to the dev worker answers (remote control, not logs)."""
        from celery import Celery

        assert self.runtime is not None
        app = Celery("agent_platform.dev", broker=self.runtime.broker_url(), set_as_current=False)
        try:
            return bool(app.control.ping(destination=[self.worker_name], timeout=0.5))
        except Exception:  # broker not reachable yet
            return False
        finally:
            app.close()

    def _interruptible(self, ready: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            self._check_stop()
            return ready()

        return check

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise Interrupted("dev mode was asked to stop while starting")

    def check(self) -> None:
        """Raise if the worker or the web app exited on its own.

        Raises:
            ConfigurationError: naming the process and its log.
        """
        for proc in (self.worker, self.web):
            if proc is not None and proc.proc is not None and not proc.alive():
                raise ConfigurationError(f"the {proc.name} exited with status {proc.returncode}; see {proc.log_path}")

    def pids(self) -> list[int]:
        """The pids of the processes started (their groups hold what they started)."""
        procs = [self.worker, self.web, getattr(self.redis, "_proc", None), getattr(self.model, "_proc", None)]
        return [p.pid for p in procs if p is not None and p.pid is not None]

    def stop(self) -> None:
        """Stop the web app, the worker (Celery's warm shutdown), the model and Redis, in
        that order, each with SIGTERM then SIGKILL; idempotent."""
        if self.web is not None:
            self.web.stop(timeout=10)
        if self.worker is not None:
            self.worker.stop(timeout=10)
        self.web = self.worker = None
        if self.runtime is not None:
            self.runtime.close()
        if self.model is not None:
            self.model.stop()
            self.model = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve_gunicorn(wsgi: Any, options: dict[str, Any]) -> None:
    """Run gunicorn's arbiter on a WSGI object this process already holds (gunicorn's
    documented "custom application", a ``BaseApplication`` subclass); returns when it stops."""
    from gunicorn.app.base import BaseApplication

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return wsgi

    Application().run()


def _redis_urls(runtime: Runtime, redacted: bool = False) -> list[str]:
    """The distinct Redis URLs of the components the runtime's agents name."""
    from .components import RedisTarget

    names: list[str] = []
    for agent in runtime.agents.values():
        names += [agent.state_store_name, agent.agents_registry_store_name, agent.message_bus_name]
        store = getattr(agent.memory, "store_name", None)
        if store:
            names.append(store)
    urls = dict.fromkeys(runtime.target_for(name).url for name in dict.fromkeys(names))
    return [RedisTarget(url, "").redacted_url() if redacted else url for url in urls]


def _answers(url: str) -> bool:
    """Whether the Redis at ``url`` answers PING within a second.

    Raises:
        ConfigurationError: it answers but refuses us (wrong password, ...).
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    except redis.RedisError as exc:
        raise ConfigurationError(f"the Redis of the components answers but refuses: {exc}") from exc
    finally:
        client.close()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def say(text: str) -> None:
    """One line of dev mode's output: ``[agent-platform] <text>``."""
    print(f"[agent-platform] {text}", flush=True)


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


__all__ = ["LOCAL_MODEL_PROFILE", "DevMode", "Interrupted", "app_port", "sidecar_port"]


def give_dispatcher(runtime: Runtime) -> Runtime:
    """Give ``runtime`` a dispatcher (a Celery app on its broker) so this process can start
    workflows, e.g. :class:`~agent_platform.agent_runner.AgentRunner` beside a dev mode;
    returns it. The launcher's lazy import of ``tasks`` (DESIGN section 2) lives here."""
    from tasks import create_celery

    create_celery(runtime=runtime)
    return runtime
