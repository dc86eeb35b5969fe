"""The Celery app factory, with the settings of DESIGN section 3, rule 3."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery import Celery
from kombu import Exchange, Queue
from redis.connection import parse_url as redis_parse_url

from agent_platform.broker import AMQP, BrokerTarget
from agent_platform.bus.responses import install as install_bus
from agent_platform.runtime import Runtime
from agent_platform.settings import Settings

from .callbacks import register_callbacks
from .dispatch import CeleryDispatcher
from .steps import register_steps
from .worker import install_worker_hooks

log = logging.getLogger("agent_platform.tasks")


def celery_config(runtime: Runtime) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, prefetch 1, events on, results ignored.

    Sources: Celery's "Should I use retry or acks_late?" FAQ and the Redis transport's
    ``visibility_timeout`` (kombu), which must exceed the longest step. The broker's own
    settings come from :func:`broker_config`.
    """
    broker = runtime.broker()
    queues = [agent_queue(agent.queue, broker) for agent in runtime.agents.values()]
    return {
        **broker_config(runtime, broker),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_ignore_result": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_queues": queues,
        "task_default_queue": queues[0].name if queues else "celery",
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def broker_config(runtime: Runtime, broker: BrokerTarget) -> dict[str, Any]:
    """The broker's part of the Celery settings.

    - Redis and Sentinel (kombu's Redis transport): ``visibility_timeout`` above the
      longest step and a restore sweep to match, keepalive and health checks, a Redis
      URL's own options (:func:`broker_options`); for Sentinel, ``master_name`` (and
      ``sentinel_kwargs``) from the deployment.
    - RabbitMQ: every agent queue is a quorum queue (replicated, Raft) bound to a topic
      exchange, as Celery 5.5's native delayed delivery needs (``task_default_queue_type``,
      ``task_create_missing_queue_type`` and ``..._exchange_type`` for queues a process
      dispatches to without declaring them); publisher confirms (py-amqp's
      ``confirm_publish``), so a dispatched step is on the broker before the checkpoint's
      task acknowledges. A countdown (an LLM retry's backoff) travels through the
      ``celery_delayed_*`` queues the worker declares; Celery disables global QoS for
      quorum queues (``worker_detect_quorum_queues``). There is no visibility timeout:
      RabbitMQ redelivers a message when its consumer's connection closes, and closes a
      channel whose delivery stays unacknowledged past its ``consumer_timeout``
      (30 min by default): raise it above the longest step.

    In the web app (``runtime.redis_timeout`` set) a publish fails fast: the broker's
    connection timeout is that many seconds and a publish is retried once.
    """
    fail_fast: dict[str, Any] = {}
    if runtime.redis_timeout is not None:  # the web app: a publish fails fast (503), see web/errors.py
        fail_fast = {
            "broker_connection_timeout": runtime.redis_timeout,
            "task_publish_retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        }
    if broker.kind == AMQP:
        return {
            "broker_url": broker.url,
            "broker_transport_options": {"confirm_publish": True, **broker.transport_options},
            "task_default_queue_type": "quorum",
            "task_create_missing_queue_type": "quorum",
            "task_create_missing_queue_exchange_type": "topic",
            "broker_native_delayed_delivery_queue_type": "quorum",
            "worker_detect_quorum_queues": True,
            **fail_fast,
        }
    settings = runtime.settings
    url, from_url = broker_options(broker.url)
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        **restore_cadence(settings.visibility_timeout),
        "socket_keepalive": True,
        "health_check_interval": 10,
    }
    if runtime.redis_timeout is not None:
        transport.update(socket_timeout=runtime.redis_timeout, socket_connect_timeout=runtime.redis_timeout)
    return {
        "broker_url": url,
        "broker_transport_options": {**transport, **from_url, **broker.transport_options},
        **fail_fast,
    }


def agent_queue(name: str, broker: BrokerTarget) -> Queue:
    """An agent's queue: Celery's default for Redis; on RabbitMQ a quorum queue bound to a
    topic exchange of the same name (what ``task_create_missing_queue_*`` would create)."""
    if broker.kind != AMQP:
        return Queue(name)
    return Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments={"x-queue-type": "quorum"})


#: Options of a redis:// URL that kombu's Redis transport takes as transport options.
KOMBU_TRANSPORT_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "max_connections",
        "retry_on_timeout",
        "client_name",
    }
)


def broker_options(url: str) -> tuple[str, dict[str, Any]]:
    """The Celery broker URL and transport options for ``url``.

    redis-py reads many options from a Redis URL's query (``?socket_timeout=2``,
    ``?protocol=3``, ...); kombu passes a broker URL's query to its ``Connection`` as
    keyword arguments and rejects those it does not know (``TypeError: ... unexpected
    keyword argument 'socket_timeout'``). So for ``redis://`` and ``rediss://`` URLs the
    query is split: the ``ssl_*`` options and ``credential_provider`` stay in the URL
    (kombu reads them there), the options kombu's Redis transport knows
    (:data:`KOMBU_TRANSPORT_OPTIONS`) become ``broker_transport_options`` with the types
    redis-py gives them, and the rest (``protocol``, ``decode_responses``...) are for
    redis-py only: the broker does without them (logged once). Other URLs (RabbitMQ...)
    are returned as they are.

    Returns:
        ``(broker URL, transport options from the URL)``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.query:
        return url, {}
    typed = redis_parse_url(url)
    kept, options, dropped = [], {}, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.startswith("ssl_") or name == "credential_provider":
            kept.append((name, value))
        elif name in KOMBU_TRANSPORT_OPTIONS:
            options[name] = typed.get(name, value)
        else:
            dropped.append(name)
    if dropped:
        log.info("broker: the Redis URL option(s) %s are for redis-py only; Celery's broker does without", dropped)
    return urlunsplit(parts._replace(query=urlencode(kept))), options


def restore_cadence(visibility_timeout: float) -> dict[str, Any]:
    """kombu's sweep for unacknowledged messages older than the visibility timeout, every
    ``visibility_timeout / 2`` seconds (between 1 and 100).

    kombu's default sweep runs every ``unacked_restore_interval * unacked_restore_throttle``
    = 10 * 10 s, whatever the timeout, so a short timeout would be honoured only after
    up to 100 s; with the default hour the default cadence is kept.
    """
    period = min(100.0, max(1.0, visibility_timeout / 2))
    interval = min(10.0, period)
    return {"unacked_restore_interval": interval, "unacked_restore_throttle": max(1, round(period / interval))}


def create_celery(settings: Settings | None = None, runtime: Runtime | None = None) -> Celery:
    """Build the Celery app for the agents named by ``AGENT_APP`` (or ``runtime``'s).

    Args:
        settings: settings (default from the environment).
        runtime: an existing runtime to share (the web app passes its own).

    Returns:
        A configured Celery app with the step tasks registered; its ``runtime``
        attribute is the process's :class:`Runtime` (with a Celery dispatcher).

    Raises:
        ConfigurationError, ComponentError: bad settings, components or AGENT_APP.
    """
    runtime = runtime or Runtime(settings or Settings.from_env())
    app = Celery("agent_platform", set_as_current=False)
    app.conf.update(celery_config(runtime))
    if runtime.dispatcher is None:
        runtime.dispatcher = CeleryDispatcher(app, whole_second_delays=app.conf.task_default_queue_type == "quorum")
    app.runtime = runtime  # type: ignore[attr-defined]
    register_steps(app, runtime)
    register_callbacks(app, runtime)
    install_bus(runtime)  # a triggered turn's answer goes back to its caller (finish hook)
    install_worker_hooks(app, runtime)
    return app
