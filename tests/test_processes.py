"""The managed-process helper (issue 16: one life cycle for dev mode, the embedded
servers, tests and bench): own session, wait until ready, stop with TERM then KILL.
Real child processes; no mocks."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from agent_platform.processes import ManagedProcess, ProcessFailed

from .dev_helpers import alive
from .workers import wait_until

CHILD = {"value": "set before the fork"}


def test_a_forked_target_runs_in_its_own_session_with_the_parents_objects(tmp_path: Path) -> None:
    """The forked child sees this process's objects (no import by name), leads its own
    session, writes to its log, and its return value is its exit status."""
    log = tmp_path / "child.log"

    def target() -> int:
        print(f"value={CHILD['value']} sid={os.getsid(0)} env={os.environ.get('MARK')}", flush=True)
        return 3

    proc = ManagedProcess("child", target=target, env={**os.environ, "MARK": "yes"}, log_path=log).start()
    assert proc.wait(10) == 3
    assert proc.log().strip() == f"value=set before the fork sid={proc.pid} env=yes"
    assert os.environ.get("MARK") is None  # the parent's environment is untouched


def test_wait_ready_reports_a_child_that_exits_with_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess("crasher", [sys.executable, "-c", "print('no config'); raise SystemExit(2)"],
                          log_path=tmp_path / "c.log").start()  # fmt: skip
    with pytest.raises(ProcessFailed, match=r"(?s)the crasher .* exited with status 2.*no config"):
        proc.wait_ready(lambda: False, 10)


def test_stop_escalates_to_sigkill_for_the_whole_group(tmp_path: Path) -> None:
    """A child that ignores SIGTERM, and its own child, are killed after the timeout."""
    script = "trap '' TERM; sleep 60 & echo $! > " + str(tmp_path / "grandchild") + "; wait"
    proc = ManagedProcess("stubborn", ["/bin/sh", "-c", script], log_path=tmp_path / "s.log").start()
    grandchild_file = tmp_path / "grandchild"
    wait_until(lambda: grandchild_file.exists() and grandchild_file.read_text().strip(), 10)
    grandchild = int(grandchild_file.read_text())
    started = time.monotonic()
    code = proc.stop(timeout=0.5)
    assert code == -9 and time.monotonic() - started < 10
    wait_until(lambda: not alive(grandchild), 5, message="the grandchild to be killed with the group")
    assert proc.stop() == -9  # idempotent
