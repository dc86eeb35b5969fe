"""Redis connections as redis-py documents them: clients by role and by topology,
blocking reads that the socket timeout cannot cut, and stream replies read the same under
RESP2 and RESP3.

Two kinds of process talk to Redis:

- Workers and the bus ride out a Redis restart: a command that meets a connection or
  timeout error is retried with exponential backoff (redis-py's ``Retry``), for about
  half a minute, then raises.
- The web app answers while Redis is down: a command waits at most
  ``web_redis_timeout`` seconds (``socket_connect_timeout`` and ``socket_timeout``),
  a dropped connection is retried once (a Redis restart between two requests stays
  invisible), a timeout is not retried, so the request ends in a quick 503.

Options written in the URL (``?socket_timeout=2``, ``?protocol=3``...) win over these
defaults, as with ``redis.Redis.from_url``.

A component names one of three topologies (:class:`~agent_platform.components.RedisTarget`),
and :func:`connect` builds its client with the same policy:

- one server: :func:`redis_client`;
- Sentinel: each new connection asks the Sentinels for the current primary
  (``SentinelManagedConnection``); a demoted primary's ``READONLY`` reply drops the
  connection, and the retry reconnects to the new primary;
- Cluster: redis-py's ``RedisCluster`` routes each command to the primary of its key's
  slot, follows ``MOVED`` (slot moved: the slot table is refreshed) and ``ASK`` (slot
  migrating: one command asks the importing node), and retries ``TRYAGAIN`` (a script
  whose keys a migration in progress has split) for about 0.4 s;
  :class:`PatientRedisCluster` waits out a longer migration.
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

#: Socket timeout (s) of worker and bus clients: redis-py 8's default, set explicitly so
#: that older redis-py versions (no timeout) never hang on a stopped Redis either.
PATIENT_SOCKET_TIMEOUT = 5.0


def client_options(fail_fast_timeout: float | None = None) -> dict[str, Any]:
    """The redis-py client options of a patient client (``fail_fast_timeout`` None: workers,
    bus) or of a fail-fast one (the web app); see :func:`redis_client`."""
    if fail_fast_timeout is None:
        timeout = PATIENT_SOCKET_TIMEOUT
        retry = Retry(
            ExponentialBackoff(cap=2.0, base=0.05),
            retries=12,
            supported_errors=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
        )
        connect_timeout = 5.0
    else:
        timeout = connect_timeout = fail_fast_timeout
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1, supported_errors=(redis.ConnectionError,))
    return {
        "decode_responses": True,
        "socket_keepalive": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 15,
        "retry": retry,
    }


def redis_client(url: str, fail_fast_timeout: float | None = None) -> redis.Redis:
    """A redis-py client of ``url`` with ``decode_responses=True``.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL; its query options win.
        fail_fast_timeout: None for a patient client (workers, bus: connection and
            timeout errors retried 12 times with backoff up to 2 s); else the seconds a
            command may wait before it raises ``redis.TimeoutError`` /
            ``redis.ConnectionError`` (the web app), with one retry of a dropped connection.

    Both keep TCP keepalive on and check an idle connection with a PING after 15 s
    (``health_check_interval``).
    """
    return redis.Redis.from_url(url, **client_options(fail_fast_timeout))


def connect(target: RedisTarget, fail_fast_timeout: float | None = None) -> Any:
    """The redis-py client of a component's target, with :func:`client_options`'s policy:
    ``redis.Redis`` for one server or a Sentinel primary, a :class:`PatientRedisCluster`
    for a cluster (a plain ``RedisCluster`` for a fail-fast client: a request had better
    fail than wait out a migration).

    Raises:
        redis.RedisError: a cluster whose slots cannot be read from any seed node
            (``RedisCluster`` reads the slot table when it is built).
    """
    if target.topology == NODE:
        return redis_client(target.url, fail_fast_timeout)
    parts = urlsplit(target.url)
    options = client_options(fail_fast_timeout)
    retry = options.pop("retry")
    options.update(
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
    )
    nodes = [(host.strip("[]"), port) for host, port in target.hosts]
    if target.topology == CLUSTER:
        cls = RedisCluster if fail_fast_timeout is not None else PatientRedisCluster
        return cls(startup_nodes=[ClusterNode(host, port) for host, port in nodes], retry=retry, **options)
    if target.topology == SENTINEL:
        login = {"username": target.sentinel_username} if target.sentinel_username else {}
        if target.sentinel_password:
            login["password"] = target.sentinel_password
        timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")}
        sentinel = Sentinel(nodes, sentinel_kwargs={**timeouts, **login})
        return sentinel.master_for(target.master_name, db=int(parts.path.strip("/") or 0), retry=retry, **options)
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


def socket_timeout_of(client: Any) -> float | None:
    """The read timeout (s) of ``client``'s connections, None when reads wait for ever."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or getattr(
        getattr(client, "nodes_manager", None), "connection_kwargs", {}
    )
    value = kwargs.get("socket_timeout")
    return None if value is None else float(value)


def block_ms_within(client: Any, wanted_ms: int) -> int:
    """How long (ms) an ``XREAD``/``XREADGROUP ... BLOCK`` on ``client`` may wait.

    redis-py reads the reply of a blocking command with the connection's
    ``socket_timeout`` like any other reply, so a BLOCK longer than that timeout ends in
    ``redis.TimeoutError`` instead of an empty answer (chrisguidry/docket#425). The wait
    is therefore capped at half the socket timeout (the other half is the reply's
    margin), and never 0, which would mean "block for ever".
    """
    timeout = socket_timeout_of(client)
    if timeout is None:
        return max(1, wanted_ms)
    return max(1, min(wanted_ms, int(timeout * 500)))


def stream_entries(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """``[(stream key, [(entry id, fields), ...]), ...]`` from an ``XREAD``/``XREADGROUP`` reply.

    RESP2 replies are a list of ``[key, entries]`` pairs; under RESP3 (``?protocol=3``)
    redis-py returns a dict ``{key: [entries]}``. Both read the same here.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(key, _entries(value)) for key, value in reply.items()]
    return [(key, list(entries or [])) for key, entries in reply]


def _entries(value: Any) -> list[Any]:
    # RESP3 nests the entries once more: {key: [[(id, fields), ...]]}
    first = value[0] if value else None
    if isinstance(first, list) and (not first or isinstance(first[0], (list, tuple))):
        return list(first)
    return list(value or [])
