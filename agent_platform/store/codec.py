"""How a workflow's status hash is stored: integer and JSON fields, final statuses."""

from __future__ import annotations

import json
from typing import Any

TERMINAL = frozenset({"COMPLETED", "FAILED", "TERMINATED"})
INT_FIELDS = (
    "steps_completed",
    "iteration",
    "prompt_tokens",
    "completion_tokens",
    "cursor",
    "log_seq",
    "attempt",
    "history_len",
    "tools_remaining",
)
JSON_FIELDS = ("failure_details", "pending_event", "metadata", "next", "input_messages")


def decode_meta(raw: dict[str, str]) -> dict[str, Any]:
    """Decode a status hash: integer and JSON fields to Python values."""
    meta: dict[str, Any] = dict(raw)
    for name in INT_FIELDS:
        if name in meta:
            meta[name] = int(meta[name])
    for name in JSON_FIELDS:
        if meta.get(name):
            meta[name] = json.loads(meta[name])
    return meta
