"""The engine's Dispatcher on Celery: one task per step kind, one queue per agent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from celery import group

from agent_platform.engine.dispatch import StepMessage
from agent_platform.keys import queue_name

#: Seconds between a tool's soft time limit (which the tool step catches) and the hard one.
HARD_LIMIT_GRACE = 30.0


def task_name(kind: str) -> str:
    """The Celery task name of a step kind: ``agent_platform.step.<kind>`` (what Flower shows)."""
    return f"agent_platform.step.{kind}"


class CeleryDispatcher:
    """Sends step messages with ``send_task`` to the agent's queue ``agent.<name>``.

    Args:
        app: the Celery app (its broker receives the messages).
        whole_second_delays: round a countdown up to whole seconds. RabbitMQ's native
            delayed delivery (quorum queues) counts in whole seconds, and Celery turns
            a countdown below 1 s into ``int(countdown) == 0``, which kombu's
            ``calculate_routing_key`` refuses (``ValueError``).
    """

    def __init__(self, app: Any, whole_second_delays: bool = False) -> None:
        self.app = app
        self.whole_second_delays = whole_second_delays

    def dispatch(self, message: StepMessage, countdown: float | None = None, time_limit: float | None = None) -> None:
        """Enqueue one step; ``countdown`` delays it (Celery ETA), ``time_limit`` sets the
        task's soft time limit in seconds (the hard limit is 30 s later)."""
        self.signature(message, countdown, time_limit).apply_async()

    def dispatch_group(
        self, messages: Sequence[tuple[StepMessage, float | None]], countdown: float | None = None
    ) -> None:
        """Enqueue the tool calls of one assistant message as a Celery ``group`` (no chord:
        the last call to checkpoint enqueues the next step, DESIGN section 3)."""
        group([self.signature(m, countdown, limit) for m, limit in messages]).apply_async()

    def signature(self, message: StepMessage, countdown: float | None = None, time_limit: float | None = None) -> Any:
        """The Celery signature of one step (what :meth:`dispatch` sends)."""
        options: dict[str, Any] = {"queue": queue_name(message.agent)}
        if countdown and countdown > 0:
            options["countdown"] = math.ceil(countdown) if self.whole_second_delays else countdown
        if time_limit:
            options["soft_time_limit"] = time_limit
            options["time_limit"] = time_limit + HARD_LIMIT_GRACE
        return self.app.signature(task_name(message.kind), kwargs=message.to_kwargs(), **options)
