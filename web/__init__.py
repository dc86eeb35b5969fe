"""The Flask app of agent-platform: ``gunicorn "web:create_app()"``."""

from __future__ import annotations

import hmac
import json
from typing import Any

from flask import Response, request
from flask_openapi3 import Info, OpenAPI
from pydantic import ValidationError as PydanticValidationError

from agent_platform.runtime import Runtime
from agent_platform.settings import Settings

from .body import has_body, read_body
from .errors import error_response, install_error_handlers
from .json_provider import StrictJSONProvider

__all__ = ["create_app"]

JSON_METHODS = ("POST", "PUT", "PATCH")


def _validation_error(exc: PydanticValidationError) -> Response:
    problems = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()]
    text = "; ".join(f"{p['field'] or '(body)'}: {p['message']}" for p in problems)
    return error_response(422, "validation_error", text, details=problems)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


def create_app(test_config: dict[str, Any] | None = None, runtime: Runtime | None = None) -> OpenAPI:
    """Build the Flask app (Flask's application factory pattern).

    Args:
        test_config: Flask config overrides (and ``SETTINGS``: a :class:`Settings`).
        runtime: an existing runtime (default: one from the environment and AGENT_APP).

    Returns:
        The app; its OpenAPI document is served at ``/openapi.json``.

    Raises:
        ConfigurationError: AGENT_APP or the components are invalid.
    """
    from tasks import create_celery  # web -> tasks -> agent_platform

    test_config = dict(test_config or {})
    settings = test_config.pop("SETTINGS", None) or (runtime.settings if runtime else Settings.from_env())
    # The web app's Redis clients fail fast (a 503 within web_redis_timeout), see web/errors.py
    runtime = runtime or Runtime(settings, redis_timeout=settings.web_redis_timeout)
    celery = create_celery(runtime=runtime)
    app = OpenAPI(
        __name__,
        info=Info(title="agent-platform", version="0.1.0", description="Durable AI agents on Celery and Redis"),
        doc_prefix="/docs",
        validation_error_status=422,
        validation_error_callback=_validation_error,
    )
    app.json = StrictJSONProvider(app)  # NaN and infinities as null: strict JSON only
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config.update(test_config)
    app.extensions["agent_platform"] = runtime
    app.extensions["agent_platform.celery"] = celery

    @app.before_request
    def _guard() -> Any:
        if ui.owns_request():
            return None  # the inspector's pages check their own sign-in cookie and CSRF token
        token = settings.api_token
        if token and request.path != "/health" and not ui.signed_in(token):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                response = error_response(401, "unauthorized", "missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="agent-platform"'
                return response
        if has_body(request.environ):  # 413 above the size limit (chunked too), 408 when it comes too slowly
            read_body(request.environ, settings.max_request_bytes, settings.body_timeout)
        if request.method in JSON_METHODS and request.content_length != 0 and request.get_data(cache=True):
            if not request.is_json:
                return error_response(415, "unsupported_media_type", "send the body as application/json")
            try:
                json.loads(request.get_data(cache=True), parse_constant=_reject_constant)
            except (ValueError, RecursionError) as exc:
                detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                return error_response(400, "invalid_json", f"the body is not valid JSON: {detail}")
        return None

    @app.get("/openapi.json", doc_ui=False)
    def openapi_document() -> Any:
        """The OpenAPI 3 document of this API."""
        return app.api_doc

    from . import agent_runner_routes, dapr, events, routes, system, ui

    app.register_api(routes.api)
    app.register_api(system.api)
    app.register_api(events.api)
    app.register_api(dapr.api)
    app.register_api(agent_runner_routes.api)
    ui.register(app, settings)
    install_error_handlers(app)
    return app
