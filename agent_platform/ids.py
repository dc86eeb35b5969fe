"""Validation of the ids that end up inside Redis keys (workflow, session, agent, event names)."""

from __future__ import annotations

import re
import uuid

from .errors import ValidationError

#: Letters, digits and ``_ . : @ -``, 1 to 128 characters: no braces (hash tags),
#: no spaces, no glob characters. Match it with ``fullmatch``: ``$`` also matches before
#: a final newline, so ``match`` would pass ``"abc\n"`` (pydantic's pattern engine does not).
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a safe id, else raise.

    Raises:
        ValidationError: not a string matching ``ID_RE`` (the message names ``what``).
    """
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-128 letters, digits or '_.:@-', starting with a letter or digit; got {value!r:.80}"
        )
    return value


def new_workflow_id() -> str:
    """A new workflow instance id (32 hex digits, like Dapr's)."""
    return uuid.uuid4().hex
