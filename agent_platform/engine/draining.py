"""Whether this worker is shutting down: a flag in memory shared with its pool processes.

Celery's warm shutdown lets the task in flight finish; a task running local steps must
then stop after the step in flight and hand the rest of the turn back to the broker. The
flag is an anonymous shared mapping created when this module is imported, in the worker's
main process before the prefork pool forks, so the pool processes see it set.
"""

from __future__ import annotations

import mmap

_flag = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: shared with forked children


def set_draining(on: bool = True) -> None:
    """Mark this worker (and its pool processes) as shutting down."""
    _flag[0] = 1 if on else 0


def draining() -> bool:
    """True once the worker began a warm shutdown: start no new local step."""
    return _flag[0] == 1
