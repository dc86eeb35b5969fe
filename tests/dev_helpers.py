"""Helpers of the dev-mode tests: a dev-mode program as a real subprocess (its own
session), a components folder pointing where the test says, process-tree checks (psutil).

Dev mode uses the Redis its components name when it answers; the repository's
components name localhost:6379, the machine's Redis, which tests never use: every test
here writes its own components folder (a test Redis, or a closed port so that dev mode
starts its embedded one) and passes free ports for the web app and the Dapr API.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import psutil

from agent_platform.processes import ManagedProcess, ProcessFailed, free_port
from agent_platform.store.state import TERMINAL as TERMINAL_STATUSES

from .workers import REPO, wait_until

TERMINAL = tuple(sorted(TERMINAL_STATUSES))

#: The components of the Dapr Agents tutorial (names as in its ``components/`` folder).
TUTORIAL_COMPONENTS = {
    "workflowstatestore": "state.redis",
    "registrystatestore": "state.redis",
    "conversationstore": "state.redis",
    "messagepubsub": "pubsub.redis",
}


def write_components(folder: Path, redis_host: str) -> Path:
    """Write the tutorial's components into ``folder``, each with ``redisHost: redis_host``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, kind in TUTORIAL_COMPONENTS.items():
        (folder / f"{name}.yaml").write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
            f"metadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n"
            f'  - name: redisHost\n    value: {redis_host}\n  - name: redisPassword\n    value: ""\n'
            "  - name: keyPrefix\n    value: none\n"
        )
    return folder


def closed_port() -> int:
    """A port nothing listens on (a moment ago): components naming it make dev mode embed Redis."""
    return free_port()


def dev_env(tmp_path: Path, components: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without the platform's variables, with a data folder, free ports
    for the web app and the Dapr API, and ``components`` (default: a folder naming a
    closed port, so dev mode starts its embedded Redis)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "AGENT_PLATFORM_", "REDIS_URL", "AGENT_APP"))
    }
    if components is None:
        components = write_components(tmp_path / "components", f"127.0.0.1:{closed_port()}")
    env.update(
        PYTHONPATH=str(REPO),
        AGENT_PLATFORM_DATA_DIR=str(tmp_path / "data"),
        AGENT_PLATFORM_COMPONENTS_PATH=str(components),
        AGENT_PLATFORM_APP_PORT=str(free_port()),
        AGENT_PLATFORM_DAPR_HTTP_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def start_program(argv: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> ManagedProcess:
    """Start a dev-mode program (e.g. ``python examples/x.py``) in its own session."""
    return ManagedProcess(Path(argv[-1]).name, argv, env=env, cwd=cwd, log_path=log).start()


def start_dev(app: str, env: dict[str, str], log: Path) -> ManagedProcess:
    """``agent-platform dev APP`` on the port of ``AGENT_PLATFORM_APP_PORT``."""
    argv = [sys.executable, "-m", "agent_platform.cli", "dev", app, "--port", env["AGENT_PLATFORM_APP_PORT"]]
    return start_program(argv, env, log)


def base_url(env: dict[str, str]) -> str:
    """The web app's URL of a dev-mode program started with ``env``."""
    return f"http://127.0.0.1:{env['AGENT_PLATFORM_APP_PORT']}"


def sidecar_url(env: dict[str, str]) -> str:
    """The Dapr workflow API's URL of a dev-mode program started with ``env``."""
    return f"http://127.0.0.1:{env['AGENT_PLATFORM_DAPR_HTTP_PORT']}"


def wait_web(proc: ManagedProcess, env: dict[str, str], timeout: float = 90) -> None:
    """Wait until dev mode printed its ``ready`` line and ``/health`` answers."""

    def up() -> bool:
        if "ready: curl" not in proc.log():
            return False
        try:
            return httpx.get(f"{base_url(env)}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        proc.wait_ready(up, timeout, 0.2)
    except ProcessFailed as exc:
        raise AssertionError(str(exc)) from None


def family(proc: ManagedProcess) -> set[int]:
    """The program and every process below it."""
    assert proc.pid is not None
    return {proc.pid, *proc.children(recursive=True)}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def sigterm_and_wait(proc: ManagedProcess, timeout: float = 40) -> int | None:
    """SIGTERM the program only (as ``kill`` or a supervisor does) and wait; its exit status.
    Whatever is left is killed afterwards (a test's clean-up, not its verdict)."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    proc.kill()
    return code


def assert_all_gone(pids: set[int], timeout: float = 15) -> None:
    """Wait until none of ``pids`` runs."""
    wait_until(lambda: not any(alive(p) for p in pids), timeout, message=f"processes {sorted(pids)} to exit")


def wait_final(http: httpx.Client, path: str, timeout: float, key: str = "runtime_status") -> dict:
    """Poll ``GET path`` until its ``key`` is a final status; return the body."""
    return wait_until(
        lambda: (s := http.get(path).json()).get(key) in TERMINAL and s,
        timeout,
        interval=0.2,
        message=f"{path} to end",
    )


def kill_all(pids: set[int]) -> None:
    """SIGKILL whichever of ``pids`` still runs (a test's clean-up after a failure)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
