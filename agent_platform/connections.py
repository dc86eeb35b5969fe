"""Redis connections as redis-py documents them: clients by role, blocking reads that
the socket timeout cannot cut, and stream replies read the same under RESP2 and RESP3.

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
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

#: Socket timeout (s) of worker and bus clients: redis-py 8's default, set explicitly so
#: that older redis-py versions (no timeout) never hang on a stopped Redis either.
PATIENT_SOCKET_TIMEOUT = 5.0


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
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_keepalive=True,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=15,
        retry=retry,
    )


def socket_timeout_of(client: Any) -> float | None:
    """The read timeout (s) of ``client``'s connections, None when reads wait for ever."""
    pool = getattr(client, "connection_pool", None)
    value = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
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
