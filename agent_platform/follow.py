"""Follow a workflow's step log as it is checkpointed (CLI ``run``/``tail``, SSE)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Literal, overload

from .store.workflows import WorkflowStore


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
    stop once the workflow has a final status and every record was yielded. The one
    step-log follower of the CLI, the demo, ``AgentRunner.run`` and the SSE route.

    Args:
        timeout: seconds to follow at most (None: until the workflow ends).
        block_ms: milliseconds one ``XREAD BLOCK`` waits.
        idle: also yield None after each wait that brought nothing (a caller's chance
            to send a keep-alive).

    Raises:
        WorkflowNotFound: the workflow does not exist (or was purged meanwhile).
        TimeoutError: ``timeout`` passed before the workflow ended.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last = after
    while True:
        records = store.steps(workflow_id, after=last)
        if not records:
            # A final status is checkpointed with the last record: once it is final,
            # every record is readable (checked again in case it landed meanwhile).
            if store.state(workflow_id).finished and not store.steps(workflow_id, after=last):
                return
            records = store.wait_steps(workflow_id, last, block_ms)
            if not records and idle:
                yield None
        for record in records:
            last = record["seq"]
            yield record
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"workflow {workflow_id} did not end within {timeout} s")


def describe_step(record: dict[str, Any]) -> str:
    """One human line for a step record, e.g. ``[1] llm ok  search_flights({"destination": "Paris"})``."""
    data = record.get("data") or {}
    kind, status = record["kind"], record["status"]
    if kind == "llm":
        calls = data.get("tool_calls") or []
        summary = ", ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in calls)
        summary = summary or repr(_short(data.get("content") or ""))
    elif kind == "tool":
        outcome = f"error: {data['error']}" if "error" in data else json.dumps(data.get("result"))
        summary = f"{data.get('name')}({data.get('arguments')}) -> {_short(outcome, 300)}"
    elif kind == "finish":
        summary = repr(_short(data.get("output") or ""))
    elif kind == "start":
        summary = f"session={data.get('session_id')} history={data.get('history_len')}"
    else:
        summary = _short(json.dumps(data))
    if "error" in data and kind != "tool":
        summary = f"error: {data['error']}"
    head = f"[{record['seq']}] {kind:<6} {status:<5}"
    return f"{head} attempt={record.get('attempt', 1)} {record.get('duration_ms', 0):.0f}ms {summary}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
