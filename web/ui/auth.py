"""Sign-in, CSRF and response headers of the inspector's pages.

With ``AGENT_PLATFORM_API_TOKEN`` set, a page asked for without the sign-in cookie is the
sign-in form (401); the token given there is kept in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` over HTTPS). That cookie also lets the browser read the API's
``GET`` routes, so the run page can follow ``GET /workflows/<id>/events`` (an
``EventSource`` cannot send an ``Authorization`` header); it never authorises a write.

Every POST of a page (sign-in and actions alike) carries a CSRF token: a random value
kept in an ``HttpOnly``, ``SameSite=Lax`` cookie and repeated in a hidden form field
(the "double submit cookie" of OWASP's CSRF cheat sheet); a POST whose field differs
from the cookie, or whose ``Origin`` is another host, is refused with 403. This holds
without a token too: a page of another site cannot make a browser terminate a workflow.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, url_for

if TYPE_CHECKING:
    from flask import Blueprint, Response

    from agent_platform.settings import Settings

#: The cookie holding the API token once signed in.
TOKEN_COOKIE = "agent_platform_token"
#: The cookie holding this browser's CSRF token.
CSRF_COOKIE = "agent_platform_csrf"
#: The hidden form field that repeats it.
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Served to every page: scripts and styles only from this origin (no inline code).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def signed_in(token: str) -> bool:
    """True when this request is a read (GET/HEAD) whose sign-in cookie holds ``token``
    and the inspector is served (``AGENT_PLATFORM_UI`` is not 0). Compared in constant time."""
    if "agent_platform.ui" not in current_app.extensions or request.method not in ("GET", "HEAD"):
        return False
    return _cookie_holds(token)


def _cookie_holds(token: str) -> bool:
    given = request.cookies.get(TOKEN_COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def csrf_token() -> str:
    """This browser's CSRF token (a new one is set as a cookie with the response)."""
    value = g.get("csrf_new") or request.cookies.get(CSRF_COOKIE, "")
    if not (20 <= len(value) <= 100 and value.replace("-", "").replace("_", "").isalnum()):
        value = g.csrf_new = secrets.token_urlsafe(32)
    return value


def _csrf_ok() -> bool:
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return False
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = request.form.get(CSRF_FIELD, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), given.encode())


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the inspector only (no open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("ui.workflow_list")


def _sign_in_form(target: str | None, error: str | None) -> Any:
    """The sign-in page, answered 401 with the API's Bearer challenge (RFC 7235)."""
    page = render_template("ui/sign_in.html", next=_safe_next(target), error=error)
    return page, 401, {"WWW-Authenticate": 'Bearer realm="agent-platform"'}


def install(blueprint: Blueprint, settings: Settings) -> None:
    """Add the sign-in routes, the checks before every page and the response headers."""
    token = settings.api_token

    @blueprint.before_request
    def _check() -> Any:
        if request.endpoint == "ui.static":
            return None  # the package's own CSS, JS and icon: no data
        if token and request.endpoint != "ui.sign_in" and not _cookie_holds(token):
            target = request.full_path.rstrip("?") if request.method == "GET" else None
            return _sign_in_form(target, None)
        if request.method not in SAFE_METHODS and not _csrf_ok():
            message = "The form was stale or came from another site (CSRF check). Reload the page and try again."
            return render_template("ui/error.html", status=403, title="Refused", message=message), 403
        return None

    @blueprint.after_request
    def _headers(response: Response) -> Response:
        if g.get("csrf_new"):
            response.set_cookie(
                CSRF_COOKIE, g.csrf_new, httponly=True, samesite="Lax", secure=request.is_secure, path="/ui/"
            )
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "ui.static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @blueprint.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "csrf_token": csrf_token,
            "csrf_field": CSRF_FIELD,
            "auth_on": bool(token),
            "flower_url": (settings.flower_url or "").rstrip("/") or None,
        }

    @blueprint.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> Any:
        """The sign-in form; a right token sets the cookie and goes back to ``next``."""
        target = _safe_next(request.values.get("next"))
        if not token:
            return redirect(target, 303)
        if request.method == "GET":
            return render_template("ui/sign_in.html", next=target, error=None)
        given = request.form.get("token", "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return _sign_in_form(target, "That is not the API token.")
        response = redirect(target, 303)
        response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
        return response

    @blueprint.post("/sign-out")
    def sign_out() -> Any:
        """Forget the token cookie."""
        response = redirect(url_for("ui.sign_in"), 303)
        response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
        return response
