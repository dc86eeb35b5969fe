"""Slow senders for :class:`~agent_platform.testing.ScriptedModel`: a body or a header
block sent a few bytes at a time, as a stalled proxy or an overloaded server does.

Each pause watches the client's socket, so a client that gives up (closes its
connection) ends the answer at once: :attr:`ScriptedModel.max_in_flight` then tells how
many requests a client really had open at the same time.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trickle:
    """How a trickled answer is sent (see :func:`~agent_platform.testing.trickle`).

    Attributes:
        chunk: bytes sent at each step.
        interval: seconds between two steps.
        content_length: the ``Content-Length`` announced; the JSON body is padded with
            spaces to this size (or the size is raised to the body's).
        in_headers: trickle the header block instead, one ``X-Trickle`` line per step,
            never ending it (the client never sees a status it can act on).
    """

    chunk: int = 10
    interval: float = 2.0
    content_length: int = 300
    in_headers: bool = False


class ClientLeft(ConnectionAbortedError):
    """Raised when a trickled answer ends early: the client closed its connection, or the
    server is stopping (werkzeug drops such a connection silently)."""


def client_waits(sock: socket.socket | None, seconds: float, stopping: threading.Event) -> bool:
    """Wait ``seconds`` unless the client closes its connection or the server stops.

    Returns:
        True after the whole wait; False as soon as the client has left or ``stopping`` is set.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stopping.is_set():
            return False
        step = min(left, 0.05)
        if sock is None:
            time.sleep(step)
            continue
        readable, _, _ = select.select([sock], [], [], step)
        if readable:
            if client_left(sock):
                return False
            time.sleep(step)  # bytes from the client (none expected): keep waiting
    return not stopping.is_set()


def client_left(sock: socket.socket) -> bool:
    """Whether the client closed (or reset) its connection, looking without waiting or
    taking any byte: the socket is readable and reading would give end-of-file."""
    try:
        return not sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: still there
    except OSError:
        return True  # reset, or closed here


def body_chunks(payload: bytes, plan: Trickle, sock: Any, stopping: threading.Event) -> Iterator[bytes]:
    """The body in ``plan.chunk``-byte pieces, one every ``plan.interval`` seconds.

    The first item is empty, so werkzeug sends the status and headers at once. Stops
    early, leaving the body short of its ``Content-Length``, when the client leaves.
    """
    yield b""
    for start in range(0, len(payload), plan.chunk):
        if not client_waits(sock, plan.interval, stopping):
            return
        yield payload[start : start + plan.chunk]


def endless_headers(sock: socket.socket, plan: Trickle, stopping: threading.Event) -> None:
    """Write a status line, then one header line every ``plan.interval`` seconds, for
    ever: returns only by raising :class:`ClientLeft` (or the socket's ConnectionError).
    """
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Trickle: " + b"." * max(1, plan.chunk - 13) + b"\r\n"
    while client_waits(sock, plan.interval, stopping):
        sock.sendall(line)
    raise ClientLeft("the client left during a trickled header block")


def padded(body: bytes, size: int) -> bytes:
    """``body`` followed by spaces up to ``size`` bytes (JSON ignores them)."""
    return body + b" " * max(0, size - len(body))
