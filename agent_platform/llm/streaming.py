"""A streamed chat completion (``stream=True``): deltas for live listeners, then the same
:class:`AssistantReply` a non-streamed call gives.

The chunks (``chat.completion.chunk`` objects, OpenAI's streaming format) are assembled
into one ``chat.completion`` body, which goes through :func:`parse_chat_completion` like
a non-streamed body: one set of rules for both. Servers stream differently; handled here
(each seen in the servers' trackers or measured):

- the whole tool call (name and arguments, even as an object) in one chunk (Ollama);
- tool call fragments without ``index`` (matched by ``id``, else they continue the last
  call) or without ``id``; a new ``id`` at an index already used is a new call (servers
  that send ``index: 0`` for every parallel call);
- ``finish_reason: "stop"`` after tool calls (normalised by the parser, as non-streamed);
- ``usage`` only in a last chunk with empty ``choices`` (OpenAI with
  ``stream_options.include_usage``), in the finishing chunk, or nowhere;
- arguments split across any number of chunks; ``content: null`` chunks; the role alone
  in the first chunk; ``content`` as a list of parts;
- servers that ignore ``stream`` and answer one JSON body (its text becomes one delta);
- a whole ``message`` instead of a ``delta`` in a chunk;
- an ``error`` object inside the stream (OpenAI sends mid-stream errors so).

A delta given to listeners is a dict with one of ``text`` (str), ``tool_call``
(``{"index", "id", "name", "arguments"}``: the call's position in the reply, its id and
name when first seen, an arguments fragment) or ``finish_reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import openai

from ..errors import MalformedReply, RetryableLLMError
from ..sse import SseParser
from . import green
from .deadline import MODEL_CALLS, DeadlineExceeded
from .reply import AssistantReply, parse_chat_completion

#: Called with each delta, and with None at least every ``tick`` seconds while waiting
#: (so a batching listener can flush on time).
DeltaSink = Callable[[dict[str, Any] | None], None]

#: HTTP statuses with which a server may refuse a streamed request it would answer
#: unstreamed, when its error message names streaming (some gateways reject
#: ``stream_options`` with 400/422, servers without streaming say so with 500/501). Other
#: errors are not asked twice. A 200 whose stream ends with no data at all is a refusal
#: too: llama-cpp-python's server (0.3.x, chatml-function-calling) raises "Automatic
#: streaming tool choice is not supported" after sending the headers (and a ping comment).
STREAM_REFUSED = frozenset({400, 415, 422, 500, 501})

T = TypeVar("T")


class ChunkAssembler:
    """Builds one ``chat.completion`` body from streamed chunks (choice 0 only).

    Example::

        assembler = ChunkAssembler()
        for chunk in chunks:
            for delta in assembler.add(chunk):
                print(delta)
        reply = assembler.reply()
    """

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.legacy: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.chunks = 0
        self.choices_seen = 0  # chunks that carried choice 0: none at all is not a completion
        self._slots: dict[int, int] = {}

    def add(self, chunk: Any) -> list[dict[str, Any]]:
        """Merge one chunk; return its deltas for listeners.

        Raises:
            MalformedReply: the chunk is not an object.
            RetryableLLMError: the chunk is an ``error`` object (a server fault mid-stream).
        """
        if not isinstance(chunk, dict):
            raise MalformedReply(f"the model streamed a chunk that is not an object: {str(chunk)[:300]}")
        if chunk.get("error") and not chunk.get("choices"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise RetryableLLMError(f"the model server sent an error in its stream: {str(message)[:500]}")
        self.chunks += 1
        self.model = self.model or chunk.get("model")
        self.id = self.id or chunk.get("id")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        deltas: list[dict[str, Any]] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            self.choices_seen += 1
            delta = choice.get("delta")
            if not isinstance(delta, dict) and isinstance(choice.get("message"), dict) and not self._started():
                delta = choice["message"]  # a whole message in one chunk
            if isinstance(delta, dict):
                deltas.extend(self._merge(delta))
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
                said = "tool_calls" if self.calls and self.finish_reason == "stop" else self.finish_reason
                deltas.append({"finish_reason": said})  # as parse_chat_completion reads it
        return deltas

    def _started(self) -> bool:
        return bool(self.content or self.calls or self.legacy)

    def _merge(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        content = delta.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        if content:
            self.content.append(str(content))
            out.append({"text": str(content)})
        fragments = delta.get("tool_calls") or []
        for fragment in [fragments] if isinstance(fragments, dict) else fragments:
            if not isinstance(fragment, dict):
                raise MalformedReply(f"the model streamed a tool call that is not an object: {str(fragment)[:300]}")
            out.append(self._merge_call(fragment))
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            if self.legacy is None:
                self.legacy = {"name": "", "arguments": ""}
            self.legacy["name"] += str(legacy.get("name") or "")
            _append_arguments(self.legacy, legacy.get("arguments"))
        return out

    def _merge_call(self, fragment: dict[str, Any]) -> dict[str, Any]:
        given = fragment.get("function")
        fn: dict[str, Any] = given if isinstance(given, dict) else {}
        name = fn.get("name") or fragment.get("name")
        call_id = fragment.get("id") or None
        slot = self._slot(fragment.get("index"), call_id, name)
        call = self.calls[slot]
        delta: dict[str, Any] = {"index": slot}
        if call_id and not call["id"]:
            call["id"] = delta["id"] = str(call_id)
        if name and name != call["name"]:
            call["name"] += str(name)
            delta["name"] = call["name"]
        arguments = fn.get("arguments", fragment.get("arguments"))
        delta["arguments"] = _append_arguments(call, arguments)
        return {"tool_call": delta}

    def _slot(self, index: Any, call_id: Any, name: Any) -> int:
        """Which call a fragment belongs to (see the module's notes on missing index or id)."""
        if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
            slot = self._slots.get(index)
            if slot is not None and not _starts_new(self.calls[slot], call_id, name):
                return slot
            self._slots[index] = len(self.calls)
        elif call_id:
            for slot, known in enumerate(self.calls):
                if known["id"] == call_id:
                    return slot
        elif self.calls and not _starts_new(self.calls[-1], None, name):
            return len(self.calls) - 1
        self.calls.append({"id": None, "name": "", "arguments": None})
        return len(self.calls) - 1

    def body(self) -> dict[str, Any]:
        """The assembled ``chat.completion`` body."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content else None}
        if self.calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in self.calls
            ]
        if self.legacy is not None:
            message["function_call"] = self.legacy
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            # No chunk with choice 0 (e.g. a body of ``{"choices": []}``): no choices, so
            # parse_chat_completion refuses it as MalformedReply (retried), never an empty reply.
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}]
            if self.choices_seen
            else [],
        }
        if self.usage is not None:
            body["usage"] = self.usage
        return body

    def reply(self) -> AssistantReply:
        """The reply, exactly as :func:`parse_chat_completion` reads the assembled body.

        Raises:
            MalformedReply: as :func:`parse_chat_completion`.
        """
        return parse_chat_completion(self.body())


def _starts_new(known: dict[str, Any], call_id: Any, name: Any) -> bool:
    """A fragment at a known call's place starts another call: it has another id, or,
    without an id, a name while the known call is named and its arguments are whole JSON
    (parallel calls of one tool, without index or id)."""
    if call_id:
        return bool(known["id"]) and call_id != known["id"]
    if not (name and known["name"]):
        return False
    arguments = known["arguments"]
    if isinstance(arguments, (dict, list)):
        return True
    try:
        json.loads(arguments or "")
    except ValueError:
        return False
    return True


def _append_arguments(call: dict[str, Any], arguments: Any) -> str:
    """Add an arguments fragment (text, or a whole object) to ``call``; return it as text."""
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        if isinstance(call["arguments"], (dict, list)):
            call["arguments"] = json.dumps(call["arguments"])
        call["arguments"] = (call["arguments"] or "") + arguments
        return arguments
    if not call["arguments"]:
        call["arguments"] = arguments
        return json.dumps(arguments)
    # an object after text: keep both as text, nothing is dropped
    text = json.dumps(arguments)
    call["arguments"] = (call["arguments"] if isinstance(call["arguments"], str) else "") + text
    return text


def deltas_of(reply: AssistantReply) -> list[dict[str, Any]]:
    """The deltas of a complete reply (a server that answered one JSON body to ``stream``)."""
    deltas: list[dict[str, Any]] = [{"text": reply.content}] if reply.content else []
    for index, call in enumerate(reply.tool_calls):
        fragment = {"index": index, "id": call.id, "name": call.name, "arguments": call.received_arguments}
        deltas.append({"tool_call": fragment})
    if reply.finish_reason:
        deltas.append({"finish_reason": reply.finish_reason})
    return deltas


def stream_chat(
    open_stream: Callable[[], Awaitable[Any]], on_delta: DeltaSink, timeout: float, tick: float = 0.05
) -> AssistantReply | None:
    """Make a streamed call, give every delta to ``on_delta``, return the reply.

    The HTTP exchange runs on this thread's model-call event loop
    (:data:`~agent_platform.llm.deadline.MODEL_CALLS`), which parses each piece of the
    body as it arrives and calls ``on_delta``; ``timeout`` is a deadline for the whole
    call (headers, every chunk, the end), not per read (DESIGN section 3, rule 11): past
    it the request is cancelled (its connection closed) and nothing more reaches
    ``on_delta``, whatever the server does. In a gevent process, see :func:`stream_chat_green`.

    Args:
        open_stream: called on the loop; returns an awaitable of the unread HTTP response
            (``AsyncOpenAI.post(..., stream=True, cast_to=httpx.Response)``), which is
            read here and closed.
        on_delta: see :data:`DeltaSink`.
        timeout: seconds for the whole call.
        tick: seconds between two ``on_delta(None)`` calls while nothing arrives.

    Returns:
        The reply, or None when the server refused the streamed request (a status of
        :data:`STREAM_REFUSED` whose message names streaming, or a stream without data):
        the caller asks again without ``stream``.

    Raises:
        RetryableLLMError: the deadline passed, the stream broke off or ended before its
            end (no ``[DONE]`` and no ``finish_reason``), a chunk is not JSON, or the server
            sent an error inside the stream.
        MalformedReply: the assembled reply has neither text nor a tool call.
        openai.APIError: as ``chat.completions.create`` raises them (the caller maps them).
    """

    async def read() -> AssistantReply | None:
        reader = _StreamReader(on_delta)
        try:
            response = await open_stream()
            try:
                async for piece in response.aiter_bytes():
                    reader.feed(piece)
            finally:
                await response.aclose()
        except Exception as exc:
            _raise_unless_refused(exc)
            return None
        return reader.finish()

    with _deadline(timeout):
        return MODEL_CALLS.run(lambda: _ticking(read(), on_delta, tick), timeout)


def stream_chat_green(
    open_stream: Callable[[], Any], on_delta: DeltaSink, timeout: float, tick: float = 0.05
) -> AssistantReply | None:
    """:func:`stream_chat` in a process that gevent has monkey-patched (:mod:`.green`):
    the same reply, deltas, ticks, deadline and errors, from the SDK's synchronous client.

    Args:
        open_stream: sends the request; returns the unread HTTP response
            (``OpenAI.post(..., stream=True, cast_to=httpx.Response)``), which is read
            (in a greenlet of its own) and closed.
        on_delta, timeout, tick: as :func:`stream_chat` (``on_delta`` is called in this greenlet).

    Returns and Raises: as :func:`stream_chat`.
    """
    reader = _StreamReader(on_delta)
    with _deadline(timeout):
        try:
            green.stream(open_stream, reader.feed, lambda: on_delta(None), timeout, tick)
        except Exception as exc:
            _raise_unless_refused(exc)
            return None
    return reader.finish()


@contextlib.contextmanager
def _deadline(timeout: float) -> Iterator[None]:
    """:class:`DeadlineExceeded` raised inside, as :class:`RetryableLLMError`."""
    try:
        yield
    except DeadlineExceeded as exc:
        raise RetryableLLMError(f"the model call did not finish within its deadline of {timeout:g} s") from exc


def _raise_unless_refused(exc: Exception) -> None:
    """Raise an error of a streamed exchange, unless it refuses streaming (see
    :data:`STREAM_REFUSED`: the caller then asks again unstreamed): an error of httpx as
    :class:`RetryableLLMError` (the stream broke off), the SDK's and any other as they are."""
    if _refuses_streaming(exc):
        return
    if isinstance(exc, openai.APIError) or not type(exc).__module__.startswith("httpx"):
        raise exc
    raise RetryableLLMError(f"the model's stream broke off: {type(exc).__name__}: {exc}") from exc


async def _ticking(work: Awaitable[T], on_delta: DeltaSink, tick: float) -> T:
    """Await ``work`` (on this loop), calling ``on_delta(None)`` every ``tick`` seconds
    meanwhile; an error of the listener ends the work and is raised."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    failed: list[Exception] = []
    timer: asyncio.TimerHandle | None = None

    def ticked() -> None:
        nonlocal timer
        try:
            on_delta(None)
        except Exception as exc:
            failed.append(exc)
            if task is not None:
                task.cancel()
            return
        timer = loop.call_later(tick, ticked)

    timer = loop.call_later(tick, ticked)
    try:
        return await work
    except asyncio.CancelledError:
        if failed and task is not None:
            task.uncancel()
            raise failed[0] from None
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _refuses_streaming(exc: BaseException) -> bool:
    """An error answer that refuses ``stream=True`` itself (see :data:`STREAM_REFUSED`)."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in STREAM_REFUSED:
        return False
    return "stream" in f"{exc.message} {exc.body}".lower()


class _StreamReader:
    """The body of a response to ``stream=True``: SSE chunks, or one JSON body (decided by
    its first byte, not by a Content-Type that servers set loosely)."""

    def __init__(self, on_delta: DeltaSink) -> None:
        self.on_delta = on_delta
        self.parser = SseParser()
        self.assembler = ChunkAssembler()
        self.json: bytearray | None = None
        self.sniffed = False
        self.done = False

    def feed(self, piece: bytes) -> None:
        if not self.sniffed:
            head = piece.lstrip()
            if not head:
                return
            self.sniffed = True
            self.json = bytearray() if head[:1] in (b"{", b"[") else None
        if self.json is not None:
            self.json += piece
            return
        for event in self.parser.feed(piece):
            self._event(event.data)

    def _event(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        if self.done:
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise RetryableLLMError(f"the model streamed a chunk that is not JSON: {data[:200]!r}") from exc
        for delta in self.assembler.add(chunk):
            self.on_delta(delta)

    def finish(self) -> AssistantReply | None:
        """The reply; None when nothing was streamed (an empty body, or comments only: a refusal)."""
        if not self.sniffed or (self.json is None and not self.assembler.chunks and not self.done):
            return None
        if self.json is not None:
            try:
                body = json.loads(bytes(self.json))
            except ValueError as exc:
                text = bytes(self.json[:200]).decode(errors="replace")
                raise RetryableLLMError(f"the model server sent a body that is not JSON: {text!r}") from exc
            reply = parse_chat_completion(body)
            for delta in deltas_of(reply):
                self.on_delta(delta)
            return reply
        for event in self.parser.close():
            self._event(event.data)
        if not self.done and self.assembler.finish_reason is None:
            raise RetryableLLMError(
                f"the model's stream ended early ({self.assembler.chunks} chunks, no [DONE] and no finish_reason)"
            )
        return self.assembler.reply()


__all__ = ["STREAM_REFUSED", "ChunkAssembler", "DeltaSink", "deltas_of", "stream_chat", "stream_chat_green"]
