"""Small helpers for the subprocesses dev mode starts: free ports, logs, process groups."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


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


def proc_table() -> list[tuple[int, str, int, int]]:
    """``(pid, state, ppid, pgrp)`` of every process, from ``/proc/*/stat`` (Linux;
    psutil is not required)."""
    table = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2:
            table.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return table


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    return [child for child, _, ppid, _ in proc_table() if ppid == pid]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for child, _, ppid, _ in proc_table():
        children.setdefault(ppid, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_group(proc: subprocess.Popen[Any], wait: float = 5.0) -> None:
    """SIGKILL what is left of a process started with ``start_new_session=True`` (its
    pid is its process group id) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:  # pragma: no cover - the kernel did not reap it
        pass


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process group, wait up to ``timeout`` s, then SIGKILL the group."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc)


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
