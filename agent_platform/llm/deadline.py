"""A deadline for a whole model call, which httpx's timeouts are not.

httpx (under the ``openai`` SDK) applies its timeout to each network operation: a read
that receives a few bytes in time starts the next read with a fresh timeout, so a server
that trickles bytes, or never finishes its headers, holds a synchronous call for ever
(openai/openai-python#2599; encode/httpx#1450, #776). httpx's maintainers point to the
async primitives for a deadline on the whole request: cancelling the task that runs it
closes its connection. :class:`EventLoopThread` runs the SDK's async client on one event
loop per process, in a daemon thread, and bounds each call with :func:`asyncio.timeout`;
the synchronous caller (a Celery step) waits on the result with the same deadline, so
neither a server nor a stuck loop can hold it longer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds the caller waits past the deadline for the loop to report the cancelled call
#: (closing a socket takes microseconds; more means the loop itself is stuck).
CANCEL_GRACE = 1.0


class DeadlineExceeded(TimeoutError):
    """Raised when a call has not finished within its deadline (it was cancelled)."""


class EventLoopThread:
    """One asyncio event loop per process, run by a daemon thread, started on first use.

    A forked child (Celery's prefork pool) starts its own loop on first use: threads do
    not survive ``fork``. A loop that does not answer within the grace period is
    abandoned and the next call starts a fresh one.
    """

    def __init__(self, name: str = "agent-platform-llm") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop of this process (started now if there is none)."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if self._loop is None or self._pid != os.getpid() or not alive:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def run(self, call: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Run ``call()`` on the loop and return its result, within ``deadline`` seconds.

        Args:
            call: makes the awaitable (called in the loop's thread).
            deadline: seconds for the whole call, from now.

        Raises:
            DeadlineExceeded: the call was still running after ``deadline`` seconds; it
                was cancelled (its connection closed) before this is raised.
            Exception: whatever the call raised.
        """
        loop = self.loop()

        async def bounded() -> T:
            try:
                async with asyncio.timeout(deadline):
                    return await call()
            except TimeoutError as exc:
                if isinstance(exc, DeadlineExceeded):
                    raise
                raise DeadlineExceeded(f"did not finish within {deadline:g} s") from exc

        future = asyncio.run_coroutine_threadsafe(bounded(), loop)
        try:
            return future.result(timeout=deadline + CANCEL_GRACE)
        except concurrent.futures.TimeoutError as exc:
            if future.done():
                raise  # the call's own timeout (an httpx one reported as its own error)
            future.cancel()
            self._abandon(loop)
            raise DeadlineExceeded(f"did not finish within {deadline:g} s (its event loop did not answer)") from exc
        except BaseException:
            future.cancel()  # an interrupted caller (a Celery soft time limit) cancels the call
            raise

    def _abandon(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._loop is loop:
                loop.call_soon_threadsafe(loop.stop)
                self._loop = self._thread = None


#: The loop of this process's model calls.
MODEL_CALLS = EventLoopThread()
