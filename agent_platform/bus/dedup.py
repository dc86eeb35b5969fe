"""Deduplication of bus messages by id, kept in Redis so every bus replica sees it.

One key per (subscribing agent, message id)::

    <prefix>bus:seen:<agent>:<message id>   "claimed:<consumer>" (short TTL) or "done" (long TTL)

A consumer first claims the id (``SET NX PX``), then stores the message's effect, then
marks the id ``done``, then acknowledges the stream entry. Each crash point is covered:

- crash after the claim: the claim expires before the entry's idle time lets another
  consumer ``XAUTOCLAIM`` it (``claim_ttl`` < ``bus_claim_idle``), which claims again;
- crash after the effect: the effect itself is idempotent (a workflow id derived from
  the message id is started only if it does not exist; an event is stored by name);
- crash after ``done``: the next consumer finds ``done`` and only acknowledges.

So a message id has its effect once, and a duplicate is acknowledged and dropped.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .. import keys

CLAIMED = "claimed"
DONE = "done"
BUSY = "busy"


class Dedup:
    """Claims and completion records of message ids.

    Args:
        client: a redis-py client with ``decode_responses=True``.
        prefix: the bus component's key prefix.
        claim_ttl: seconds a claim lives (keep it below the bus's claim idle time).
        done_ttl: seconds a handled id is remembered.
    """

    def __init__(self, client: Any, prefix: str, claim_ttl: float, done_ttl: float) -> None:
        self.client = client
        self.prefix = prefix
        self.claim_ttl_ms = max(1, int(claim_ttl * 1000))
        self.done_ttl = max(1, int(done_ttl))

    def key(self, agent: str, message_id: str) -> str:
        """``<prefix>bus:seen:<agent>:<message id>``."""
        return keys.bus_seen(self.prefix, agent, message_id)

    def claim(self, agent: str, message_id: str, consumer: str) -> str:
        """Try to take ``message_id`` for ``agent``.

        Returns:
            ``claimed`` (go on: store the effect, then :meth:`done`), ``done`` (a
            duplicate: acknowledge it), or ``busy`` (another consumer is handling it:
            leave it pending; it is claimed again once idle).
        """
        key = self.key(agent, message_id)
        if self.client.set(key, f"{CLAIMED}:{consumer}", nx=True, px=self.claim_ttl_ms):
            return CLAIMED
        return DONE if self.client.get(key) == DONE else BUSY

    def done(self, agent: str, message_id: str) -> None:
        """Record that the message's effect is stored (kept ``done_ttl`` seconds)."""
        self.client.set(self.key(agent, message_id), DONE, ex=self.done_ttl)

    def is_done(self, agent: str, message_id: str) -> bool:
        """True when the message was handled."""
        return self.client.get(self.key(agent, message_id)) == DONE


def derived_workflow_id(agent: str, message_id: str) -> str:
    """The workflow id a TriggerAction starts: 32 hex digits of SHA-256(agent, message id),
    so the same message always names the same workflow (a second start finds it)."""
    return hashlib.sha256(f"{agent}\x00{message_id}".encode()).hexdigest()[:32]
