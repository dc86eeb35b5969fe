"""One helper for the life cycle of a child process (STYLE 15): start it in its own
session, wait until it is ready, stop it with SIGTERM then SIGKILL.

Dev mode, the embedded Redis and model servers, the tests and the benchmarks all start
their processes through :class:`ManagedProcess`. A child is either a command
(``subprocess.Popen`` with ``start_new_session=True``) or a Python callable run in a
forked child (``os.fork``): the forked form lets dev mode serve agents that exist only
as objects in the calling process (built inside a function, a notebook cell, a test).

Each child leads its own session, so its process group holds it and everything it
starts (a Celery worker's pool, gunicorn's workers): :meth:`ManagedProcess.stop` signals
the whole group, the way a terminal's Ctrl-C does.

Example:
    >>> server = ManagedProcess("redis", ["redis-server", "--port", "0"], log_path="r.log")  # doctest: +SKIP
    >>> server.start().wait_ready(lambda: ping(), timeout=10)  # doctest: +SKIP
    >>> server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from .errors import ConfigurationError

__all__ = ["ManagedProcess", "ProcessFailed", "free_port", "gunicorn_command", "tail"]


class ProcessFailed(ConfigurationError):
    """Raised when a managed process exits or stays unready past its deadline at start-up
    (the message carries the tail of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that the kernel says was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tail(path: Path | str | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ("" when missing or unreadable)."""
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class _Forked:
    """A forked child with the part of ``Popen``'s interface :class:`ManagedProcess` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode


class ManagedProcess:
    """A child process in its own session: start, wait until ready, stop (TERM, then KILL).

    Args:
        name: a short name for messages (``"worker"``, ``"redis-server"``).
        argv: the command to run; or None with ``target``.
        target: a callable run in a forked child instead of a command; its return value
            (an int, or None for 0) or ``SystemExit`` code is the exit status.
        env: the child's whole environment (default: this process's).
        cwd: the child's working directory.
        log_path: file receiving the child's stdout and stderr (appended); None keeps
            this process's.
        stdout: for commands only, a ``subprocess`` stdout value (e.g. ``PIPE``) used
            instead of ``log_path``; stdin is then a pipe too (closing it may ask the
            child to exit).
        text: for commands with ``stdout``, open the pipes in text mode.

    Attributes:
        proc: the ``Popen`` (or forked child) once started, else None.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str] | None = None,
        *,
        target: Callable[[], int | None] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        stdout: Any = None,
        text: bool = False,
    ) -> None:
        if (argv is None) == (target is None):
            raise ValueError("give either argv or target")
        self.name = name
        self.argv = list(argv) if argv is not None else None
        self.target = target
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.log_path = Path(log_path) if log_path is not None else None
        self.stdout = stdout
        self.text = text
        self.proc: Any = None

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"

    # -- state --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group id), or None before start."""
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child ended (negative: killed by that signal)."""
        return self.proc.poll() if self.proc is not None else None

    def alive(self) -> bool:
        """Whether the child was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def children(self, recursive: bool = False) -> list[int]:
        """The pids of the child's children (all descendants with ``recursive``), from
        psutil (installed with the ``dev`` extra); [] when it is gone."""
        import psutil

        if self.pid is None:
            return []
        try:
            return [p.pid for p in psutil.Process(self.pid).children(recursive=recursive)]
        except psutil.NoSuchProcess:
            return []

    def log(self) -> str:
        """The child's log file so far ("" without one)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> Self:
        """Start the child in a new session; returns self.

        Raises:
            OSError: the command cannot be executed (not found, not executable).
        """
        if self.alive():
            return self
        if self.argv is not None:
            self.proc = self._popen()
        else:
            self.proc = self._fork()
        return self

    def _popen(self) -> subprocess.Popen[Any]:
        assert self.argv is not None
        if self.stdout is not None:
            return subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.PIPE, stdout=self.stdout,
                text=self.text, start_new_session=True,
            )  # fmt: skip
        log = open(self.log_path, "ab") if self.log_path is not None else None  # noqa: SIM115
        try:
            return subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT if log is not None else None, start_new_session=True,
            )  # fmt: skip
        finally:
            if log is not None:
                log.close()  # the child holds its own copy

    def _fork(self) -> _Forked:
        assert self.target is not None
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return _Forked(pid)
        # The child: never return into the caller's stack, never run its atexit hooks.
        code = 1
        try:
            os.setsid()
            _die_with_parent(parent)
            self._child_setup()
            result = self.target()
            code = int(result or 0)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _child_setup(self) -> None:
        """In a forked child: the parent's signal handlers and asyncio wake-up fd off,
        stdin from /dev/null, output (fds 1 and 2, ``sys.stdout``/``sys.stderr``) to the
        log, the environment and folder set."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if self.log_path is not None:
            log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
            # sys.stdout may not be fd 1 (a notebook's kernel stream, pytest's capture).
            sys.stdout = open(1, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        if self.env is not None:
            os.environ.clear()
            os.environ.update(self.env)
        if self.cwd is not None:
            os.chdir(self.cwd)

    def wait_ready(self, ready: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
        """Poll ``ready()`` until it returns a truthy value (returned), while the child lives.

        Raises:
            ProcessFailed: the child exited first, or ``timeout`` seconds passed; the
                message names the child and carries the tail of its log. The child is
                left as it is (stop it).
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ProcessFailed(self._failure(f"exited with status {self.returncode}"))
            value = ready()
            if value:
                return value
            if time.monotonic() > deadline:
                raise ProcessFailed(self._failure(f"was not ready within {timeout:g} s"))
            time.sleep(interval)

    def _failure(self, what: str) -> str:
        where = f"; {self.log_path}:\n{tail(self.log_path, 30)}" if self.log_path is not None else ""
        return f"the {self.name} (pid {self.pid}) {what}{where}"

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child's main process only (not its group)."""
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (it and what it started)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the child to exit; its status or None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM, group: bool = True) -> int | None:
        """Stop the child: ``sig`` (to its group, or with ``group=False`` to the main
        process only, e.g. Celery's warm shutdown), up to ``timeout`` s to exit, then
        SIGKILL to the whole group; idempotent.

        Returns:
            The exit status (negative: the signal that ended it), or None if never started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if group:
                self.signal_group(sig)
            else:
                self.send_signal(sig)
            self.wait(timeout)
        self.kill()
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL the child's whole process group now and reap the child."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGKILL)
        self.wait(5.0)
        stream = getattr(self.proc, "stdin", None)
        if stream is not None and not stream.closed:
            stream.close()
        stream = getattr(self.proc, "stdout", None)
        if stream is not None and not stream.closed:
            stream.close()


def gunicorn_command(*args: str) -> list[str]:
    """The web process as the Procfile runs it: ``python -m gunicorn --config
    <web/gunicorn.conf.py> web:create_app() *args`` (gevent workers, see that file);
    flags in ``args`` (``--bind``, ``--workers``...) win over the file."""
    spec = importlib.util.find_spec("web")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise FileNotFoundError("the 'web' package of agent-platform is not installed")
    config = str(Path(folders[0]) / "gunicorn.conf.py")
    return [sys.executable, "-m", "gunicorn", "--config", config, "web:create_app()", *args]


def _die_with_parent(parent: int) -> None:
    """In a forked child on Linux: ask the kernel for SIGTERM when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so dev mode's worker and web app never outlive a dev
    mode that was SIGKILLed (a notebook kernel restart). Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
