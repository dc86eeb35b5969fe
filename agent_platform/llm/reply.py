"""Read a chat completion defensively: OpenAI, llama.cpp, vLLM and Ollama differ in small ways.

Known differences handled here (each from the servers' issue trackers or measured):
- llama-cpp-python's ``chatml-function-calling`` adds a legacy ``function_call`` (name
  with a trailing colon) beside ``tool_calls``: the tool calls win; the legacy field is
  never echoed back.
- Servers that only send the legacy ``function_call`` get it turned into one tool call.
- Ollama and some vLLM versions send ``arguments`` as an object, not a JSON string.
- Some servers omit the tool call ``id`` or ``type``: an id is made up
  (``call_<n>``) so the tool message can refer to it.
- ``content`` may be null, missing or a list of parts (``[{"type": "text", ...}]``).
- ``usage`` may be missing.
- ``finish_reason`` may be ``"stop"`` beside tool calls: read as ``"tool_calls"``.
- ``arguments`` may be ``""``, whitespace or ``null`` (no arguments: OpenAI itself sends
  ``""`` for a strict tool without parameters), or text that is not a JSON object.
- ``content`` may be empty with no tool call (``finish_reason`` "stop"): a reply of
  nothing, which ends the turn (see :attr:`AssistantReply.empty`), not a fault to retry.
Arguments are never dropped: what goes back to the model is always a JSON object text
(a strict server answers 400 to anything else), and the text as received is kept beside
it when it differs; the tool step validates the text as received, so arguments that
cannot be read go back to the model as the tool's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedReply
from ..tool import arguments_text


@dataclass(frozen=True)
class ToolCall:
    """One tool call of an assistant message.

    Attributes:
        id: the call id the tool message must quote.
        name: the tool name (trailing ``:`` and spaces stripped).
        arguments: the JSON object text to send back, always one (built from what was
            given by :func:`agent_platform.tool.arguments_text`: ``"{}"`` for none).
        raw_arguments: the arguments as received when they differ from ``arguments``
            (``""``, ``"null"``, text that is not a JSON object...), else None. The tool
            step validates this text, so unreadable arguments go back to the model.
    """

    id: str
    name: str
    arguments: str
    raw_arguments: str | None = None

    def __post_init__(self) -> None:
        text, received = arguments_text(self.arguments)
        if text != self.arguments:
            object.__setattr__(self, "arguments", text)
            if self.raw_arguments is None:
                object.__setattr__(self, "raw_arguments", received)

    @classmethod
    def received(cls, call_id: str, name: str, arguments: Any) -> ToolCall:
        """A call as a server sent it: ``arguments`` a string, an object, None..."""
        text, raw = arguments_text(arguments)
        return cls(call_id, name, text, raw)

    @property
    def received_arguments(self) -> str:
        """The arguments as the model sent them (what the tool step validates)."""
        return self.arguments if self.raw_arguments is None else self.raw_arguments

    def to_message(self) -> dict[str, Any]:
        """The ``tool_calls`` entry in OpenAI's shape (``arguments`` a JSON object text)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the step record: :meth:`to_message` plus ``raw_arguments`` when kept."""
        entry = self.to_message()
        if self.raw_arguments is not None:
            entry["raw_arguments"] = self.raw_arguments
        return entry


@dataclass(frozen=True)
class AssistantReply:
    """The part of a chat completion the engine uses.

    Attributes:
        content: the text ("" when none: see :attr:`empty`).
        tool_calls: the tool calls, in order.
        finish_reason: as sent, or None.
        usage: ``{"prompt_tokens": int, "completion_tokens": int}`` (0 when unknown).
        model: the model name the server reported.
    """

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None

    @property
    def empty(self) -> bool:
        """True when the reply holds neither text (blank counts as none) nor a tool call."""
        return not self.tool_calls and not self.content.strip()

    def to_message(self) -> dict[str, Any]:
        """The assistant message to send back: ``content`` always a string (llama.cpp's
        server answers 500 on a missing content and 422 on null), no legacy ``function_call``."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.tool_calls:
            message["tool_calls"] = [c.to_message() for c in self.tool_calls]
        return message

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the step record."""
        return {
            "content": self.content,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AssistantReply:
        """Inverse of :meth:`to_dict`."""
        calls = [
            ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"], c.get("raw_arguments"))
            for c in data.get("tool_calls") or []
        ]
        return cls(
            content=data.get("content") or "",
            tool_calls=calls,
            finish_reason=data.get("finish_reason"),
            usage=data.get("usage") or {},
            model=data.get("model"),
        )


def parse_chat_completion(body: Any, id_prefix: str = "call") -> AssistantReply:
    """Turn a chat completion JSON body into an :class:`AssistantReply`.

    Args:
        body: the decoded JSON body (a dict).
        id_prefix: prefix of made-up tool call ids.

    Raises:
        MalformedReply: the body is not a chat completion (no ``choices[0].message``
            object, tool calls that are not objects): a server fault worth another
            attempt. A well-formed reply of nothing (empty or null ``content``, no tool
            call) is a reply, not a fault: a deterministic server would send it again.
    """
    try:
        choice = body["choices"][0]
        message = choice["message"] if "message" in choice else {}
    except (KeyError, IndexError, TypeError):
        raise MalformedReply(f"the model's reply has no choices[0].message: {str(body)[:300]}") from None
    if not isinstance(message, dict) or not isinstance(choice, dict):
        raise MalformedReply(f"the model's message is not an object: {str(body)[:300]}")
    raw_calls = message.get("tool_calls") or []
    if isinstance(raw_calls, dict):  # a single call sent as an object
        raw_calls = [raw_calls]
    calls: list[ToolCall] = []
    for n, raw in enumerate(raw_calls if isinstance(raw_calls, list) else [raw_calls]):
        fn = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(raw, dict) or not isinstance(fn or {}, dict):
            raise MalformedReply(f"the model sent a tool call that is not an object: {str(raw)[:300]}")
        fn = fn or {}
        # An empty name is kept: the tool step answers "unknown tool ''" to the model.
        name = _clean_name(fn.get("name") or raw.get("name"))
        call_id = raw.get("id") or f"{id_prefix}_{n}"
        calls.append(ToolCall.received(str(call_id), name, fn.get("arguments", raw.get("arguments"))))
    legacy = message.get("function_call")
    if not calls and isinstance(legacy, dict) and legacy.get("name"):
        calls.append(ToolCall.received(f"{id_prefix}_0", _clean_name(legacy["name"]), legacy.get("arguments")))
    content = _content_text(message.get("content"))
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return AssistantReply(
        content=content,
        tool_calls=calls,
        # "stop" beside tool calls (some servers, mostly when streaming) means the tool calls.
        finish_reason="tool_calls" if calls and choice.get("finish_reason") == "stop" else choice.get("finish_reason"),
        usage={
            "prompt_tokens": _count(usage.get("prompt_tokens")),
            "completion_tokens": _count(usage.get("completion_tokens")),
        },
        model=body.get("model"),
    )


def _count(value: Any) -> int:
    """A token count as sent, or 0 when missing, negative or not a number."""
    try:
        number = int(value or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, number)


def _clean_name(name: Any) -> str:
    return str(name or "").strip().rstrip(":").strip()


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)
