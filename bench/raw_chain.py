"""The floor: the same five tasks as a turn (start, llm, tool, llm, finish) as a plain Celery
chain, with no checkpoint, no lease and no fencing.

``celery -A bench.raw_chain worker`` runs it. Each task does its step
(:mod:`bench.turn`), then enqueues the next one with ``send_task``, as agent-platform's
steps do (not a result-backend chain); the conversation so far travels inside the
message. ``finish`` pushes the turn id to :data:`DONE_KEY` so that the driver learns
that the turn ended.

The Celery settings are agent-platform's own (:func:`tasks.app.celery_config`: JSON only,
``acks_late``, ``reject_on_worker_lost``, prefetch 1, events on, results ignored), on the
same Redis broker; only the queue differs (:data:`QUEUE`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from celery import Celery
from kombu import Queue

from . import turn

QUEUE = "bench.raw"
#: A Redis list: the id of every finished turn is pushed here.
DONE_KEY = "bench:raw:done"
TASK_OPTIONS = {"ignore_result": True, "acks_late": True, "reject_on_worker_lost": True, "shared": False}

_app: Celery | None = None
_lock = threading.Lock()
_redis: dict[int, redis.Redis] = {}


def create_raw_app() -> Celery:
    """The raw chain's Celery app, configured from the environment like ``tasks``."""
    from agent_platform.runtime import Runtime
    from agent_platform.settings import Settings
    from tasks.app import celery_config

    from .agent import bench_bot

    config = celery_config(Runtime(Settings.from_env(), agents=[bench_bot]))
    config.update(task_queues=[Queue(QUEUE)], task_default_queue=QUEUE)
    app = Celery("bench_raw", set_as_current=False)
    app.conf.update(config)
    _register(app)
    return app


def get_app() -> Celery:
    """The process's raw-chain app, built on first use."""
    global _app
    with _lock:
        if _app is None:
            _app = create_raw_app()
        return _app


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module 'bench.raw_chain' has no attribute {name!r}")


def start_turn(app: Celery, turn_id: str, task: str) -> None:
    """Enqueue the first task of a turn."""
    app.send_task("bench.raw.start", kwargs={"turn_id": turn_id, "task": task}, queue=QUEUE)


def _done_client() -> redis.Redis:
    pid = os.getpid()
    if pid not in _redis:
        _redis[pid] = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _redis[pid]


def _register(app: Celery) -> None:
    def send(name: str, **kwargs: Any) -> None:
        app.send_task(f"bench.raw.{name}", kwargs=kwargs, queue=QUEUE)

    @app.task(name="bench.raw.start", **TASK_OPTIONS)
    def start(turn_id: str, task: str) -> None:
        send("llm", turn_id=turn_id, messages=turn.first_messages(task))

    @app.task(name="bench.raw.llm", **TASK_OPTIONS)
    def llm(turn_id: str, messages: list[dict[str, Any]]) -> None:
        reply = turn.call_model(messages)
        if reply.get("tool_calls"):
            send("tool", turn_id=turn_id, messages=[*messages, reply], call=reply["tool_calls"][0])
        else:
            send("finish", turn_id=turn_id, output=reply["content"])

    @app.task(name="bench.raw.tool", **TASK_OPTIONS)
    def tool(turn_id: str, messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
        send("llm", turn_id=turn_id, messages=[*messages, turn.run_tool(call)])

    @app.task(name="bench.raw.finish", **TASK_OPTIONS)
    def finish(turn_id: str, output: str) -> None:
        _done_client().lpush(DONE_KEY, turn_id)
