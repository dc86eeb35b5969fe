"""The request checks a strict OpenAI-compatible server makes before it generates anything.

:class:`~agent_platform.testing.ScriptedModel` makes them when built with
``validate_history=True`` and answers ``400 invalid_request_error`` (OpenAI's type and
wording) to a request that fails one, without taking a scripted reply:

- the body is strict JSON (RFC 8259: no ``NaN``/``Infinity`` tokens);
- every ``tool_calls[].function.arguments`` of an assistant message is a string holding
  a JSON object (OpenAI rejects ``""``, ``null``, an object instead of a string, ...);
- every tool call is answered by a ``tool`` message (string content) before the next
  message of another role, and every ``tool`` message answers a call.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["history_problem", "request_problem", "strict_json"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def strict_json(text: str) -> Any:
    """Parse ``text`` as RFC 8259 JSON (``NaN``, ``Infinity`` rejected).

    Raises:
        ValueError: not strict JSON.
    """
    return json.loads(text, parse_constant=_reject_constant)


def _is_object_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return isinstance(strict_json(value), dict)
    except ValueError:
        return False


def request_problem(text: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """The first problem of a chat request (its text and its decoded body), as
    ``(message, param)``, or None when a strict server would accept it."""
    try:
        strict_json(text)
    except ValueError as exc:
        return f"We could not parse the JSON body of your request: {exc}", "body"
    return history_problem(body)


def history_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """The first problem of a chat request's ``messages``, as ``(message, param)``, or None."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "'messages' must be an array", "messages"
    waiting: set[str] = set()  # ids of the calls not answered yet
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"Invalid type for 'messages[{i}]': expected an object", f"messages.[{i}]"
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding "
                    "message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            waiting.discard(call_id)
            if not isinstance(message.get("content"), str | list):
                return f"Invalid type for 'messages[{i}].content': expected a string", f"messages.[{i}].content"
            continue
        if waiting:
            ids = ", ".join(sorted(waiting))
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                f"each 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}",
                f"messages.[{i}].role",
            )
        calls = (message.get("tool_calls") or []) if role == "assistant" else []
        for j, call in enumerate(calls):
            where = f"messages[{i}].tool_calls[{j}].function.arguments"
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if not _is_object_text(arguments):
                return (
                    f"Invalid value for '{where}': expected a string holding a JSON object, got {arguments!r:.200}",
                    where.replace("[", ".["),
                )
            waiting.add(str(call.get("id")))
    if waiting:
        ids = ", ".join(sorted(waiting))
        return f"The following tool_call_ids did not have response messages: {ids}", "messages"
    return None
