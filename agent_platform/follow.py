"""Follow a workflow's step log as it is checkpointed (CLI ``run``/``tail``, SSE)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, overload

from .store.workflows import WorkflowStore
from .timeline import Position, describe_step, follow_timeline

__all__ = ["describe_step", "follow_steps"]


@overload
def follow_steps(
    store: WorkflowStore,
    workflow_id: str,
    after: int = ...,
    timeout: float | None = ...,
    block_ms: int = ...,
    idle: Literal[False] = ...,
) -> Iterator[dict[str, Any]]: ...


@overload
def follow_steps(
    store: WorkflowStore,
    workflow_id: str,
    after: int = ...,
    timeout: float | None = ...,
    block_ms: int = ...,
    *,
    idle: Literal[True],
) -> Iterator[dict[str, Any] | None]: ...


def follow_steps(
    store: WorkflowStore,
    workflow_id: str,
    after: int = -1,
    timeout: float | None = None,
    block_ms: int = 1000,
    idle: bool = False,
) -> Iterator[dict[str, Any] | None]:
    """Yield step records with ``seq > after`` as they are appended (XREAD BLOCK), and
    stop once the workflow has a final status and every record was yielded: the steps of
    :func:`agent_platform.timeline.follow_timeline`, without the model's tokens (the CLI,
    the demo and the SSE route follow that timeline itself).

    Args:
        timeout: seconds to follow at most (None: until the workflow ends).
        block_ms: milliseconds one ``XREAD BLOCK`` waits.
        idle: also yield None after each wait that brought nothing (a caller's chance
            to send a keep-alive).

    Raises:
        WorkflowNotFound: the workflow does not exist (or was purged meanwhile).
        TimeoutError: ``timeout`` passed before the workflow ended.
    """
    # The timeline without the model's tokens: one loop for steps and tokens alike.
    for event in follow_timeline(store, workflow_id, Position(after), tokens=False, block_ms=block_ms, timeout=timeout):
        if event is None:
            if idle:
                yield None
        elif event.kind == "step":
            yield event.data
