"""redis-py clients for the three Redis topologies a component may name (see
:class:`~agent_platform.components.RedisTarget`): one server, a primary behind Sentinel,
a Redis Cluster.

Every client decodes responses to ``str``, keeps TCP alive, checks idle connections and
retries connection errors and timeouts with exponential backoff (redis-py's ``Retry``),
so a Redis restart, a Sentinel failover or a cluster's resharding costs a step some
seconds, never the step itself:

- Sentinel: each new connection asks the Sentinels for the current primary
  (``SentinelManagedConnection``); a demoted primary's ``READONLY`` reply drops the
  connection, and the retry reconnects to the new primary.
- Cluster: redis-py's ``RedisCluster`` routes each command to the primary of its key's
  slot, follows ``MOVED`` (slot moved: the slot table is refreshed) and ``ASK`` (slot
  migrating: one command asks the importing node), and retries ``TRYAGAIN`` (a
  multi-key command or script whose keys are split by a migration in progress) for about
  0.4 s; :class:`PatientRedisCluster` waits out a longer migration (see there).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterError, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .components import CLUSTER, NODE, SENTINEL, RedisTarget

#: Attempts after the first failure (about 20 s in all with the backoff below): longer
#: than a Sentinel failover (``down-after-milliseconds`` + election) or a Redis restart.
RETRIES = 12
#: Connection errors a Redis server may answer while it restarts or fails over.
RETRY_ON = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=RETRIES)


def _connection_options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
    }


def redis_client(url: str) -> redis.Redis:
    """A client of one Redis server (``redis://``, ``rediss://`` or ``unix://`` URL) that
    survives a Redis restart: retries connection errors with exponential backoff."""
    return redis.Redis.from_url(url, retry=_retry(), retry_on_error=RETRY_ON, **_connection_options())


def connect(target: RedisTarget) -> Any:
    """The redis-py client of a component's target: ``redis.Redis`` for one node or a
    Sentinel primary, a :class:`PatientRedisCluster` (a ``redis.cluster.RedisCluster``)
    for a cluster.

    Raises:
        redis.RedisError: a cluster whose slots cannot be read from any seed node
            (``RedisCluster`` reads the slot table when it is built).
    """
    if target.topology == NODE:
        return redis_client(target.url)
    parts = urlsplit(target.url)
    credentials: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "ssl": parts.scheme == "rediss",
    }
    nodes = [(host.strip("[]"), port) for host, port in target.hosts]
    if target.topology == CLUSTER:
        return PatientRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            retry=_retry(),
            **credentials,
            **_connection_options(),
        )
    if target.topology == SENTINEL:
        sentinel_kwargs = {
            "socket_connect_timeout": 5,
            "socket_timeout": 5,
            **({"username": target.sentinel_username} if target.sentinel_username else {}),
            **({"password": target.sentinel_password} if target.sentinel_password else {}),
        }
        sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_kwargs)
        return sentinel.master_for(
            target.master_name,
            db=int(parts.path.strip("/") or 0),
            retry=_retry(),
            retry_on_error=RETRY_ON,
            **credentials,
            **_connection_options(),
        )
    raise ValueError(f"unknown Redis topology {target.topology!r}")


class PatientRedisCluster(RedisCluster):
    """A ``RedisCluster`` that waits out a slot migration instead of failing the step.

    While ``redis-cli --cluster reshard`` moves a slot key by key, a script over a
    workflow's keys (all in one slot) is refused with ``TRYAGAIN`` as long as some of them
    have moved and others not; redis-py retries 16 times over about 0.4 s, then raises
    ``ClusterError("TTL exhausted.")``. A refused command did not run, so this client
    runs it again with backoff (redis-py's ``Retry``, about 25 s in all) on
    ``TryAgainError`` and ``ClusterError`` (which ``ClusterDownError`` is too: a cluster
    without a primary for the slot, during a failover, refuses commands as well).
    """

    MIGRATION_RETRY = Retry(
        ExponentialBackoff(cap=1.0, base=0.05), retries=30, supported_errors=(TryAgainError, ClusterError)
    )

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_command
        return self.MIGRATION_RETRY.call_with_retry(lambda: run(*args, **kwargs), lambda _: None)


def is_cluster(client: Any) -> bool:
    """True for a ``RedisCluster`` client (commands over several keys must share a slot)."""
    return isinstance(client, RedisCluster)
