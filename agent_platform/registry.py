"""The agent registry: which agents run, and whether their workers are alive (DESIGN section 5).

One Redis hash per registry, in the ``state.redis`` component named by the agent's
``agents_registry_store_name``::

    <prefix><agents_registry_key>    hash: agent name -> JSON entry

An entry is the agent's :meth:`~agent_platform.agent.AssistantAgent.describe` (name,
role, goal, topic, queue, tools) plus ``heartbeat_at`` (ISO 8601 UTC), ``heartbeat_ms``
(epoch milliseconds), ``heartbeat_interval`` (s) and ``hostname`` (the worker that wrote
it). Every worker rewrites the entries of the agents whose queues it consumes every
``registry_heartbeat`` seconds (:class:`RegistryHeartbeat`); an entry older than
``registry_stale_after`` seconds (default three intervals) is listed as ``stale``.
Entries are never deleted: an agent whose workers all stopped stays, marked stale.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import keys
from .store.workflows import now_iso, now_ms
from .supervision import fault_point, supervise

log = logging.getLogger("agent_platform.registry")

STALE_INTERVALS = 3


class AgentRegistry:
    """One registry hash.

    Args:
        client: a redis-py client with ``decode_responses=True``.
        key: the full hash key (``<prefix><agents_registry_key>``).
    """

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.key = key

    def heartbeat(self, agent: Any, hostname: str, interval: float) -> dict[str, Any]:
        """Write ``agent``'s entry with the current time (``HSET``); returns the entry."""
        entry = {
            **agent.describe(),
            "heartbeat_at": now_iso(),
            "heartbeat_ms": now_ms(),
            "heartbeat_interval": interval,
            "hostname": hostname,
        }
        self.client.hset(self.key, agent.name, json.dumps(entry))
        return entry

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry by agent name (``HGETALL``); unreadable entries are skipped."""
        found: dict[str, dict[str, Any]] = {}
        for name, raw in self.client.hgetall(self.key).items():
            try:
                found[name] = json.loads(raw)
            except ValueError:
                log.warning("registry %s: entry %r is not JSON; skipped", self.key, name)
        return found


def registry_for(runtime: Any, agent: Any) -> AgentRegistry:
    """The registry an agent writes to (its ``agents_registry_store_name`` and ``_key``).

    Raises:
        ComponentError: the component is missing or not a Redis one.
    """
    client, prefix = runtime.redis_for(agent.agents_registry_store_name)
    return AgentRegistry(client, keys.registry(prefix, agent.agents_registry_key))


def stale_after(settings: Any, entry: dict[str, Any] | None = None) -> float:
    """Seconds after which an entry is stale: ``registry_stale_after`` when set, else
    three heartbeat intervals (the entry's own interval when it says)."""
    if settings.registry_stale_after:
        return float(settings.registry_stale_after)
    interval = (entry or {}).get("heartbeat_interval") or settings.registry_heartbeat
    return STALE_INTERVALS * float(interval)


def list_agents(runtime: Any) -> list[dict[str, Any]]:
    """The entries of every registry the loaded agents use, each with ``stale`` (bool)
    and ``age_s`` (seconds since the last heartbeat); loaded agents that never sent a
    heartbeat are listed too (``registered: false``, stale). Sorted by name."""
    registries: dict[str, AgentRegistry] = {}
    for agent in runtime.agents.values():
        registry = registry_for(runtime, agent)
        registries.setdefault(f"{id(registry.client)}:{registry.key}", registry)
    now = now_ms()
    listed: dict[str, dict[str, Any]] = {}
    for registry in registries.values():
        for name, entry in registry.entries().items():
            age = max(0.0, (now - int(entry.get("heartbeat_ms") or 0)) / 1000)
            listed[name] = {
                **entry,
                "registered": True,
                "age_s": round(age, 3),
                "stale": age > stale_after(runtime.settings, entry),
            }
    for agent in runtime.agents.values():
        if agent.name not in listed:
            listed[agent.name] = {**agent.describe(), "registered": False, "heartbeat_at": None, "stale": True}
    return [listed[name] for name in sorted(listed)]


class RegistryHeartbeat(threading.Thread):
    """Keeps the registry entries of a worker's agents fresh, every ``registry_heartbeat`` s.

    The first beat also creates the agents' consumer groups on the bus (id ``0`` on
    their own topic), so messages sent to them before their bus first runs are kept.

    Args:
        runtime: the worker's runtime.
        hostname: the worker's name (the Celery hostname).
        agents: a callable returning the names of the agents this worker serves (read
            at each beat: the queues a worker consumes may change).

    An unexpected error restarts the loop with a log line (``agent_platform.supervision``).
    """

    def __init__(self, runtime: Any, hostname: str, agents: Callable[[], Iterable[str]]) -> None:
        super().__init__(name="agent-platform-registry", daemon=True)
        self.runtime = runtime
        self.hostname = hostname
        self.agents = agents
        self.stopped = threading.Event()
        self._subscribed: set[str] = set()

    def beat(self) -> list[str]:
        """Write one heartbeat per served agent; returns their names."""
        interval = self.runtime.settings.registry_heartbeat
        names = [name for name in self.agents() if name in self.runtime.agents]
        for name in names:
            agent = self.runtime.agents[name]
            registry_for(self.runtime, agent).heartbeat(agent, self.hostname, interval)
            if name not in self._subscribed:
                self._subscribe(agent)
        return names

    def _subscribe(self, agent: Any) -> None:
        from .bus.streams import bus_for

        bus = bus_for(self.runtime, agent)
        bus.ensure_group(agent.topic, agent.name, "0")
        broadcast = self.runtime.settings.bus_broadcast_topic
        if broadcast != agent.topic:
            bus.ensure_group(broadcast, agent.name, "$")
        self._subscribed.add(agent.name)

    def run(self) -> None:
        supervise("registry", self._loop, self.stopped)

    def _loop(self) -> None:
        interval = self.runtime.settings.registry_heartbeat
        while True:
            started = time.monotonic()
            fault_point("registry", self.runtime.settings.fault)
            try:
                self.beat()
            except Exception as exc:  # Redis away or a bad component: try again next beat
                log.warning("registry heartbeat failed: %s", exc)
            if self.stopped.wait(max(0.0, interval - (time.monotonic() - started))):
                return
