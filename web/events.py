"""``GET /workflows/<id>/events``: the step log as Server-Sent Events (DESIGN section 6).

Every step record is one event (``id: <seq>``, ``event: step``, ``data: <record JSON>``)
as soon as it is checkpointed (Redis Streams ``XREAD BLOCK`` on the step log); while a
model streams, ``event: token`` events (``id: <seq>:<entry>``, ``data: {"seq", "attempt",
"text"?, "tool_calls"?, "finish_reason"?}``) come before the step that records the reply,
and ``event: retry`` (``{"seq", "attempt"}``) says that the text streamed so far for that
step is void (its model call is made again); ``?tokens=0`` leaves both out (see
:mod:`agent_platform.timeline`). Once the workflow has a final status and every record
was sent, one ``event: status`` carries the status JSON of ``GET /workflows/<id>`` and
the stream ends. ``Last-Event-ID`` (or ``?last_event_id=``) resumes after that event:
nothing is skipped or sent twice. A comment line goes out every ~15 s while nothing
happens, so proxies keep the connection and a vanished client is noticed. If the
workflow is purged meanwhile, or Redis stops answering, one ``event: stream_error``
(``{"error": {"code", "message"}}``) ends the stream.

Each open stream holds one connection of the web server (a greenlet of the Procfile's
gevent workers; a thread under a threaded server) and one Redis connection taken from
the process's pool for the stream's lifetime (a blocking ``XREAD`` must not share a
connection; it goes back at the end).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Response, current_app, request, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from agent_platform.errors import WorkflowNotFound
from agent_platform.jsontext import dumps
from agent_platform.store.workflows import WorkflowStore
from agent_platform.timeline import Position, follow_timeline

from .schemas import ErrorResponse, WorkflowPath

log = logging.getLogger("agent_platform.web")

#: Seconds without an event after which a keep-alive comment line is sent.
KEEPALIVE_SECONDS = 15.0
#: Milliseconds one ``XREAD BLOCK`` waits; the status is re-read after each empty wait.
BLOCK_MS = 1000

events_tag = Tag(name="events", description="Follow a workflow live (Server-Sent Events)")
api = APIBlueprint("events", __name__, abp_tags=[events_tag], abp_responses={"4XX": ErrorResponse})

EVENT_STREAM = {
    "description": (
        "text/event-stream: `step` events (id = seq, data = step record), `token` and `retry` events "
        "while a model streams (id = <seq>:<entry>), then one `status` event"
    ),
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


class EventsQuery(BaseModel):
    """Query of ``GET /workflows/<id>/events``."""

    last_event_id: str | None = Field(
        default=None,
        pattern=r"^(-1|[0-9]{1,15})(:[0-9]{1,20}-[0-9]{1,20})?$",
        description="Resume after this event id: a step seq or <seq>:<token entry> (the Last-Event-ID header wins)",
    )
    tokens: bool = Field(default=True, description="Send the model's `token` and `retry` events (0: steps only)")


@api.get("/workflows/<workflow_id>/events", responses={200: EVENT_STREAM})
def workflow_events(path: WorkflowPath, query: EventsQuery) -> Any:
    """Server-Sent Events: each step as it is checkpointed (the model's tokens before the
    step that records them), then the final status.

    ``Last-Event-ID`` (or ``?last_event_id=``) resumes after that event.
    """
    after = _last_event_id(query.last_event_id)
    store = current_app.extensions["agent_platform"].find_store(path.workflow_id)  # 404 before streaming
    stream = stream_with_context(_events(store, path.workflow_id, after, query.tokens))
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _last_event_id(from_query: str | None) -> Position:
    header = request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return Position() if from_query is None else Position.parse(from_query)
    return Position.parse(header)  # ValidationError (400) when it is not one of our ids


def sse(data: Any, event: str | None = None, event_id: int | str | None = None) -> str:
    """One Server-Sent Event: optional ``id:`` and ``event:`` lines, a ``data:`` line of JSON."""
    head = "" if event_id is None else f"id: {event_id}\n"
    head += "" if event is None else f"event: {event}\n"
    return f"{head}data: {dumps(data, separators=(',', ':'))}\n\n"


def _events(shared: WorkflowStore, workflow_id: str, after: Position, tokens: bool) -> Iterator[str]:
    yield ": connected\n\n"  # sends the headers now: the client knows it is following
    client = None
    quiet_since = time.monotonic()
    try:
        # One connection from the shared pool for the whole stream (redis-py's
        # single_connection_client), handed back when the stream ends or the client leaves.
        client = redis.Redis(connection_pool=shared.client.connection_pool, single_connection_client=True)
        store = WorkflowStore(client, "", shared.base)
        for event in follow_timeline(store, workflow_id, after, tokens=tokens, block_ms=BLOCK_MS):
            if event is not None:
                quiet_since = time.monotonic()
                yield sse(event.data, event.kind, event.id)
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
    except WorkflowNotFound:
        yield _stream_error("workflow_not_found", f"workflow {workflow_id!r} was purged")
    except redis.RedisError as exc:
        log.warning("event stream of %s ended: %s: %s", workflow_id, type(exc).__name__, exc)
        yield _stream_error("unavailable", "the state store is unreachable; reconnect with Last-Event-ID")
    finally:
        if client is not None:
            client.close()


def _stream_error(code: str, message: str) -> str:
    # Not "error": that name is EventSource's own connection-error event.
    return sse({"error": {"code": code, "message": message}}, "stream_error")
