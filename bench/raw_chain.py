"""The floor: a turn as a plain Celery chain, with no checkpoint, no lease and no fencing.

``celery -A bench.raw_chain worker`` runs it. Two shapes of the same turn:

- 5 tasks: start, llm, tool, llm, finish (agent-platform's turn before issue 15);
- 3 tasks: llm, tool, llm, where the first ``llm`` builds the prompt (what ``start`` did)
  and the last one signals the end (what ``finish`` did): the shape of agent-platform's
  turn once a broker hop is paid only where work happens;
- 1 task: the whole turn in one task (the floor of agent-platform's local steps).

Each task does its step (:mod:`bench.turn`), then enqueues the next one with
``send_task``, as agent-platform's steps do (not a result-backend chain); the
conversation so far travels inside the message. The end pushes the turn id to
:data:`DONE_KEY` so that the driver learns that the turn ended. A turn of several tool
rounds (``bench.long_turn``) loops llm, tool, llm, ... as the model asks.

The Celery settings are agent-platform's own (:func:`tasks.app.celery_config`: JSON only,
``acks_late``, ``reject_on_worker_lost``, prefetch 1, events on, results ignored), on the
same Redis broker; only the queue differs. Two environment variables of the worker (and
arguments of :func:`get_app` in the driver) vary them:

- ``BENCH_RAW_QUEUE``: the queue (default :data:`QUEUE`), so that several raw-chain
  workers (other pools, events off) can run side by side;
- ``BENCH_RAW_EVENTS=0``: task events off (``worker_send_task_events`` and
  ``task_send_sent_event`` false), to measure what the events cost per hop.
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
#: Task shapes: Celery tasks per turn of one tool round.
SHAPES = (1, 3, 5)

_apps: dict[tuple[bool, str], Celery] = {}
_lock = threading.Lock()
_redis: dict[int, redis.Redis] = {}


def _env_events() -> bool:
    return os.environ.get("BENCH_RAW_EVENTS", "1") != "0"


def _env_queue() -> str:
    return os.environ.get("BENCH_RAW_QUEUE") or QUEUE


def create_raw_app(events: bool | None = None, queue: str | None = None) -> Celery:
    """The raw chain's Celery app, configured from the environment like ``tasks``.

    Args:
        events: task events on (default: ``BENCH_RAW_EVENTS``, on unless ``0``).
        queue: the queue it consumes and sends to (default: ``BENCH_RAW_QUEUE`` or
            :data:`QUEUE`).
    """
    from agent_platform.runtime import Runtime
    from agent_platform.settings import Settings
    from tasks.app import celery_config

    from .agent import bench_bot

    events = _env_events() if events is None else events
    queue = queue or _env_queue()
    config = celery_config(Runtime(Settings.from_env(), agents=[bench_bot]))
    config.update(task_queues=[Queue(queue)], task_default_queue=queue)
    if not events:
        config.update(worker_send_task_events=False, task_send_sent_event=False)
    app = Celery("bench_raw", set_as_current=False)
    app.conf.update(config)
    _register(app)
    return app


def get_app(events: bool | None = None, queue: str | None = None) -> Celery:
    """The process's raw-chain app for these settings, built on first use."""
    key = (_env_events() if events is None else events, queue or _env_queue())
    with _lock:
        if key not in _apps:
            _apps[key] = create_raw_app(*key)
        return _apps[key]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module 'bench.raw_chain' has no attribute {name!r}")


def start_turn(app: Celery, turn_id: str, task: str, tasks: int = 5) -> None:
    """Enqueue the first task of a turn of ``tasks`` tasks (1, 3 or 5, see :data:`SHAPES`)
    on ``app``'s queue.

    Raises:
        ValueError: ``tasks`` is not a known shape.
    """
    if tasks not in SHAPES:
        raise ValueError(f"a raw turn has 1, 3 or 5 tasks, not {tasks}")
    queue = app.conf.task_default_queue
    if tasks == 5:
        app.send_task("bench.raw.start", kwargs={"turn_id": turn_id, "task": task}, queue=queue)
    elif tasks == 1:
        app.send_task("bench.raw.turn", kwargs={"turn_id": turn_id, "task": task}, queue=queue)
    else:
        app.send_task("bench.raw.llm", kwargs={"turn_id": turn_id, "task": task, "folded": True}, queue=queue)


def _done_client() -> redis.Redis:
    pid = os.getpid()
    if pid not in _redis:
        _redis[pid] = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _redis[pid]


def _register(app: Celery) -> None:
    def send(name: str, **kwargs: Any) -> None:
        app.send_task(f"bench.raw.{name}", kwargs=kwargs, queue=app.conf.task_default_queue)

    @app.task(name="bench.raw.start", **TASK_OPTIONS)
    def start(turn_id: str, task: str) -> None:
        send("llm", turn_id=turn_id, messages=turn.first_messages(task))

    @app.task(name="bench.raw.llm", **TASK_OPTIONS)
    def llm(turn_id: str, messages: list[dict[str, Any]] | None = None, task: str = "", folded: bool = False) -> None:
        messages = messages if messages is not None else turn.first_messages(task)
        reply = turn.call_model(messages)
        if reply.get("tool_calls"):
            send("tool", turn_id=turn_id, messages=[*messages, reply], call=reply["tool_calls"][0], folded=folded)
        elif folded:
            _done_client().lpush(DONE_KEY, turn_id)
        else:
            send("finish", turn_id=turn_id, output=reply["content"])

    @app.task(name="bench.raw.tool", **TASK_OPTIONS)
    def tool(turn_id: str, messages: list[dict[str, Any]], call: dict[str, Any], folded: bool = False) -> None:
        send("llm", turn_id=turn_id, messages=[*messages, turn.run_tool(call)], folded=folded)

    @app.task(name="bench.raw.turn", **TASK_OPTIONS)
    def whole_turn(turn_id: str, task: str) -> None:
        messages = turn.first_messages(task)
        while (reply := turn.call_model(messages)).get("tool_calls"):
            messages = [*messages, reply, *(turn.run_tool(call) for call in reply["tool_calls"])]
        _done_client().lpush(DONE_KEY, turn_id)

    @app.task(name="bench.raw.finish", **TASK_OPTIONS)
    def finish(turn_id: str, output: str) -> None:
        _done_client().lpush(DONE_KEY, turn_id)
