"""Small helpers for the subprocesses dev mode starts: free ports, logs, process groups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


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


def kill_group(proc: subprocess.Popen[bytes], wait: float = 5.0) -> None:
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


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
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
