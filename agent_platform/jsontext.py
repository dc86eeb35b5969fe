"""Strict JSON (RFC 8259) for what the platform stores and serves: one encoding rule.

Python's ``json`` writes ``NaN`` and ``Infinity`` tokens that no strict parser (a browser's
``JSON.parse``, OpenAI's API, Go, Java) accepts, and cannot write ``bytes`` at all. So a
tool's result is converted once, before it is checkpointed, by :func:`to_jsonable`:

- a float that is NaN, +Infinity or -Infinity becomes ``null`` (as ``JSON.stringify``
  and pydantic's default ``ser_json_inf_nan="null"`` do);
- ``bytes`` (and ``bytearray``, ``memoryview``) become text decoded as UTF-8, each
  invalid byte replaced by U+FFFD (so text read from a subprocess or an HTTP body stays
  readable for the model; return base64 yourself to keep binary data exact);
- pydantic models, dataclasses, dates, UUIDs, Decimals... become JSON types as pydantic
  serialises them (``to_jsonable_python``); anything else becomes ``str(value)``.

The conversion never fails: a result it cannot encode at all is replaced by a text
naming its type, and the tool still counts as successful. :func:`dumps` is the strict
writer for responses (the web app's JSON provider and its Server-Sent Events use it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python

__all__ = ["dumps", "finite", "to_jsonable"]

_logger = logging.getLogger(__name__)
_BYTES = (bytes, bytearray, memoryview)


def to_jsonable(value: Any) -> Any:
    """Convert a tool's return value to JSON types by the rule above (never raises).

    Returns:
        dict, list, str, int, finite float, bool or None, nested.
    """
    try:
        try:
            plain = to_jsonable_python(value, fallback=str)
        except ValueError:  # bytes that are not UTF-8 somewhere inside (pydantic refuses them)
            plain = to_jsonable_python(_decoded(value), fallback=str)
        return finite(plain)
    except Exception as exc:  # noqa: BLE001 - a result is never lost to its encoding
        _logger.warning("a result of type %s could not be encoded as JSON: %s", type(value).__name__, exc)
        return f"<a {type(value).__name__} that cannot be encoded as JSON: {exc}>"[:2000]


def finite(value: Any) -> Any:
    """``value`` (JSON types) with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes strict JSON: NaN and infinities become ``null``.

    Args:
        value: JSON types (``kwargs["default"]`` may convert others).
        **kwargs: passed to :func:`json.dumps` (``allow_nan`` is always False).

    Raises:
        TypeError: a value ``json.dumps`` cannot write (as ``json.dumps``).
    """
    kwargs["allow_nan"] = False
    try:
        return json.dumps(value, **kwargs)
    except ValueError:  # a non-finite float
        return json.dumps(finite(value), **kwargs)


def _decoded(value: Any) -> Any:
    """``value`` with its bytes decoded as UTF-8 (invalid bytes replaced), models and
    dataclasses read as dicts first so their bytes fields are reached too."""
    if isinstance(value, _BYTES):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, pydantic.BaseModel):
        return _decoded(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _decoded(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {_decoded(k) if isinstance(k, _BYTES) else k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_decoded(v) for v in value]
    return value
