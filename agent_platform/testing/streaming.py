"""How :class:`~agent_platform.testing.ScriptedModel` streams (``"stream": true`` requests).

A scripted reply is first built as the ``chat.completion`` a non-streamed request gets,
then cut into ``chat.completion.chunk`` objects sent as Server-Sent Events, the way
OpenAI streams: a first chunk with the role, the text and each tool call's arguments in
pieces of ``chunk_chars`` characters, a chunk with ``finish_reason``, a last chunk with
empty ``choices`` and the ``usage`` when the request asks for it
(``stream_options.include_usage``), then ``data: [DONE]``. :class:`StreamStyle` turns on
the ways other servers differ, to test a client against them::

    from agent_platform.testing import ScriptedModel, StreamStyle, streamed, tool_call

    model = ScriptedModel(stream=StreamStyle(omit_index=True))          # every reply
    model.add(streamed(tool_call("search_flights", {"destination": "Paris"}),
                       tool_calls_in_one_chunk=True, finish_reason="stop"))  # one reply
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Response

from .replies import Reply, ReplyLike, coerce_reply

__all__ = ["StreamStyle", "completion_chunks", "sse_response", "streamed"]


@dataclass(frozen=True)
class StreamStyle:
    """How one reply is streamed; the defaults are OpenAI's behaviour.

    Attributes:
        chunk_chars: characters of text (or of tool call arguments) per chunk.
        interval: seconds between two chunks (a slow model; interrupted by ``stop()``).
        ignore_stream: answer the plain ``chat.completion`` JSON, as servers that ignore
            ``stream`` do.
        tool_calls_in_one_chunk: each tool call whole (id, name, all arguments) in one
            chunk, as Ollama sends them.
        omit_index: tool call fragments without ``index``.
        omit_id: tool calls without ``id``.
        finish_reason: the finishing chunk's ``finish_reason`` instead of the reply's
            (e.g. ``"stop"`` after tool calls).
        usage: ``"requested"`` (a last chunk with empty ``choices`` and the usage, only
            when the request sets ``stream_options.include_usage``: OpenAI), ``"last"``
            (that chunk always), ``"finish"`` (the usage in the finishing chunk) or
            ``"none"``.
        null_content: a chunk with ``"content": null`` between every two chunks.
        done: end with ``data: [DONE]``.
        break_after: close the connection after this many chunks (a stream that breaks
            off; no ``finish_reason`` and no ``[DONE]`` then).
        hold: an event the stream waits for after ``hold_after`` chunks (at most 60 s;
            ``stop()`` ends the wait and the stream), to act while a reply is half written.
        hold_after: chunks sent before waiting for ``hold``.
    """

    chunk_chars: int = 4
    interval: float = 0.0
    ignore_stream: bool = False
    tool_calls_in_one_chunk: bool = False
    omit_index: bool = False
    omit_id: bool = False
    finish_reason: str | None = None
    usage: str = "requested"
    null_content: bool = False
    done: bool = True
    break_after: int | None = None
    hold: threading.Event | None = None
    hold_after: int = 1

    def __post_init__(self) -> None:
        if self.chunk_chars < 1:
            raise ValueError(f"chunk_chars must be >= 1, got {self.chunk_chars}")
        if self.usage not in ("requested", "last", "finish", "none"):
            raise ValueError(f"usage must be 'requested', 'last', 'finish' or 'none', got {self.usage!r}")


def streamed(reply: ReplyLike, style: StreamStyle | None = None, **options: Any) -> Reply | Any:
    """``reply``, streamed with ``style`` (or a StreamStyle of ``options``) when asked to stream.

    Args:
        reply: a Reply, str, dict, or a callable given the request body (its reply is
            streamed so).
        style: the stream's style; ``options`` build one when it is None.

    Raises:
        TypeError: an option is not a :class:`StreamStyle` field.
    """
    chosen = style or StreamStyle(**options)
    if callable(reply) and not isinstance(reply, Reply):

        def respond(body: dict[str, Any]) -> Reply:
            return dataclasses.replace(coerce_reply(reply(body)), stream=chosen)  # type: ignore[arg-type,operator]

        return respond
    return dataclasses.replace(coerce_reply(reply), stream=chosen)  # type: ignore[arg-type]


def completion_chunks(completion: dict[str, Any], style: StreamStyle, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a ``chat.completion`` body, in ``style``.

    Args:
        completion: the body a non-streamed request gets (``choices[0].message``).
        style: the quirks to apply.
        include_usage: the request's ``stream_options.include_usage``.
    """
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
        "system_fingerprint": completion.get("system_fingerprint"),
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **extra,
        }

    calls = message.get("tool_calls") or []
    pieces: list[dict[str, Any]] = [chunk({"role": "assistant", "content": None if calls else ""})]
    pieces += [chunk({"content": part}) for part in _cut(message.get("content") or "", style.chunk_chars)]
    for index, call in enumerate(calls):
        pieces += _call_chunks(chunk, index, call, style)
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        pieces.append(chunk({"function_call": legacy}))
    finish = style.finish_reason or choice.get("finish_reason")
    usage = completion.get("usage")
    pieces.append(chunk({}, finish, **({"usage": usage} if style.usage == "finish" else {})))
    if style.usage == "last" or (style.usage == "requested" and include_usage):
        pieces.append({**base, "choices": [], "usage": usage})
    for n, piece in enumerate(pieces):
        if style.null_content and n:
            yield chunk({"content": None})
        yield piece


