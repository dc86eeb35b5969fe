"""Dev mode as a service handle: what ``agent.start()`` and ``AgentRunner.serve()`` return.

A :class:`DevService` runs :class:`~agent_platform.devmode.DevMode` until it is stopped:
by :meth:`DevService.stop`, Ctrl-C (SIGINT) or SIGTERM; then it stops every process it
started and the program goes on (exit status 0). It is usable both ways Dapr Agents'
``start()`` is written:

- ``agent.start()`` in a plain script (no event loop running) serves in the foreground
  and returns once stopped;
- ``await agent.start()`` inside ``asyncio.run(main())`` serves from a background thread
  and the ``await`` returns once stopped; while awaited in the main thread, SIGINT and
  SIGTERM stop it (``loop.add_signal_handler``);
- ``agent.start()`` while an event loop runs (a notebook cell) serves in the background
  and returns at once; ``agent.stop()`` (or ``await`` on it) ends it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Self

from .devmode import DevMode, Interrupted, say

if TYPE_CHECKING:
    from .agent import AssistantAgent

__all__ = ["DevService", "run_dev"]


class DevService:
    """Dev mode for ``agents`` until stopped; awaitable (see the module docstring).

    Args:
        agents: the agent objects to serve.
        port: the web app's port (0: a worker only, no web app).
        host: the address the web app binds.

    Attributes:
        dev: the running :class:`DevMode` once ready (None before and after).
        error: what ended the service other than a stop request, if anything.
    """

    def __init__(self, agents: list[AssistantAgent], port: int = 8001, host: str = "127.0.0.1") -> None:
        self.agents = agents
        self.port = port
        self.host = host
        self.dev: DevMode | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # -- running --------------------------------------------------------------------------
    def launch(self) -> Self:
        """Serve in the foreground when no event loop runs in this thread (returns once
        stopped), else in a background thread (returns at once); returns self."""
        if self._thread is not None or self._done.is_set():
            return self
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.run()
        else:
            self.start_background()
        return self

    def run(self) -> None:
        """Serve in this thread until stopped. In the main thread, Ctrl-C and SIGTERM stop
        it (SIGTERM is handled like Ctrl-C while it runs).

        Raises:
            ConfigurationError: dev mode could not start, or one of its processes died.
        """
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
        try:
            self._serve()
        except (KeyboardInterrupt, Interrupted):
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self._finish()

    def start_background(self) -> Self:
        """Serve from a daemon thread; returns self at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._background, name="agent-platform-dev", daemon=True)
            self._thread.start()
        return self

    def _background(self) -> None:
        try:
            self._serve()
        except Interrupted:
            pass
        except BaseException as exc:  # reported by await / wait_ready
            self.error = exc
            say(f"dev mode failed: {exc}")
        finally:
            self._finish()

    def _serve(self) -> None:
        with DevMode(self.agents, port=self.port, host=self.host, stopping=self._stop) as dev:
            self.dev = dev
            self._ready.set()
            if dev.web is not None:
                say(f"ready: curl -XPOST {dev.base_url}/start-workflow -H 'Content-Type: application/json' "
                     "-d '{\"task\": \"I want to find flights to Paris\"}'   (Ctrl-C stops)")  # fmt: skip
            while not self._stop.wait(0.5):
                dev.check()

    def _finish(self) -> None:
        self.dev = None
        say("stopped")
        self._ready.set()  # wake wait_ready() on failure too
        self._done.set()

    # -- control ------------------------------------------------------------------------
    def stop(self, wait: bool = True) -> None:
        """Ask the service to stop; with ``wait``, return once every process is stopped."""
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._done.wait()

    @property
    def finished(self) -> bool:
        """Whether the service ran and stopped (a new one is needed to serve again)."""
        return self._done.is_set()

    @property
    def running(self) -> bool:
        """Whether the service is up (ready and not stopped)."""
        return self.dev is not None and not self._done.is_set()

    def wait_ready(self, timeout: float | None = None) -> DevMode:
        """Block until dev mode is ready; returns it.

        Raises:
            ConfigurationError (or what ended it): dev mode failed to start.
            TimeoutError: not ready within ``timeout`` seconds.
            RuntimeError: it was stopped before it was ready.
        """
        if not self._ready.wait(timeout):
            raise TimeoutError(f"dev mode was not ready within {timeout} s")
        if self.error is not None:
            raise self.error
        if self.dev is None:
            raise RuntimeError("dev mode was stopped")
        return self.dev

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._done.is_set():
            self.start_background()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self.stop, False)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):  # not a Unix loop
                    pass
        try:
            await loop.run_in_executor(None, self._done.wait)
        except asyncio.CancelledError:
            self.stop(wait=False)
            raise
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        if self.error is not None:
            raise self.error


def run_dev(agents: list[AssistantAgent], port: int = 8001, host: str = "127.0.0.1") -> None:
    """Run dev mode in the foreground until Ctrl-C or SIGTERM, then stop every process
    it started (``agent-platform dev``)."""
    DevService(agents, port=port, host=host).run()
