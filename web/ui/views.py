"""The inspector's pages: the workflow list, one run, the agent registry; error pages.

Each page also answers ``?partial=1`` with only its live regions (``data-region``
elements with a ``data-version``), which ``static/ui.js`` fetches to refresh the page in
place; with JavaScript off the full page reads the same.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from flask import current_app, render_template, request
from pydantic import ValidationError as PydanticValidationError
from werkzeug.exceptions import HTTPException

from agent_platform.errors import AgentPlatformError, ValidationError
from agent_platform.ids import validate_id
from agent_platform.registry import list_agents
from agent_platform.status import public_status
from agent_platform.store.queries import list_workflows
from agent_platform.store.state import TERMINAL

from ..errors import STATUS_OF
from . import present
from .actions import buttons, runtime
from .timeline import ParallelCalls, data_fields, messages_sent, step_title, timeline, waterfall

if TYPE_CHECKING:
    from flask import Blueprint

log = logging.getLogger("agent_platform.web")

STATUSES = ("PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED", "TERMINATED")
#: Workflows per page of the list.
PAGE_SIZE = 25


def _page(template: str, **context: Any) -> str:
    """Render ``template``, or its live part only for ``?partial=1``."""
    return render_template(template, partial=request.args.get("partial") == "1", **context)


def workflow_list() -> Any:
    """``GET /ui/``: workflows newest first, filtered by status, agent and session, paged."""
    args = request.args
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    agent = validate_id(args["agent"], "agent") if args.get("agent") else None
    session_id = validate_id(args["session_id"], "session_id") if args.get("session_id") else None
    try:
        cursor = max(0, int(args.get("cursor") or 0))
    except ValueError:
        raise ValidationError("cursor must be a whole number") from None
    stores = runtime().stores()
    items, next_cursor = list_workflows(stores, status, session_id, PAGE_SIZE, cursor, agent=agent)
    counts: dict[str, int] = {}
    complete = True
    for store in stores:
        store_counts, store_complete = store.status_counts(session_id, agent)
        complete = complete and store_complete
        for name, n in store_counts.items():
            counts[name] = counts.get(name, 0) + n
    rows = [_row(public_status(state)) for state in items]
    filters = {"status": status, "agent": agent, "session_id": session_id}
    return _page(
        "ui/list.html",
        rows=rows,
        counts=[(name, counts.get(name, 0)) for name in STATUSES],
        total=sum(counts.values()),
        complete=complete,
        filters=filters,
        cursor=cursor,
        next_cursor=next_cursor,
        agents=sorted(runtime().agents),
        statuses=STATUSES,
        purged=args.get("purged"),
        version=f"{cursor}|{next_cursor}|" + "|".join(f"{r['id']}:{r['status']}:{r['steps']}" for r in rows),
    )


def _row(status: dict[str, Any]) -> dict[str, Any]:
    ended = status["runtime_status"] in TERMINAL
    took = present.span_ms(
        status.get("created_at"), status.get("ended_at") or (status.get("last_updated_at") if ended else None)
    )
    return {
        "id": status["instance_id"],
        "agent": status.get("agent"),
        "session_id": status.get("session_id"),
        "status": status["runtime_status"],
        "created_at": status.get("created_at"),
        "duration": present.duration(took),
        "steps": status.get("steps_completed", 0),
        "iteration": status.get("iteration", 0),
        "input": status.get("input"),
        "waiting": (status.get("pending_event") or {}).get("kind") if status["runtime_status"] == "SUSPENDED" else None,
    }


def workflow_run(workflow_id: str) -> Any:
    """``GET /ui/workflows/<id>``: header, input and output, actions, waterfall, steps."""
    rt = runtime()
    store = rt.find_store(workflow_id)
    meta = store.state(workflow_id)
    records = store.steps(workflow_id)
    status = public_status(meta)
    ended = status["runtime_status"] in TERMINAL
    took = present.span_ms(status.get("created_at"), status.get("ended_at") if ended else None)
    bars, ticks = waterfall(meta, records)
    last_seq = records[-1]["seq"] if records else -1
    return _page(
        "ui/run.html",
        wf=status,
        meta=meta,
        ended=ended,
        took=present.duration(took),
        records=records,
        items=timeline(records),
        bars=bars,
        ticks=ticks,
        sent=messages_sent(rt, meta, records),
        offer=buttons(status),
        last_seq=last_seq,
        done=request.args.get("done"),
        version=f"{status['runtime_status']}|{meta.last_updated_at}|{last_seq}",
        offer_version=f"{status['runtime_status']}|{(status.get('pending_event') or {}).get('name')}",
    )


def agents_page() -> Any:
    """``GET /ui/agents``: the registry and a form to start a turn."""
    rt = runtime()
    entries = list_agents(rt)
    version = "|".join(f"{e['name']}:{e.get('heartbeat_at')}:{e.get('stale')}" for e in entries)
    return _page("ui/agents.html", entries=entries, served=sorted(rt.agents), version=version)


def _error_page(status: int, title: str, message: str) -> Any:
    return render_template("ui/error.html", status=status, title=title, message=message), status


def install(blueprint: Blueprint) -> None:
    """Add the pages, the Jinja filters and the HTML error handlers to the blueprint."""
    blueprint.add_url_rule("/", "workflow_list", workflow_list)
    blueprint.add_url_rule("/workflows/<workflow_id>", "workflow_run", workflow_run)
    blueprint.add_url_rule("/agents", "agents", agents_page)
    for name, function in present.FILTERS.items():
        blueprint.add_app_template_filter(function, f"ui_{name}")
    blueprint.add_app_template_global(step_title, "ui_step_title")
    blueprint.add_app_template_global(data_fields, "ui_data_fields")
    blueprint.add_app_template_test(lambda item: isinstance(item, ParallelCalls), "ui_parallel")

    @blueprint.errorhandler(AgentPlatformError)
    def _library(exc: AgentPlatformError) -> Any:
        status, code = next((STATUS_OF[c] for c in type(exc).__mro__ if c in STATUS_OF), (500, "internal_error"))
        if status >= 500:
            log.error("inspector request failed: %s: %s", type(exc).__name__, exc)
        titles = {400: "Bad request", 404: "Not found", 409: "Not possible now"}
        return _error_page(status, titles.get(status, "Error"), str(exc))

    @blueprint.errorhandler(PydanticValidationError)
    def _validation(exc: PydanticValidationError) -> Any:
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(form)'}: {e['msg']}" for e in exc.errors())
        return _error_page(422, "Invalid form", text)

    @blueprint.errorhandler(redis.RedisError)
    def _redis(exc: redis.RedisError) -> Any:
        log.warning("inspector: the state store is unreachable: %s", exc)
        return _error_page(503, "Unavailable", "The state store (Redis) does not answer; try again shortly.")

    @blueprint.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return _error_page(exc.code or 500, exc.name, exc.description or exc.name)

    @blueprint.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        current_app.logger.exception("inspector: unhandled error")
        return _error_page(500, "Internal error", "Internal error; see the server log.")
