"""Topics as Redis Streams with one consumer group per subscribing agent (DESIGN section 5).

Keys, in the ``pubsub.redis`` component named by the agent's ``message_bus_name``::

    <prefix>topic:<topic>     stream; each entry has one field, ``event``: the JSON envelope

Delivery follows the Redis Streams documentation ("Consumer groups"): ``XADD ... MAXLEN ~ N``
appends (the cap is approximate, so trimming stays cheap); ``XREADGROUP ... BLOCK``
delivers each entry to one consumer of a group and keeps it in the group's pending
entries list (PEL) until ``XACK``; ``XAUTOCLAIM`` hands entries that stayed pending for
``min-idle-time`` (their consumer died) to a live consumer. A group created with id
``0`` also delivers the entries added before it existed, so a message published before
its subscriber first started is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from .. import keys
from ..connections import block_ms_within, is_cluster, stream_entries
from .messages import CloudEvent

FIELD = "event"


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a consumer.

    Attributes:
        topic: the topic name (not the key).
        entry_id: the stream entry id (``<ms>-<seq>``), what ``XACK`` takes.
        raw: the envelope's JSON text, or None when the entry was trimmed or deleted
            while pending.
    """

    topic: str
    entry_id: str
    raw: str | None


class StreamBus:
    """Publish to and consume from topics of one ``pubsub.redis`` component.

    Args:
        client: a redis-py client with ``decode_responses=True``.
        prefix: the component's key prefix ("" for none).
        maxlen: approximate cap of each topic stream (``MAXLEN ~``).
    """

    def __init__(self, client: redis.Redis, prefix: str = "", maxlen: int = 10_000) -> None:
        self.client = client
        self.prefix = prefix
        self.maxlen = maxlen

    def key(self, topic: str) -> str:
        """The stream key of ``topic``: ``<prefix>topic:<topic>``."""
        return keys.topic(self.prefix, topic)

    def ensure_group(self, topic: str, group: str, start_id: str = "0") -> bool:
        """Create consumer group ``group`` on ``topic`` (``XGROUP CREATE ... MKSTREAM``).

        Args:
            start_id: ``0`` to deliver every entry still in the stream, ``$`` for new
                entries only.

        Returns:
            True when created, False when it already existed (``BUSYGROUP``).

        Raises:
            redis.RedisError: any other error.
        """
        try:
            self.client.xgroup_create(self.key(topic), group, id=start_id, mkstream=True)
            return True
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise

    def publish(self, topic: str, event: CloudEvent, group: str | None = None) -> str:
        """Append ``event`` to ``topic`` (``XADD key MAXLEN ~ maxlen * event <json>``).

        Args:
            group: when set, this consumer group is created first (id ``0``) if missing,
                so the entry waits for a subscriber that has never run.

        Returns:
            The stream entry id.
        """
        if group:
            self.ensure_group(topic, group, "0")
        return str(self.client.xadd(self.key(topic), {FIELD: event.model_dump_json()}, maxlen=self.maxlen))

    def read(
        self, topics: list[str], group: str, consumer: str, count: int = 10, block_ms: int = 1000
    ) -> list[Delivery]:
        """New entries of ``topics`` for ``consumer`` of ``group`` (``XREADGROUP ... BLOCK``).

        Every topic must have the group (see :meth:`ensure_group`). Waits up to
        ``block_ms`` when there is nothing (less when the client's socket timeout is
        shorter: ``connections.block_ms_within``); returns [] then. RESP2 and RESP3
        replies read the same. On Redis Cluster the topics' streams live in different
        slots, and one ``XREADGROUP`` may only name keys of one slot: each topic is read on
        its own, first without blocking, then blocking on each in turn for a share of the wait.
        """
        block = block_ms_within(self.client, block_ms)
        streams = {self.key(t): t for t in topics}
        if not is_cluster(self.client) or len(streams) == 1:
            return self._read(streams, group, consumer, count, block)
        for wait in (None, max(1, block // len(streams))):
            for key, topic in streams.items():
                found = self._read({key: topic}, group, consumer, count, wait)
                if found:
                    return found
        return []

    def _read(
        self, streams: dict[str, str], group: str, consumer: str, count: int, block_ms: int | None
    ) -> list[Delivery]:
        reply: Any = self.client.xreadgroup(group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms)
        return [
            Delivery(streams[key], entry_id, (fields or {}).get(FIELD))
            for key, entries in stream_entries(reply)
            for entry_id, fields in entries
        ]

    def claim(self, topic: str, group: str, consumer: str, min_idle_ms: int, count: int = 100) -> list[Delivery]:
        """Take over the entries pending longer than ``min_idle_ms`` (``XAUTOCLAIM ... JUSTID``),
        then read them (``XRANGE``).

        The PEL is walked in id order (each call scans at most ``10 x count`` entries of
        it; a group's PEL stays small: each consumer holds at most one read batch).
        JUSTID also returns entries trimmed or deleted while pending (Redis 6.2 keeps them
        in the PEL, Redis 7 drops them); they come back with ``raw=None`` so that the
        caller acknowledges them.
        """
        found: list[Delivery] = []
        key = self.key(topic)
        start = "0-0"
        for _ in range(100):  # at most 100 x count entries per pass
            ids = self.client.xautoclaim(key, group, consumer, min_idle_ms, start, count=count, justid=True)
            for entry_id in ids:
                entries: Any = self.client.xrange(key, entry_id, entry_id)
                found.append(Delivery(topic, entry_id, entries[0][1].get(FIELD) if entries else None))
            if len(ids) < count:
                break
            ms, seq = str(ids[-1]).split("-")
            start = f"{ms}-{int(seq) + 1}"  # the PEL is ordered by id: go on after the last one
        return found

    def ack(self, topic: str, group: str, entry_id: str) -> None:
        """Acknowledge an entry: it leaves the group's PEL (``XACK``)."""
        self.client.xack(self.key(topic), group, entry_id)

    def pending(self, topic: str, group: str) -> int:
        """How many entries the group has delivered and not acknowledged (``XPENDING``)."""
        try:
            return int(self.client.xpending(self.key(topic), group)["pending"])
        except redis.ResponseError:  # no such stream or group
            return 0

    def forget_idle_consumers(self, topic: str, group: str, idle_ms: int) -> int:
        """Delete consumers with nothing pending and idle for ``idle_ms`` (dead bus
        processes leave their names in the group); returns how many."""
        removed = 0
        try:
            consumers: list[dict[str, Any]] = self.client.xinfo_consumers(self.key(topic), group)
        except redis.ResponseError:
            return 0
        for info in consumers:
            if int(info.get("pending", 0)) == 0 and int(info.get("idle", 0)) > idle_ms:
                self.client.xgroup_delconsumer(self.key(topic), group, info["name"])
                removed += 1
        return removed


def bus_for(runtime: Any, agent: Any) -> StreamBus:
    """The :class:`StreamBus` of an agent's ``message_bus_name`` component.

    Raises:
        ComponentError: the component is missing or not a Redis one.
    """
    client, prefix = runtime.redis_for(agent.message_bus_name)
    return StreamBus(client, prefix, runtime.settings.bus_maxlen)
