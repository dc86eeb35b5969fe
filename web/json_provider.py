"""The app's JSON provider: every response body is strict JSON (RFC 8259).

Flask's default provider writes Python's ``NaN`` and ``Infinity`` tokens, which browsers'
``JSON.parse`` and most clients reject. Tool results are converted before they are
checkpointed (:mod:`agent_platform.jsontext`); this provider applies the same rule to
whatever else reaches a response (a record written before that rule, a payload), so no
path serves a non-JSON token: a non-finite float is written as ``null``.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

from agent_platform.jsontext import dumps

__all__ = ["StrictJSONProvider"]


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's default JSON provider, writing NaN and infinities as ``null``."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Serialise ``obj`` as strict JSON (Flask's defaults for dates, dataclasses...)."""
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return dumps(obj, **kwargs)