def _call_chunks(chunk: Any, index: int, call: dict[str, Any], style: StreamStyle) -> list[dict[str, Any]]:
    fn = call.get("function") or {}
    head: dict[str, Any] = {"type": call.get("type", "function")}
    if not style.omit_index:
        head["index"] = index
    if not style.omit_id and call.get("id"):
        head["id"] = call["id"]
    arguments = fn.get("arguments")
    if style.tool_calls_in_one_chunk or not isinstance(arguments, str):
        return [chunk({"tool_calls": [{**head, "function": {"name": fn.get("name"), "arguments": arguments}}]})]
    first = chunk({"tool_calls": [{**head, "function": {"name": fn.get("name"), "arguments": ""}}]})
    rest = [{"function": {"arguments": part}} for part in _cut(arguments, style.chunk_chars)]
    return [first] + [chunk({"tool_calls": [{**({} if style.omit_index else {"index": index}), **r}]}) for r in rest]


def _cut(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse_response(
    body: dict[str, Any],
    style: StreamStyle,
    request: dict[str, Any],
    headers: dict[str, str],
    stopping: threading.Event,
) -> Response:
    """The streamed answer to ``request``: ``data: <chunk JSON>`` events, then ``data: [DONE]``
    (unless ``style`` says not), paced by ``style``; ``stopping`` (the server stops) ends it."""
    options = request.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    chunks = list(completion_chunks(body, style, include_usage))
    if style.break_after is not None:
        chunks = chunks[: style.break_after]
    lines = [f"data: {json.dumps(piece)}\n\n".encode() for piece in chunks]
    if style.done and style.break_after is None:
        lines.append(b"data: [DONE]\n\n")

    def events() -> Iterator[bytes]:
        for n, line in enumerate(lines):
            if n and style.interval and stopping.wait(style.interval):
                return  # the server stops: the connection ends mid-stream
            if style.hold is not None and n == style.hold_after and not _held(style.hold, stopping):
                return
            yield line

    # A known length ends the body without waiting for the connection to close (the
    # server is HTTP/1.0: no chunked encoding); each event is still written on its own.
    length = {"Content-Length": str(sum(len(line) for line in lines))}
    return Response(events(), status=200, headers={**headers, **length}, mimetype="text/event-stream")


def _held(gate: threading.Event, stopping: threading.Event, limit: float = 60.0) -> bool:
    """Wait until ``gate`` is set (True), or the server stops or ``limit`` s pass (False)."""
    deadline = time.monotonic() + limit
    while not gate.wait(0.05):
        if stopping.is_set() or time.monotonic() > deadline:
            return False
    return True
