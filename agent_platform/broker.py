"""Which Celery broker a process uses, apart from the state stores (DESIGN section 7).

``CELERY_BROKER_URL`` (Celery's own variable) or ``AGENT_PLATFORM_BROKER_URL`` (wins when
both are set) chooses the broker; without either, the broker is the first agent's
``state.redis`` store, as before. Three kinds are supported, each with what kombu needs:

- ``redis://`` / ``rediss://`` (Redis or Valkey, which speaks the same protocol): kombu's
  Redis transport;
- ``sentinel://h1:26379;sentinel://h2:26379`` (kombu's Sentinel transport): the
  ``master_name`` transport option is required (``AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS``,
  or the state store's ``sentinelMasterName`` when the broker is that store);
- ``amqp://`` / ``amqps://`` / ``pyamqp://`` (RabbitMQ): quorum queues, publisher confirms
  and native delayed delivery (set up in ``tasks/app.py``).

A Redis Cluster cannot be a broker (kombu has no cluster transport): a cluster state store
needs one of the URLs above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .components import CLUSTER, SENTINEL, RedisTarget, redact_url
from .errors import ConfigurationError

#: ``BrokerTarget.kind`` values.
REDIS, REDIS_SENTINEL, AMQP = "redis", "sentinel", "amqp"
_KINDS = {"redis": REDIS, "rediss": REDIS, "sentinel": REDIS_SENTINEL, "amqp": AMQP, "amqps": AMQP, "pyamqp": AMQP}


@dataclass(frozen=True)
class BrokerTarget:
    """The Celery broker of a process.

    Attributes:
        url: Celery's ``broker_url`` (password included: log :meth:`redacted_url`).
        kind: ``redis``, ``sentinel`` or ``amqp``.
        transport_options: entries for Celery's ``broker_transport_options`` that come
            from the deployment (``master_name``, ``sentinel_kwargs``, and whatever
            ``AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS`` holds).
    """

    url: str
    kind: str
    transport_options: dict[str, Any] = field(default_factory=dict)

    def redacted_url(self) -> str:
        """:attr:`url` with every password replaced by ``***`` (each ``;``-separated URL)."""
        return ";".join(redact_url(part) for part in self.url.split(";"))


def broker_kind(url: str) -> str:
    """``redis``, ``sentinel`` or ``amqp`` from a broker URL's scheme.

    Raises:
        ConfigurationError: another scheme (the platform is tested on these three).
    """
    scheme = urlsplit(url.split(";", 1)[0].strip()).scheme.lower()
    try:
        return _KINDS[scheme]
    except KeyError:
        raise ConfigurationError(
            f"broker URL {redact_url(url)!r}: scheme {scheme!r} is not supported; use redis:// (Redis, Valkey), "
            "rediss://, sentinel://host:26379;sentinel://... (Redis Sentinel) or amqp:// (RabbitMQ)"
        ) from None


def broker_target(settings: Any, state: RedisTarget) -> BrokerTarget:
    """The broker from ``settings.broker_url``, else from the state store ``state``.

    Args:
        settings: the process's :class:`~agent_platform.settings.Settings`
            (``broker_url``, ``broker_transport_options``).
        state: the first agent's state store (used when no broker URL is set).

    Raises:
        ConfigurationError: ``broker_transport_options`` is not a JSON object; the state
            store is a Redis Cluster and no broker URL is set; a Sentinel broker has no
            ``master_name``; an unsupported scheme.
    """
    options = _transport_options(settings.broker_transport_options)
    if settings.broker_url:
        url = settings.broker_url
    elif state.topology == CLUSTER:
        raise ConfigurationError(
            f"the state store {state.redacted_url()} is a Redis Cluster, which kombu cannot use as a Celery "
            "broker: set CELERY_BROKER_URL (or AGENT_PLATFORM_BROKER_URL) to a Redis, Sentinel or RabbitMQ URL"
        )
    elif state.topology == SENTINEL:
        url = sentinel_broker_url(state)
        options.setdefault("master_name", state.master_name)
        if state.sentinel_password and "sentinel_kwargs" not in options:
            login = {"password": state.sentinel_password}
            options["sentinel_kwargs"] = {
                **login,
                **({"username": state.sentinel_username} if state.sentinel_username else {}),
            }
    else:
        url = state.url
    kind = broker_kind(url)
    if kind == REDIS_SENTINEL and not options.get("master_name"):
        raise ConfigurationError(
            "a sentinel:// broker needs the Sentinel master's name: "
            'AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS=\'{"master_name": "mymaster"}\''
        )
    return BrokerTarget(url, kind, options)


def sentinel_broker_url(state: RedisTarget) -> str:
    """kombu's Sentinel URL for a Sentinel state store: one ``sentinel://`` URL per Sentinel,
    ``;``-separated, each with the data nodes' credentials and db."""
    parts = urlsplit(state.url)
    userinfo = parts.netloc.rpartition("@")[0]
    login = userinfo + "@" if userinfo else ""
    return ";".join(urlunsplit(("sentinel", f"{login}{host}:{port}", parts.path, "", "")) for host, port in state.hosts)


def _transport_options(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(f"AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigurationError("AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS must be a JSON object")
    return value
