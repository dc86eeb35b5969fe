"""Layered settings: defaults < environment < explicit arguments.

(The component files configure the stores, the bus and the model client, not these settings.)

Read when :meth:`Settings.from_env` runs (a factory), never at import time.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import ConfigurationError

#: Environment variables read by :meth:`Settings.from_env` (name -> Settings field).
ENV_FIELDS: dict[str, str] = {
    "AGENT_APP": "agent_app",
    "AGENT_PLATFORM_COMPONENTS_PATH": "components_path",
    "REDIS_URL": "redis_url",
    "CELERY_BROKER_URL": "broker_url",  # Celery's own variable; AGENT_PLATFORM_BROKER_URL wins
    "AGENT_PLATFORM_BROKER_URL": "broker_url",
    "AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "AGENT_PLATFORM_VISIBILITY_TIMEOUT": "visibility_timeout",
    "AGENT_PLATFORM_LEASE_TTL": "lease_ttl",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "sweep_interval",
    "AGENT_PLATFORM_DISPATCH_GRACE": "dispatch_grace",
    "AGENT_PLATFORM_LLM_MAX_ATTEMPTS": "llm_max_attempts",
    "AGENT_PLATFORM_LLM_BACKOFF": "llm_backoff",
    "AGENT_PLATFORM_LLM_BACKOFF_MAX": "llm_backoff_max",
    "AGENT_PLATFORM_LLM_RETRY_AFTER_MAX": "llm_retry_after_max",
    "AGENT_PLATFORM_API_TOKEN": "api_token",
    "AGENT_PLATFORM_MAX_REQUEST_BYTES": "max_request_bytes",
    "AGENT_PLATFORM_UI": "ui",
    "AGENT_PLATFORM_WEB_URL": "web_url",
    "FLOWER_URL": "flower_url",
    "AGENT_PLATFORM_FAULT": "fault",
    "AGENT_PLATFORM_REGISTRY_HEARTBEAT": "registry_heartbeat",
    "AGENT_PLATFORM_REGISTRY_STALE_AFTER": "registry_stale_after",
    "AGENT_PLATFORM_BUS_MAXLEN": "bus_maxlen",
    "AGENT_PLATFORM_BUS_BROADCAST_TOPIC": "bus_broadcast_topic",
    "AGENT_PLATFORM_BUS_CLAIM_IDLE": "bus_claim_idle",
    "AGENT_PLATFORM_BUS_BLOCK": "bus_block",
    "AGENT_PLATFORM_BUS_DEDUP_TTL": "bus_dedup_ttl",
    "AGENT_PLATFORM_MAX_LOST_ATTEMPTS": "max_lost_attempts",
    "AGENT_PLATFORM_LOCAL_STEPS": "local_steps",
    "AGENT_PLATFORM_LOCAL_STEPS_BUDGET": "local_steps_budget",
    "AGENT_PLATFORM_TOKEN_STREAM_TTL": "token_stream_ttl",
    "AGENT_PLATFORM_TOKEN_STREAM_MAXLEN": "token_stream_maxlen",
    # limits and timeouts of the operations side (README "Limits and timeouts")
    "AGENT_PLATFORM_WEB_REDIS_TIMEOUT": "web_redis_timeout",
    "AGENT_PLATFORM_BODY_TIMEOUT": "body_timeout",
    "AGENT_PLATFORM_MAX_EVENTS_PER_WORKFLOW": "max_events_per_workflow",
    "AGENT_PLATFORM_CALLBACK_ALLOW": "callback_allow",
}


@dataclass(frozen=True)
class Settings:
    """Process-wide settings of agent-platform.

    Attributes:
        agent_app: ``module:attribute`` (comma-separated for several) naming the agents
            every process loads, like ``FLASK_APP``.
        components_path: folder of Dapr-format component YAML files (None: the default,
            ``$AGENT_PLATFORM_COMPONENTS_PATH`` or ``./components``).
        redis_url: ``REDIS_URL``; overrides the host of every Redis component.
        broker_url: the Celery broker (``CELERY_BROKER_URL`` or ``AGENT_PLATFORM_BROKER_URL``):
            ``redis://``, ``sentinel://...;sentinel://...`` or ``amqp://`` (RabbitMQ,
            quorum queues); default the first agent's state store (see
            :mod:`agent_platform.broker`).
        broker_transport_options: a JSON object merged into Celery's
            ``broker_transport_options`` (e.g. ``{"master_name": "mymaster"}`` for Sentinel).
        visibility_timeout: seconds before the Redis broker redelivers an unacknowledged
            message (kombu's ``visibility_timeout``); keep it above the longest step.
        lease_ttl: seconds a step lease lives without a heartbeat (renewed every ttl/3).
        sweep_interval: seconds between two sweeps for workflows whose step was lost.
        dispatch_grace: seconds a dispatched step may wait in the queue before the
            sweeper dispatches it again (a duplicate is harmless: fencing).
        llm_max_attempts: attempts of one model call (timeouts, connection errors, 429, 5xx).
        llm_backoff: first backoff ceiling in seconds, doubled per attempt, with equal
            jitter (a delay between half the ceiling and the ceiling).
        llm_backoff_max: ceiling of one backoff in seconds.
        llm_retry_after_max: longest ``Retry-After`` honoured, in seconds; a server asking
            for more fails the workflow rather than holding it for hours.
        api_token: when set, every route but ``/health`` needs ``Authorization: Bearer``.
        max_request_bytes: largest accepted HTTP request body (413 above it).
        ui: serve the run inspector's pages under ``/ui/`` (``AGENT_PLATFORM_UI=0``: off).
        web_url: the web app's public base URL, for links the CLI prints (default
            ``http://localhost:$PORT``, 8000 without ``PORT``).
        flower_url: Flower's base URL; the inspector links each step's Celery task there.
        fault: fault-injection point for crash tests: ``exit_after_checkpoint:<kind>``
            SIGKILLs the process once right after the checkpoint of a ``<kind>`` record
            (``start``, ``llm``, ``tool``, ``finish``), ``bus_exit_before_ack``.
        registry_heartbeat: seconds between two registry heartbeats of a worker.
        registry_stale_after: seconds after which ``GET /agents`` marks an agent stale
            (0: three heartbeat intervals).
        bus_maxlen: approximate cap of each topic stream (``XADD MAXLEN ~``).
        bus_broadcast_topic: the topic every agent receives broadcasts on.
        bus_claim_idle: seconds a bus message may stay unacknowledged before another
            consumer claims it (``XAUTOCLAIM`` min-idle-time).
        bus_block: seconds one ``XREADGROUP BLOCK`` waits for messages.
        bus_dedup_ttl: seconds a handled message id is remembered (duplicates dropped).
        max_lost_attempts: runs of one step whose worker died (SIGKILL, out of memory, a
            hard time limit) before the step ends with an error: a tool call's error goes
            to the model, a lost ``llm`` step fails the turn (DESIGN rule 11).
        local_steps: run a turn's sequential steps in the task that checkpointed the step
            before them (every agent; ``AssistantAgent(local_steps=True)`` for one).
        local_steps_budget: seconds one task may keep running local steps before it hands
            the rest of the turn back to the broker.
        token_stream_ttl: seconds a workflow's token stream (the model's deltas for live
            clients, not part of any checkpoint) lives after its last entry.
        token_stream_maxlen: approximate cap on entries of one token stream (``MAXLEN ~``).
        web_redis_timeout: seconds the web app waits for Redis (connect, then each reply)
            before it answers 503 with ``Retry-After``; workers and the bus wait longer
            (``agent_platform.connections``).
        body_timeout: seconds a client has to send a whole request body once its headers
            arrived; then 408 and the connection is closed (gevent workers, see
            ``web/body.py``).
        max_events_per_workflow: events a workflow accepts without waiting for them
            (raise-event of a name it does not wait for: each one a step record); one
            more answers 409 ``too_many_events``. Events it waits for always pass.
            0: no limit.
        callback_allow: comma-separated networks (CIDR) that ``callback_url`` may reach
            although they are loopback, private, link-local... (default none).
    """

    agent_app: str | None = None
    components_path: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    broker_transport_options: str | None = None
    visibility_timeout: float = 3600.0
    lease_ttl: float = 10.0
    sweep_interval: float = 2.0
    dispatch_grace: float = 30.0
    llm_max_attempts: int = 5
    llm_backoff: float = 1.0
    llm_backoff_max: float = 30.0
    llm_retry_after_max: float = 300.0
    api_token: str | None = None
    max_request_bytes: int = 1_000_000
    ui: bool = True
    web_url: str | None = None
    flower_url: str | None = None
    fault: str | None = None
    registry_heartbeat: float = 5.0
    registry_stale_after: float = 0.0
    bus_maxlen: int = 10_000
    bus_broadcast_topic: str = "beacon_channel"
    bus_claim_idle: float = 30.0
    bus_block: float = 1.0
    bus_dedup_ttl: float = 24 * 3600.0
    max_lost_attempts: int = 3
    local_steps: bool = False
    local_steps_budget: float = 60.0
    token_stream_ttl: float = 300.0
    token_stream_maxlen: int = 5000
    web_redis_timeout: float = 2.0
    body_timeout: float = 10.0
    max_events_per_workflow: int = 32
    callback_allow: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, then the environment, then ``overrides``.

        Args:
            env: the environment to read (default ``os.environ``).
            **overrides: explicit values for any field; they win over the environment.

        Raises:
            ConfigurationError: a variable does not validate as its field's type (pydantic,
                lax mode; the message names the variable), or an override names
                no field.
        """
        env = os.environ if env is None else env
        types = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for var, name in ENV_FIELDS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _convert(var, raw, types[name])
        for name, value in overrides.items():
            if name not in types:
                raise ConfigurationError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (dataclasses.replace)."""
        return replace(self, **changes)


def _convert(var: str, raw: str, typ: Any) -> Any:
    """``raw`` as the field's type, validated by pydantic (lax mode: "1.5" is a float,
    "true"/"1"/"on" a bool), or a ConfigurationError naming the variable."""
    try:
        return _adapter(typ).validate_python(raw)
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", "invalid value") if exc.errors() else "invalid value"
        raise ConfigurationError(f"environment variable {var}={raw!r}: {reason}") from None


@functools.cache
def _adapter(typ: Any) -> TypeAdapter[Any]:
    return TypeAdapter(typ)
