"""Scripted replies for :class:`~agent_platform.testing.ScriptedModel`.

A *reply* says what the scripted server answers to one ``POST /v1/chat/completions``:
an assistant message (text or tool calls) wrapped in an OpenAI ``chat.completion``
object, an OpenAI-shaped error, or an exact JSON body. Build replies with the
module-level functions (:func:`text`, :func:`tool_call`, :func:`tool_calls`,
:func:`error`, :func:`delay`, :func:`raw`, :func:`trickle`); in a script, a plain ``str`` means
``text(str)``, a ``dict`` means ``raw(dict)`` and a callable is called with the parsed
request body and must return one of these.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .trickle import Trickle

if TYPE_CHECKING:
    from .streaming import StreamStyle

__all__ = [
    "Reply",
    "ReplyLike",
    "Responder",
    "coerce_reply",
    "delay",
    "error",
    "error_body",
    "raw",
    "text",
    "tool_call",
    "tool_calls",
    "trickle",
    "usage_for",
]

# OpenAI's error ``type``/``code`` per HTTP status, as its API answers them.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    409: ("conflict", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    504: ("timeout", None),
}


Responder: TypeAlias = Callable[[dict[str, Any]], "ReplyLike"]
"""A callable given the parsed request body (a dict) that returns a reply."""

ReplyLike: TypeAlias = "Reply | dict[str, Any] | str | Responder"
"""What a script may hold: a Reply, a str (``text``), a dict (``raw``) or a Responder."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a chat-completions request (immutable; build with the helpers).

    Attributes:
        message: the assistant message to wrap in a ``chat.completion`` object:
            ``{"role": "assistant", "content": str | None, "tool_calls": [...]}``. Tool
            calls whose ``id`` is None get a fresh ``call_...`` id, unique per server.
            Ignored when ``body`` is set.
        finish_reason: ``choices[0].finish_reason`` (``"stop"``, ``"tool_calls"``, ...).
        usage: the ``usage`` object to send; None makes up plausible token counts from
            the lengths of the request and the reply (about 4 characters per token).
        status: the HTTP status code.
        body: an exact JSON body to send instead of a built ``chat.completion``.
        headers: extra HTTP response headers (for example ``{"Retry-After": "1"}``).
        delay: seconds to wait before answering (interrupted by ``ScriptedModel.stop``).
        deferred: a Responder called after ``delay`` (set by ``delay(seconds, fn)``);
            its reply is sent instead of this one.
        stream: how to stream this reply to a ``"stream": true`` request (set by
            :func:`~agent_platform.testing.streamed`); None: the server's style.
        trickle: send the answer a few bytes at a time (set by :func:`trickle`).
    """

    message: Mapping[str, Any] | None = None
    finish_reason: str = "stop"
    usage: Mapping[str, int] | None = None
    status: int = 200
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    deferred: Responder | None = None
    stream: StreamStyle | None = None
    trickle: Trickle | None = None


def text(content: str, *, usage: Mapping[str, int] | None = None) -> Reply:
    """An assistant text answer (``finish_reason`` ``"stop"``).

    Args:
        content: the assistant message's ``content``.
        usage: the ``usage`` object to send, for example ``{"prompt_tokens": 10,
            "completion_tokens": 5, "total_tokens": 15}``; None makes counts up.

    Returns:
        The Reply.
    """
    return Reply(message={"role": "assistant", "content": content}, usage=usage)


def _function_call(name: str, arguments: Mapping[str, Any] | str, call_id: str | None) -> dict[str, Any]:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def tool_call(name: str, arguments: Mapping[str, Any] | str, *, call_id: str | None = None) -> Reply:
    """An assistant message that calls one tool (``finish_reason`` ``"tool_calls"``, ``content`` None).

    Args:
        name: the function name (``tool_calls[0].function.name``).
        arguments: a dict, sent as ``json.dumps(arguments)``; or a str, sent as is (to
            script malformed JSON such as ``'{"city": '``).
        call_id: the tool call id; None draws a fresh ``call_...`` id, unique per server.

    Returns:
        The Reply.
    """
    return tool_calls((name, arguments, call_id) if call_id else (name, arguments))


def tool_calls(
    *calls: tuple[str, Mapping[str, Any] | str] | tuple[str, Mapping[str, Any] | str, str],
) -> Reply:
    """An assistant message with several (parallel) tool calls, in the given order.

    Args:
        *calls: ``(name, arguments)`` or ``(name, arguments, call_id)`` tuples; arguments
            as in :func:`tool_call`.

    Returns:
        The Reply.

    Raises:
        ValueError: if no call is given.
    """
    if not calls:
        raise ValueError("tool_calls() needs at least one (name, arguments) tuple")
    built = [_function_call(c[0], c[1], c[2] if len(c) > 2 else None) for c in calls]
    return Reply(
        message={"role": "assistant", "content": None, "tool_calls": built},
        finish_reason="tool_calls",
    )


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The OpenAI-shaped error body ``{"error": {"message", "type", "param", "code"}}`` for a status."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    message = message or f"ScriptedModel: scripted error {status}"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error(
    status: int,
    body: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An HTTP error answer, for example ``error(429, headers={"Retry-After": "1"})``.

    The ``openai`` SDK maps the status to its exception (429 -> ``openai.RateLimitError``,
    5xx -> ``openai.InternalServerError``...). Test clients should pass ``max_retries=0``,
    or the SDK retries 408/409/429/5xx by itself.

    Args:
        status: the HTTP status code (4xx or 5xx).
        body: the JSON body; None sends OpenAI's shape ``{"error": {"message": ...,
            "type": ..., "param": None, "code": ...}}`` with the type and code OpenAI
            uses for that status.
        headers: extra response headers (``Retry-After`` in seconds, ``retry-after-ms``).

    Returns:
        The Reply.
    """
    return Reply(
        status=status,
        body=dict(body) if body is not None else error_body(status),
        headers=dict(headers or {}),
    )


