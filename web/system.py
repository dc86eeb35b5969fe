"""Liveness, readiness and the agent list."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag

from .errors import RETRY_AFTER_SECONDS

system_tag = Tag(name="system", description="Health and agents")
api = APIBlueprint("system", __name__, abp_tags=[system_tag])
RETRY_AFTER = str(RETRY_AFTER_SECONDS)


@api.get("/health")
def health() -> Any:
    """Liveness: the web process answers (no dependency is checked)."""
    return {"status": "ok"}


@api.get("/ready")
def ready() -> Any:
    """Readiness: Redis of every store, the broker, and at least one live worker; 503
    (with ``Retry-After``) naming what is missing.

    Redis and the broker are checked at once, each within the web app's Redis timeout
    (``AGENT_PLATFORM_WEB_REDIS_TIMEOUT``), so the answer comes within about that time
    even while Redis is stopped; the workers are pinged (1 s) when the broker answers.
    """
    runtime = current_app.extensions["agent_platform"]
    celery = current_app.extensions["agent_platform.celery"]
    budget = runtime.settings.web_redis_timeout + 0.5
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ready")
    try:
        found = {"redis": pool.submit(_redis_check, runtime), "broker": pool.submit(_broker_check, celery)}
        checks: dict[str, Any] = {name: _within(future, budget) for name, future in found.items()}
    finally:
        pool.shutdown(wait=False)  # a check stuck past its budget ends on its own socket timeout
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
        return {"status": "not ready", "missing": missing, "checks": checks}, 503, {"Retry-After": RETRY_AFTER}
    return {"status": "ready", "checks": checks}


def _redis_check(runtime: Any) -> str:
    try:
        for store in runtime.stores():
            store.client.ping()
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


def _broker_check(celery: Any) -> str:
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0)
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


def _within(future: Future[str], seconds: float) -> str:
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        return f"unreachable: no answer within {seconds:g} s"


@api.get("/agents")
def agents() -> Any:
    """The agent registry: every agent with its topic, queue, tools and last worker
    heartbeat; ``stale: true`` when no worker refreshed it lately (or ever)."""
    from agent_platform.registry import list_agents

    return {"agents": list_agents(current_app.extensions["agent_platform"])}
