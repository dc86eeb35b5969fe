"""Liveness, readiness and the agent list."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag

system_tag = Tag(name="system", description="Health and agents")
api = APIBlueprint("system", __name__, abp_tags=[system_tag])


@api.get("/health")
def health() -> Any:
    """Liveness: the web process answers (no dependency is checked)."""
    return {"status": "ok"}


@api.get("/ready")
def ready() -> Any:
    """Readiness: Redis of every store, the broker, and at least one live worker; 503 naming what is missing."""
    runtime = current_app.extensions["agent_platform"]
    celery = current_app.extensions["agent_platform.celery"]
    checks: dict[str, Any] = {}
    try:
        for store in runtime.stores():
            store.client.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    if checks["broker"] == "ok":
        try:
            replies = celery.control.ping(timeout=1.0) or []
            checks["workers"] = len(replies) if replies else "none alive"
        except Exception as exc:
            checks["workers"] = f"unknown: {type(exc).__name__}"
    else:
        checks["workers"] = "unknown: broker unreachable"
    missing = [name for name, value in checks.items() if value != "ok" and not isinstance(value, int)]
    if missing:
        return {"status": "not ready", "missing": missing, "checks": checks}, 503
    return {"status": "ready", "checks": checks}


@api.get("/agents")
def agents() -> Any:
    """The agent registry: every agent with its topic, queue, tools and last worker
    heartbeat; ``stale: true`` when no worker refreshed it lately (or ever)."""
    from agent_platform.registry import list_agents

    return {"agents": list_agents(current_app.extensions["agent_platform"])}
