"""Step records: one entry of the step log (DESIGN section 3, "Records")."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from ..store.workflows import now_iso

#: The Celery task id of the step running in this context (set by ``tasks/steps.py``);
#: records made meanwhile carry it as ``task_id``, so Flower's view of a step can be found.
current_task_id: ContextVar[str | None] = ContextVar("current_task_id", default=None)


class StepClock:
    """Times one step: ``started_at`` now, ``finished_at`` and ``duration_ms`` on :meth:`record`."""

    def __init__(self) -> None:
        self.started_at = now_iso()
        self._t0 = time.perf_counter()

    def record(self, kind: str, status: str, attempt: int, worker: str, data: dict[str, Any]) -> dict[str, Any]:
        """A step record (``seq`` is assigned by the store when it is appended).

        Args:
            kind: ``start``, ``llm``, ``tool``, ``finish`` (or ``event``/``message``).
            status: ``ok``, ``error`` or ``retry``.
            attempt: 1, 2, ... for this step.
            worker: the Celery hostname that ran it.
            data: the kind's payload (assistant message, tool call and result, output).
        """
        return {
            "kind": kind,
            "status": status,
            "attempt": attempt,
            "started_at": self.started_at,
            "finished_at": now_iso(),
            "duration_ms": round((time.perf_counter() - self._t0) * 1000, 3),
            "worker": worker,
            "data": data,
            **({"task_id": task_id} if (task_id := current_task_id.get()) else {}),
        }
