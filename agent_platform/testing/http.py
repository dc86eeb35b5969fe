"""The scripted model server's HTTP plumbing: its werkzeug request handler and JSON responses."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from typing import Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Response

_logger = logging.getLogger("agent_platform.testing.server")


class QuietHandler(WSGIRequestHandler):
    """werkzeug's request handler without the request log, one request per connection.

    HTTP/1.0 closes each connection after its response, so no kept-alive connection
    keeps being served after :meth:`ScriptedModel.stop`.
    """

    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        """Send each write at once (TCP_NODELAY), as model servers stream their chunks."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing per request."""

    def log(self, type: str, message: str, *args: Any) -> None:
        """Send werkzeug's handler messages to this module's logger at DEBUG level."""
        _logger.debug("%s: " + message.rstrip("\n"), type, *args)


def json_response(
    payload: Mapping[str, Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``payload`` as an ``application/json`` response."""
    return Response(
        json.dumps(payload),
        status=status,
        headers=dict(headers or {}),
        mimetype="application/json",
    )
