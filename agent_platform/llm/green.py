"""Model calls in a process that gevent has monkey-patched (``celery worker -P gevent``,
``WORKER_POOL=gevent``): the SDK's synchronous client, bounded by gevent, no asyncio.

:mod:`.deadline` runs each call on an asyncio loop that the calling thread runs itself.
Under gevent's monkey patching that deadlocks as soon as two calls overlap:
``threading.local`` is per greenlet, but asyncio's running loop is per OS thread. While
one greenlet's loop waits in its (patched) selector, the next greenlet's call finds a
loop running, hands itself to the helper thread (a greenlet too), which finds the same
running loop and hands the call to itself. gevent's own way is a blocking call that
yields while it waits: the synchronous ``openai.OpenAI`` (httpx over gevent's sockets),
bounded by gevent for the whole call. :func:`run` raises a :class:`gevent.Timeout` in
the calling greenlet wherever it waits; :func:`stream` reads the body in a greenlet of
its own, killed at the deadline, so that the listener of the deltas runs in the caller's
greenlet and is never cut short. Either way a server that trickles bytes, or never ends
its headers, is cut at the deadline as on the asyncio path, and httpx closes the
connection of the request it was in. (The SDK turns any ``Exception`` of a request into
``APIConnectionError``, but lets ``gevent.Timeout`` and ``GreenletExit``, both
``BaseException``, through.)

gevent is imported only in a process that has imported it already (:func:`patched`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .deadline import DeadlineExceeded


class _Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T")
C = TypeVar("C", bound=_Closable)


def patched() -> bool:
    """Whether gevent has monkey-patched this process's sockets (a ``-P gevent`` Celery
    worker, a gevent gunicorn worker): its model calls are then made here, not on asyncio."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def run(call: Callable[[], T], deadline: float) -> T:
    """``call()`` in this greenlet, within ``deadline`` seconds.

    Args:
        call: a blocking call on gevent's sockets (the SDK's synchronous client).
        deadline: seconds for the whole call, from now.

    Raises:
        DeadlineExceeded: ``call()`` was still running after ``deadline`` seconds; it was
            interrupted where it waited (its connection closed) before this is raised.
        Exception: whatever ``call()`` raised.
    """
    import gevent

    timer = gevent.Timeout(deadline)
    timer.start()
    try:
        return call()
    except gevent.Timeout as exc:
        if exc is not timer:  # an outer timeout (a Celery time limit): not ours
            raise
        raise DeadlineExceeded(f"did not finish within {deadline:g} s") from None
    finally:
        timer.close()


def stream(
    open_stream: Callable[[], Any],
    feed: Callable[[bytes], None],
    tick: Callable[[], None],
    deadline: float,
    every: float,
) -> None:
    """Read the body of the response ``open_stream()`` returns, giving each piece to
    ``feed``, within ``deadline`` seconds; call ``tick()`` every ``every`` seconds meanwhile.

    A greenlet of its own sends the request and reads the body; ``feed`` and ``tick`` run
    in the calling greenlet, one at a time, as they run on the asyncio path's loop: a
    listener that writes to Redis is never cut in the middle of a command, and two of its
    writes never interleave. At the deadline the reading greenlet is killed where it
    waits (the response closed, its connection with it) and nothing more reaches ``feed``.

    Args:
        open_stream: sends the request; returns the unread ``httpx.Response``
            (``OpenAI.post(..., stream=True, cast_to=httpx.Response)``), read and closed here.
        feed: takes each piece of the body, as it arrives.
        tick: called every ``every`` seconds from the start, between two pieces.
        deadline: seconds for the whole call, from now.
        every: seconds between two ticks.

    Raises:
        DeadlineExceeded: the body had not ended after ``deadline`` seconds.
        Exception: whatever ``open_stream``, the reading, ``feed`` or ``tick`` raised.
    """
    import gevent
    from gevent.queue import Empty, Queue

    pieces: Any = Queue()  # bytes, then None at the end, or the exception that ended it

    def read() -> None:
        try:
            response = open_stream()
            try:
                for piece in response.iter_bytes():
                    pieces.put(piece)
            finally:
                response.close()
        except Exception as exc:  # raised in the caller's greenlet (gevent's hub would print it)
            pieces.put(exc)
        else:
            pieces.put(None)

    reading = gevent.spawn(read)
    end = time.monotonic() + deadline
    next_tick = time.monotonic() + every
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                raise DeadlineExceeded(f"did not finish within {deadline:g} s")
            if now >= next_tick:
                tick()
                next_tick = time.monotonic() + every
                continue
            try:
                piece = pieces.get(timeout=min(end, next_tick) - now)
            except Empty:
                continue
            if piece is None:
                return
            if isinstance(piece, Exception):
                raise piece
            feed(piece)
    finally:
        reading.kill()  # nothing when it has ended; else interrupted now, its response closed


@dataclass
class _Held(Generic[C]):
    client: C
    calls: int = 0
    retired: bool = False


class SharedClient(Generic[C]):
    """One synchronous SDK client for all the greenlets of a process (httpx's connection
    pool serves them all), made on first use; a forked child makes its own.

    :meth:`retire` makes later calls use a new client; the retired one is closed once
    the calls that use it have ended (closing it under them would break them).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: _Held[C] | None = None
        self._pid = os.getpid()

    @contextlib.contextmanager
    def use(self, make: Callable[[], C]) -> Iterator[C]:
        """The current client (made by ``make()`` when there is none), for one call."""
        with self._lock:
            if self._held is None or self._pid != os.getpid():
                self._held, self._pid = _Held(make()), os.getpid()
            held = self._held
            held.calls += 1
        try:
            yield held.client
        finally:
            with self._lock:
                held.calls -= 1
                idle = held.retired and not held.calls
            if idle:
                held.client.close()

    def retire(self) -> None:
        """Make the next call use a new client; close this one when no call uses it."""
        with self._lock:
            held = self._held if self._pid == os.getpid() else None
            self._held = None
            if held is None:
                return
            held.retired = True
            idle = not held.calls
        if idle:
            held.client.close()
