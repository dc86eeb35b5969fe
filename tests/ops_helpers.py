"""Helpers of the operations tests: an SSE client, Procfile processes, a Redis with a
password, process-tree checks. Real processes and real HTTP; waits have deadlines."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
import redis
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from agent_platform.embedded_redis import find_redis_server
from agent_platform.processes import ManagedProcess, ProcessFailed, free_port

from .helpers import PLATFORM_VARS
from .workers import REPO, wait_until

PROCFILE = REPO / "Procfile"


# -- Server-Sent Events -----------------------------------------------------------------


@dataclass
class SseEvent:
    """One dispatched event: ``event`` (default ``message``), ``data`` (JSON-decoded), ``id``."""

    event: str
    data: Any
    id: str | None


class SseStream:
    """A ``GET`` of a ``text/event-stream``, read event by event (comments are skipped).

    Opening returns once the response headers arrived. Reads time out after
    ``read_timeout`` s without a byte (the server sends a comment every ~15 s at most).
    """

    def __init__(
        self, client: httpx.Client, url: str, headers: dict[str, str] | None = None, read_timeout: float = 20.0
    ) -> None:
        timeout = httpx.Timeout(10.0, read=read_timeout)
        self._context = client.stream("GET", url, headers=headers, timeout=timeout)
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()
        self.comments: list[str] = []

    def next_event(self) -> SseEvent | None:
        """The next event, or None when the server ended the stream."""
        fields: dict[str, list[str]] = {}
        for line in self._lines:
            if line == "":
                if "data" in fields:
                    data = "\n".join(fields["data"])
                    event_id = fields["id"][-1] if "id" in fields else None
                    return SseEvent(fields.get("event", ["message"])[-1], json.loads(data), event_id)
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        return None

    def read_to_end(self) -> list[SseEvent]:
        """Every remaining event until the server ends the stream."""
        events = []
        while (event := self.next_event()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- Procfile processes -----------------------------------------------------------------


def procfile_command(process_type: str) -> str:
    """The command of ``process_type`` in the repository's Procfile, as written."""
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process_type:
            return command.strip()
    raise AssertionError(f"no {process_type!r} line in {PROCFILE}")


def process_env(changes: dict[str, str]) -> dict[str, str]:
    """This environment without the platform's variables, with ``changes``, and with this
    interpreter's scripts folder first on PATH (gunicorn, celery, honcho live there)."""
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARS and k not in ("PYTHONPATH", "PORT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(changes)
    return env


class Proc(ManagedProcess):
    """A command in its own session, its output in a log file; started at once."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO) -> None:
        super().__init__(Path(argv[0]).name, argv, env=env, cwd=cwd, log_path=log_path)
        self.start()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) is in the output; fail early if the process ends."""
        try:
            return self.wait_ready(lambda: re.search(pattern, self.log()), timeout)  # type: ignore[no-any-return]
        except ProcessFailed as exc:
            raise AssertionError(f"{exc} (waiting for {pattern!r})") from None

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process only (not its group) and wait; returns its exit code."""
        self.send_signal(signal.SIGTERM)
        self.wait(timeout)
        return self.returncode

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM, group: bool = True) -> int | None:
        """SIGTERM the whole group, then SIGKILL what is left."""
        return super().stop(timeout=timeout, sig=sig, group=group)


def shell_procfile_line(process_type: str, env: dict[str, str], log_path: Path) -> Proc:
    """Run one Procfile line as honcho and Heroku do (``sh -c``), ``exec`` so that the
    server itself gets the signals."""
    return Proc(["/bin/sh", "-c", f"exec {procfile_command(process_type)}"], env, log_path)


def wait_http(url: str, timeout: float = 60.0, auth: Any = None, status: int = 200) -> httpx.Response:
    """Poll ``url`` until it answers ``status``."""

    def probe() -> httpx.Response | None:
        try:
            response = httpx.get(url, timeout=5, auth=auth)
        except httpx.TransportError:
            return None
        return response if response.status_code == status else None

    return wait_until(probe, timeout, 0.2, f"{url} to answer {status}")


# -- processes --------------------------------------------------------------------------


def process_groups() -> dict[int, int]:
    """pid -> process group id of every live (non-zombie) process (psutil)."""
    groups = {}
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            groups[proc.pid] = os.getpgid(proc.pid)
        except ProcessLookupError:
            pass
    return groups


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (psutil; empty when it is gone)."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


# -- a Redis with a password ------------------------------------------------------------


class PasswordRedis:
    """A private redis-server with ``requirepass`` (no persistence) on a free port."""

    def __init__(self, data_dir: Path, password: str) -> None:
        self.password = password
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", password,
            "--save", "", "--appendonly", "no", "--dir", str(data_dir),
        ]  # fmt: skip
        self._proc = Proc(args, dict(os.environ), data_dir / "redis.log")
        client = redis.Redis(port=self.port, password=password)
        try:
            wait_until(lambda: self._ping(client), 10, 0.05, "the password-protected redis-server")
        finally:
            client.close()

    def _ping(self, client: redis.Redis) -> bool:
        if not self._proc.alive():
            raise AssertionError(f"redis-server exited:\n{self._proc.log()}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._proc.stop()


def dotenv(values: dict[str, str]) -> str:
    """A ``.env`` file's text (honcho's format: KEY=value lines)."""
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


# -- a callback receiver ----------------------------------------------------------------


class CallbackReceiver:
    """A tiny HTTP endpoint (werkzeug, in a thread) on ``host`` that records the requests
    it receives and answers them with the statuses in ``answers`` (then 200); with
    ``redirect_to``, every answer is a 302 to that URL."""

    def __init__(self, answers: list[int] | None = None, host: str = "127.0.0.1", redirect_to: str = "") -> None:
        self.answers = list(answers or [])
        self.redirect_to = redirect_to
        self.host = host
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = make_server(host, 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.port}/hook"

    @Request.application  # type: ignore[arg-type]
    def app(self, request: Request) -> Response:
        with self.lock:
            self.posts.append(
                {"method": request.method, "headers": dict(request.headers), "json": request.get_json(silent=True)}
            )
            status = self.answers.pop(0) if self.answers else 200
        if self.redirect_to:
            return Response("", status=302, headers={"Location": self.redirect_to})
        return Response("{}", status=status, mimetype="application/json")

    def count(self) -> int:
        with self.lock:
            return len(self.posts)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


# -- raw sockets --------------------------------------------------------------------------


def slow_body_connection(port: int, path: str = "/start-workflow") -> socket.socket:
    """A connection that sends a request's headers with ``Content-Length: 100``, then 10
    bytes of the body, and nothing more (case C16)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + b"Content-Length: 100\r\n\r\n" + b'{"task": "')
    return sock


def trickling_body_connection(port: int, path: str = "/start-workflow") -> tuple[socket.socket, threading.Event]:
    """A connection that sends a request's headers with ``Content-Length: 100``, then one
    byte of the body every 0.5 s from a thread, until the returned event is set or the
    server closes (case C16: each byte would restart a per-read timeout)."""
    sock = slow_body_connection(port, path)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            try:
                if select.select([sock], [], [], 0)[0]:  # the server answered: stop (no RST on its 408)
                    return
                sock.send(b"x")
            except (OSError, ValueError):  # closed meanwhile (by the server, or the test: fd -1)
                return

    threading.Thread(target=trickle, daemon=True).start()
    return sock, stop


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when (monotonic)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic()


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (``/proc/net/tcp`` and
    ``tcp6``: ``0100007F`` is 127.0.0.1, ``00000000`` every IPv4 interface)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found
