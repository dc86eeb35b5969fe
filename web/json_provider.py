"""The app's JSON provider: every response body is strict JSON (RFC 8259).

Flask's default provider writes Python's ``NaN`` and ``Infinity`` tokens, which browsers'
``JSON.parse`` and most clients reject. Tool results are converted before they are
checkpointed (:mod:`agent_platform.jsontext`); this provider applies the same rule to
whatever else reaches a response (a record written before that rule, a payload), so no
path serves a non-JSON token: a non-finite float is written as ``null``. Request bodies
are read by the same rule (:func:`strict_loads`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

from agent_platform.jsontext import dumps

__all__ = ["StrictJSONProvider", "strict_loads"]

#: A JSON escape of a UTF-16 surrogate (``\\ud800``-``\\udfff``).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


def strict_loads(data: bytes | str) -> Any:
    """Parse a request's JSON text as strict JSON (RFC 8259).

    Raises:
        ValueError: not JSON; a ``NaN``/``Infinity`` token; a lone UTF-16 surrogate escape
            (``"\\ud800"`` alone: valid JSON syntax but not Unicode text, RFC 8259 section
            8.2, which UTF-8 pages and Redis's JSON decoder cannot take).
        RecursionError: nested too deeply.
    """
    value = json.loads(data, parse_constant=_reject_constant)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if _SURROGATE_ESCAPE.search(text):  # rare: only then re-encode to find a lone one
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"a lone surrogate ({exc.object[exc.start]!a}) is not Unicode text (RFC 8259 8.2)"
            ) from None
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's default JSON provider, writing NaN and infinities as ``null``."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Serialise ``obj`` as strict JSON (Flask's defaults for dates, dataclasses...)."""
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return dumps(obj, **kwargs)