def raw(body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    """An exact JSON body, sent unchanged (to mimic llama.cpp, vLLM or Ollama quirks).

    For example a legacy ``function_call`` beside ``tool_calls``, ``arguments`` as an
    object instead of a string, or tool calls without ids.

    Args:
        body: the JSON object to send.
        status: the HTTP status code.
        headers: extra response headers.

    Returns:
        The Reply.
    """
    return Reply(status=status, body=dict(body), headers=dict(headers or {}))


def delay(seconds: float, reply: ReplyLike) -> Reply:
    """Wait ``seconds`` before answering with ``reply`` (to test timeouts and concurrency).

    The request is counted (``calls``, ``requests``) on arrival, before the wait.
    ``ScriptedModel.stop()`` cuts the wait short and the request is answered 503.

    Args:
        seconds: the wait, in seconds (>= 0).
        reply: a reply, str or dict; a callable is called after the wait and its
            reply sent.

    Returns:
        The Reply.

    Raises:
        ValueError: if ``seconds`` is negative.
    """
    if seconds < 0:
        raise ValueError(f"delay() needs seconds >= 0, got {seconds!r}")
    if callable(reply):
        return Reply(delay=seconds, deferred=reply)
    base = coerce_reply(reply)
    return dataclasses.replace(base, delay=base.delay + seconds)


def trickle(
    reply: Reply | Mapping[str, Any] | str = "A reply that took its time.",
    *,
    chunk: int = 10,
    interval: float = 2.0,
    content_length: int = 300,
    in_headers: bool = False,
) -> Reply:
    """Answer ``reply`` a few bytes at a time, as a stalled server or proxy does.

    By default: status 200 and its headers (``Content-Length: 300``) at once, then the
    body, padded with spaces to 300 bytes, 10 bytes every 2 s (the whole body in about a
    minute, a valid completion if the client waits that long). With ``in_headers=True``
    the status line is followed by one header line every ``interval`` seconds, and the
    header block never ends. Either way the answer stops as soon as the client closes its
    connection (a client-side deadline), or :meth:`ScriptedModel.stop` is called.

    Args:
        reply: what the body holds (a Reply, str or dict, as in a script).
        chunk: bytes per step (>= 1).
        interval: seconds between steps (> 0).
        content_length: the announced body size in bytes.
        in_headers: trickle an endless header block instead of the body.

    Returns:
        The Reply.

    Raises:
        ValueError: ``chunk`` < 1 or ``interval`` <= 0.
    """
    if chunk < 1 or interval <= 0:
        raise ValueError(f"trickle() needs chunk >= 1 and interval > 0, got {chunk!r} and {interval!r}")
    plan = Trickle(chunk=chunk, interval=interval, content_length=content_length, in_headers=in_headers)
    return dataclasses.replace(coerce_reply(reply), trickle=plan)


def coerce_reply(item: Reply | Mapping[str, Any] | str) -> Reply:
    """Turn a script item that is not callable into a Reply (str -> text, dict -> raw).

    Raises:
        TypeError: if ``item`` is neither a Reply, a str nor a dict.
    """
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return text(item)
    if isinstance(item, Mapping):
        return raw(item)
    raise TypeError(f"a scripted reply must be a Reply, str, dict or callable, got {type(item).__name__}")


def _tokens(value: Any) -> int:
    """About 4 characters per token, as OpenAI's rule of thumb for English."""
    chars = len(value) if isinstance(value, str) else len(json.dumps(value))
    return math.ceil(chars / 4)


def usage_for(given: Mapping[str, int] | None, request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    """The ``usage`` object: ``given`` (``total_tokens`` filled in), else counts made up from lengths."""
    if given is not None:
        usage = dict(given)
        if "total_tokens" not in usage:
            usage["total_tokens"] = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        return usage
    messages = request.get("messages") or []
    prompt = sum(4 + _tokens(m.get("content") or "") if isinstance(m, dict) else 4 for m in messages)
    prompt += _tokens(request["tools"]) if request.get("tools") else 0
    completion = _tokens(message.get("content") or "")
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        completion += 3 + _tokens(function.get("name") or "") + _tokens(function.get("arguments") or "")
    prompt, completion = max(prompt, 1), max(completion, 1)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
