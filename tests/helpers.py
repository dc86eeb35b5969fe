"""The test harness: real Celery worker processes, the web app over real HTTP, Redis helpers.

Nothing here mocks Redis, Celery or HTTP. A :class:`Platform` is what a deployment
runs (``celery -A tasks worker`` processes and ``web:create_app()`` behind a real HTTP
server) pointed at a test Redis and a :class:`~agent_platform.testing.ScriptedModel`.
Waits poll with a deadline; nothing sleeps a fixed time and hopes. The worker
processes (start, stop, SIGKILL) are in ``tests/workers.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from agent_platform.settings import ENV_FIELDS
from agent_platform.store.state import TERMINAL as TERMINAL_STATUSES

try:
    from celery.exceptions import DuplicateTaskNameWarning
except ImportError:  # Celery before 5.7 registers a duplicate task name silently
    DuplicateTaskNameWarning = None  # type: ignore[assignment,misc]

from .workers import REPO, Stack, apply_env

COMPONENTS = REPO / "components"
TERMINAL = tuple(sorted(TERMINAL_STATUSES))
#: ``AGENT_PLATFORM_TEST_LOCAL_STEPS=1`` runs every test deployment with local steps on
#: (``.ci/run`` runs the engine and failure tests once more that way).
LOCAL_STEPS = os.environ.get("AGENT_PLATFORM_TEST_LOCAL_STEPS") == "1"
#: Environment variables a test deployment sets or clears (never inherited from the shell).
PLATFORM_VARS = (*ENV_FIELDS, "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL")


# -- Redis ------------------------------------------------------------------------------


def clean_redis(client: redis.Redis) -> None:
    """Delete every key of the test Redis except kombu's own bookkeeping.

    A FLUSHALL would also drop ``_kombu.binding.*`` (the queue bindings that running
    workers and cached producers declared once), after which messages sent to an
    agent's queue would be routed nowhere. Queue lists and application keys go.
    """
    doomed = [k for k in client.scan_iter(count=1000) if not _kombu_key(k)]
    for i in range(0, len(doomed), 500):
        client.delete(*doomed[i : i + 500])


def _kombu_key(key: str | bytes) -> bool:
    text = key.decode() if isinstance(key, bytes) else key
    return text.startswith("_kombu.") or text.startswith("unacked")


def platform_env(
    redis_url: str, model_url: str, agent_app: str, components: str | Path = COMPONENTS, **extra: str
) -> dict[str, str]:
    """The platform's variables for one test deployment (unset ones are listed as None)."""
    env: dict[str, Any] = {name: None for name in PLATFORM_VARS}
    env.update(
        REDIS_URL=redis_url,
        OPENAI_BASE_URL=model_url,
        AGENT_APP=agent_app,
        AGENT_PLATFORM_COMPONENTS_PATH=str(components),
    )
    if LOCAL_STEPS:
        env["AGENT_PLATFORM_LOCAL_STEPS"] = "1"
    env.update(extra)
    return env


