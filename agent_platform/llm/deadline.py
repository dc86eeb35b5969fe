"""A deadline for a whole model call, which httpx's timeouts are not.

httpx (under the ``openai`` SDK) applies its timeout to each network operation: a read
that receives a few bytes in time starts the next read with a fresh timeout, so a server
that trickles bytes, or never finishes its headers, holds a synchronous call for ever
(openai/openai-python#2599; encode/httpx#1450, #776). httpx's maintainers point to the
async primitives for a deadline on the whole request: cancelling the task that runs it
closes its connection. :class:`CallerEventLoop` runs the SDK's async client on an event
loop that the calling thread runs itself, for the length of each call, bounded by
:func:`asyncio.timeout`.

No other thread takes part: a call hands nothing over, and nothing runs on the loop
between two calls. (A loop run by a thread of its own, as this module first had, cost
each call two thread hand-offs, each one a wait for the scheduler on a busy machine, and
each streamed piece a third.)

A process that gevent has monkey-patched (``celery worker -P gevent``) does not use it:
its greenlets share one OS thread, so one asyncio running loop; see :mod:`.green`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """Raised when a call has not finished within its deadline (it was cancelled)."""


class CallerEventLoop:
    """One asyncio event loop per thread that makes model calls, run by that thread
    during each of its calls (:meth:`run`), made on first use.

    A forked child (Celery's prefork pool) makes its own loop on first use: a loop does
    not survive ``fork``. A thread that already runs an event loop (a notebook, an async
    application) cannot run another one: its calls run on one helper thread of the
    process, while the caller waits, as a synchronous call does.
    """

    def __init__(self, name: str = "agent-platform-llm") -> None:
        self.name = name
        self._local = threading.local()
        self._lock = threading.Lock()
        self._helper: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """This thread's loop (made now if there is none, or it is a parent process's)."""
        owned: _OwnedLoop | None = getattr(self._local, "owned", None)
        if owned is None or owned.pid != os.getpid() or owned.loop.is_closed():
            owned = self._local.owned = _OwnedLoop()
        return owned.loop

    def run(self, call: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Run ``call()`` on this thread's loop and return its result, within ``deadline`` seconds.

        Args:
            call: makes the awaitable (called on the loop).
            deadline: seconds for the whole call, from now.

        Raises:
            DeadlineExceeded: the call was still running after ``deadline`` seconds; it
                was cancelled (its connection closed) before this is raised.
            Exception: whatever the call raised. An exception raised in this thread
                meanwhile (a Celery soft time limit) cancels the call, then propagates.
        """
        if _loop_running():
            return self._helper_thread().submit(self.run, call, deadline).result()

        async def bounded() -> T:
            try:
                async with asyncio.timeout(deadline):
                    return await call()
            except TimeoutError as exc:
                if isinstance(exc, DeadlineExceeded):
                    raise
                raise DeadlineExceeded(f"did not finish within {deadline:g} s") from exc

        loop = self.loop()
        task = loop.create_task(bounded())
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():  # interrupted between two steps of the call: end it now
                task.cancel()
                try:
                    loop.run_until_complete(task)
                except BaseException:  # noqa: S110 - the interruption is what the caller gets
                    pass
            raise

    def _helper_thread(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._helper is None or self._helper[0] != os.getpid():
                pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self.name)
                self._helper = (os.getpid(), pool)
            return self._helper[1]


class _OwnedLoop:
    """A thread's loop, closed when the thread (or the :class:`CallerEventLoop`) is gone."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()

    def __del__(self) -> None:
        # A parent process's loop is left alone: closing it here would unregister its
        # descriptors from the epoll instance the parent shares.
        if self.pid == os.getpid() and not self.loop.is_running():
            self.loop.close()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: The loops of this process's model calls.
MODEL_CALLS = CallerEventLoop()
