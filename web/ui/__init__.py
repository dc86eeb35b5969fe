"""The run inspector: server-rendered pages under ``/ui/`` (DESIGN section 6).

Flask + Jinja pages over the same data and the same rules as the JSON API: the list of
workflows, one run with its step timeline, the agent registry. They read with
JavaScript off; a small script (``static/ui.js``) refreshes them live, following a run
through the API's own event stream (``GET /workflows/<id>/events``). Actions are form
POSTs with a CSRF token that call the engine's control functions, as the API routes do.

Settings: ``AGENT_PLATFORM_UI=0`` serves no page; with ``AGENT_PLATFORM_API_TOKEN`` set
the pages ask for the token once (a sign-in form) and keep it in an ``HttpOnly``,
``SameSite=Strict`` cookie; ``FLOWER_URL`` links each step's Celery task to Flower.
Every template is autoescaped: model and tool output is shown as text, never as markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, current_app, request

from .auth import signed_in

if TYPE_CHECKING:
    from flask import Flask

    from agent_platform.settings import Settings

__all__ = ["NAME", "owns_request", "register", "signed_in"]

#: The blueprint's name (``request.blueprint`` of every inspector request).
NAME = "ui"
#: Where the pages are served.
URL_PREFIX = "/ui"


def owns_request() -> bool:
    """True when the inspector answers this request itself (its pages check their own
    sign-in cookie and CSRF token): a page of it, or ``/ui`` (redirected to ``/ui/``)."""
    if "agent_platform.ui" not in current_app.extensions:
        return False
    return request.blueprint == NAME or request.path == URL_PREFIX


def register(app: Flask, settings: Settings) -> None:
    """Serve the inspector on ``app`` under ``/ui/`` unless ``settings.ui`` is off.

    Args:
        app: the Flask app of :func:`web.create_app`.
        settings: gives ``ui``, ``api_token`` and ``flower_url``.
    """
    if not settings.ui:
        return
    from . import actions, auth, views

    blueprint = Blueprint(NAME, __name__, url_prefix=URL_PREFIX, template_folder="templates", static_folder="static")
    auth.install(blueprint, settings)
    views.install(blueprint)
    actions.install(blueprint)
    app.register_blueprint(blueprint)
    app.extensions["agent_platform.ui"] = settings