# -- the web app over HTTP --------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class WebServer:
    """``web.create_app()`` served by werkzeug's threaded server in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()
        extensions = getattr(self.app, "extensions", {})
        close_runtime(extensions.get("agent_platform"))
        celery = extensions.get("agent_platform.celery")
        if celery is not None:
            celery.close()


def close_runtime(runtime: Any) -> None:
    """Close the Redis connections a :class:`Runtime` opened."""
    if runtime is not None:
        runtime.close()


class Api:
    """An HTTP client of the platform's API (``httpx``), with the waits tests need."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=15.0)

    def close(self) -> None:
        self.http.close()

    def start_turn(self, task: str, session_id: str | None = None, **fields: Any) -> str:
        """POST /start-workflow; asserts 202 and returns the workflow instance id."""
        body: dict[str, Any] = {"task": task, **fields}
        if session_id is not None:
            body["session_id"] = session_id
        response = self.http.post("/start-workflow", json=body)
        assert response.status_code == 202, f"{response.status_code}: {response.text}"
        return response.json()["workflow_instance_id"]

    def status(self, workflow_id: str) -> dict[str, Any]:
        response = self.http.get(f"/workflows/{workflow_id}")
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        return response.json()

    def steps(self, workflow_id: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/workflows/{workflow_id}/steps")
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        return response.json()["steps"]

    def wait_status(
        self, workflow_id: str, statuses: Iterable[str] = TERMINAL, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll GET /workflows/<id> until its runtime_status is one of ``statuses``."""
        wanted = tuple(statuses)
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(workflow_id)
            if status["runtime_status"] in wanted:
                return status
            if time.monotonic() > deadline:
                steps = json.dumps(self.steps(workflow_id), indent=1)[-6000:]
                raise AssertionError(
                    f"workflow {workflow_id} still {status['runtime_status']} after {timeout} s "
                    f"(wanted {wanted}):\n{json.dumps(status, indent=1)}\nsteps: {steps}"
                )
            time.sleep(0.05)


# -- a whole deployment -----------------------------------------------------------------


class Platform:
    """Workers, web app and clients of one test deployment.

    Attributes:
        env: the platform variables (also set in this process while it runs).
        stack: the Celery workers.
        web: the HTTP server of ``web.create_app()``.
        api: an HTTP client of it.
        redis_url: the test Redis.
    """

    def __init__(self, env: dict[str, str | None], stack: Stack, web: WebServer, api: Api) -> None:
        self.env = env
        self.stack = stack
        self.web: WebServer | None = web
        self.api: Api | None = api
        self.redis_url = env["REDIS_URL"]
        self._runtime: Any = None
        #: The overrides the running workers were started with ({}: the platform's own).
        self.worker_env: dict[str, str | None] = {}

    @property
    def runtime(self) -> Any:
        """A read-only :class:`~agent_platform.runtime.Runtime` of this deployment (in-process)."""
        if self._runtime is None:
            from agent_platform.runtime import Runtime
            from agent_platform.settings import Settings

            self._runtime = Runtime(Settings.from_env(apply_env(dict(os.environ), self.env)))
        return self._runtime

    @property
    def celery(self) -> Any:
        """The web app's Celery app (to send raw step messages from the test process).

        Reused rather than built again: a second ``create_celery`` in one process
        collides with the first one's task names (see tasks/steps.py).
        """
        assert self.web is not None, "the web app is stopped"
        return self.web.app.extensions["agent_platform.celery"]

    def history(self, session_id: str, agent: str = "TravelBuddy") -> list[dict[str, Any]]:
        """A session's conversation memory, read through the public Runtime API."""
        runtime = self.runtime
        return runtime.history_for(runtime.agent(agent)).messages(session_id)

    def stop_web(self) -> None:
        """Close this process's clients and stop the web server (as its process would end)."""
        self.close_clients()
        if self.api is not None:
            self.api.close()
            self.api = None
        if self.web is not None:
            self.web.stop()
            self.web = None

    def start_web(self) -> None:
        """Serve a fresh ``web.create_app()`` (as a new web process would)."""
        self.web = WebServer(create_web_app())
        self.api = Api(self.web.base_url)

    def restart_everything(self, redis_server: Any, workers: int = 1) -> None:
        """Stop the web app and every worker, restart redis-server (it reloads its AOF),
        then start fresh workers and a fresh web app."""
        self.stop_web()
        self.stack.stop()
        redis_server.restart()
        self.stack.start(workers)
        self.start_web()

    def use_workers(self, **env: str | None) -> Any:
        """Make sure one worker runs with ``env`` (overrides of the platform's variables):
        keep the running one if it has them, else stop the running ones and start a fresh one."""
        alive = [w for w in self.stack.workers if w.alive()]
        if alive and self.worker_env == env:
            return alive[0]
        for worker in alive:
            self.stack.stop_worker(worker)
        worker = self.stack.start_worker(**env)
        self.worker_env = env
        return worker

    def close_clients(self) -> None:
        close_runtime(self._runtime)
        self._runtime = None


def create_web_app(test_config: dict[str, Any] | None = None) -> Any:
    """``web.create_app(test_config)`` from the current environment (imported late: web is optional).

    Works around a bug of tasks/steps.py and tasks/callbacks.py: they register their
    tasks with Celery's default ``shared=True``, so every later Celery app in the same
    process (each create_app() builds one) also receives the earlier apps' task closures
    and warns ``DuplicateTaskNameWarning`` when it finalizes (lazily, at the first
    dispatch, inside a request). The app is finalized here, with that warning silenced.
    """
    import web

    app = web.create_app(test_config)
    with warnings.catch_warnings():
        if DuplicateTaskNameWarning is not None:
            warnings.simplefilter("ignore", DuplicateTaskNameWarning)
        app.extensions["agent_platform.celery"].finalize(auto=True)
    return app


@contextmanager
def running_platform(
    env: dict[str, str | None], log_dir: Path, workers: int = 1, concurrency: int = 2, pool: str = "prefork"
) -> Iterator[Platform]:
    """Start workers (of Celery's ``pool``) and the web app with ``env`` (set in this
    process too), stop them after."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        mp.setenv("PYTHONPATH", str(REPO))
        stack = Stack(dict(os.environ), log_dir, concurrency, pool)
        platform = None
        try:
            stack.start(workers)
            web = WebServer(create_web_app())
            platform = Platform(env, stack, web, Api(web.base_url))
            yield platform
        finally:
            if platform is not None:
                platform.stop_web()
            stack.stop()


def use_workers(platform: Platform, **env: str | None) -> Any:
    """:meth:`Platform.use_workers` (one worker with ``env``)."""
    return platform.use_workers(**env)


# -- step-log checks --------------------------------------------------------------------


def chain_problems(steps: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a step log as a chain of checkpoints (empty: nothing).

    A sound log reads ``start, (llm, tool...)*, llm, finish`` once retries (``retry``
    records), lost runs (``lost`` records) and raised events are set aside: each ``llm`` that calls tools is followed by
    exactly one result per call id (in any order), a call id is never answered twice,
    and no step kind is checkpointed twice at one position of the chain. A log of a
    turn that ended early (terminated, failed) may stop anywhere.
    """
    problems: list[str] = []
    expect: set[str] = {"start"}
    pending: set[str] = set()
    answered: set[str] = set()
    for record in steps:
        kind, status = record["kind"], record["status"]
        if kind in ("event", "message") or status in ("retry", "lost"):
            continue
        where = f"seq {record['seq']} ({kind}/{status})"
        if kind not in expect:
            problems.append(f"{where}: expected one of {sorted(expect)}")
        if kind == "start":
            expect = {"llm"}
        elif kind == "llm":
            calls = [c["id"] for c in record["data"].get("tool_calls") or []]
            if status == "ok" and calls and not record["data"].get("ignored_tool_calls"):
                pending = set(calls)
                expect = {"tool"}
            else:
                expect = {"finish"}
        elif kind == "tool":
            call_id = record["data"]["call_id"]
            if call_id in answered:
                problems.append(f"{where}: tool call {call_id} answered twice")
            elif call_id not in pending:
                problems.append(f"{where}: tool call {call_id} was not asked for")
            answered.add(call_id)
            pending.discard(call_id)
            expect = {"tool"} if pending else {"llm"}
        elif kind == "finish":
            expect = set()
    return problems
