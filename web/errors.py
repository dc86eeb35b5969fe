"""One place that maps errors to HTTP: JSON ``{"error": {"code", "message"}}``, never a trace."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, jsonify
from kombu.exceptions import OperationalError
from pydantic import ValidationError as PydanticValidationError
from werkzeug.exceptions import HTTPException

from agent_platform import errors

log = logging.getLogger("agent_platform.web")

#: Each library error class -> (HTTP status, error code). The first match in MRO order wins.
STATUS_OF: dict[type[Exception], tuple[int, str]] = {
    errors.CallbackNotAllowed: (422, "callback_url_not_allowed"),
    errors.ValidationError: (400, "invalid_request"),
    errors.WorkflowNotFound: (404, "workflow_not_found"),
    errors.AgentNotFound: (404, "agent_not_found"),
    errors.InvalidTransition: (409, "invalid_transition"),
    errors.IdempotencyConflict: (409, "idempotency_conflict"),
    errors.TooManyEvents: (409, "too_many_events"),
    errors.ConfigurationError: (503, "misconfigured"),
    errors.AgentPlatformError: (500, "internal_error"),
}

#: Errors of an unreachable Redis (state store) or broker: 503 with ``Retry-After``,
#: raised after at most ``web_redis_timeout`` seconds (``agent_platform.connections``).
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, still loading its data (BusyLoadingError)
    redis.exceptions.TimeoutError,  # stopped or overloaded: no reply within the socket timeout
    OperationalError,  # kombu: the broker cannot take the message
)
#: Seconds a client is asked to wait before trying again after a 503.
RETRY_AFTER_SECONDS = 5


def error_response(status: int, code: str, message: str, **extra: Any) -> Any:
    """A JSON error response ``{"error": {"code", "message", ...}}`` with ``status``."""
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def unavailable_response(what: str) -> Any:
    """503 ``redis_unavailable`` naming ``what`` is unreachable, with ``Retry-After``."""
    response = error_response(503, "redis_unavailable", f"{what} is unreachable; try again in {RETRY_AFTER_SECONDS} s")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def install_error_handlers(app: Flask) -> None:
    """Register the handlers: library errors, an unreachable Redis or broker (503 with
    ``Retry-After``, never a 500), HTTP errors (400/404/405/413/415...), crashes."""

    def _unavailable(exc: Exception) -> Any:
        what = "the Celery broker" if isinstance(exc, OperationalError) else "Redis"
        log.warning("request failed: %s is unreachable: %s: %s", what, type(exc).__name__, exc)
        return unavailable_response(what)

    for cls in UNAVAILABLE:
        app.register_error_handler(cls, _unavailable)

    @app.errorhandler(errors.AgentPlatformError)
    def _library(exc: errors.AgentPlatformError) -> Any:
        for cls in type(exc).__mro__:
            if cls in STATUS_OF:
                status, code = STATUS_OF[cls]
                break
        extra = {}
        if isinstance(exc, errors.InvalidTransition) and exc.current_status:
            extra["current_status"] = exc.current_status
        if status >= 500:
            log.error("request failed: %s: %s", type(exc).__name__, exc)
        return error_response(status, code, str(exc), **extra)

    @app.errorhandler(PydanticValidationError)
    def _validation(exc: PydanticValidationError) -> Any:
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors())
        return error_response(422, "validation_error", text)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="agent-platform"'
        return response

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")
