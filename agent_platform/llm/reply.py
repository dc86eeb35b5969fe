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
Arguments are never dropped: whatever arrives is kept as text and validated by the tool
step, whose error goes back to the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import LLMError


@dataclass(frozen=True)
class ToolCall:
    """One tool call of an assistant message.

    Attributes:
        id: the call id the tool message must quote.
        name: the tool name (trailing ``:`` and spaces stripped).
        arguments: the arguments as the JSON text to send back (objects are serialised).
    """

    id: str
    name: str
    arguments: str

    def to_message(self) -> dict[str, Any]:
        """The ``tool_calls`` entry in OpenAI's shape."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class AssistantReply:
    """The part of a chat completion the engine uses.

    Attributes:
        content: the text ("" when none).
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
            "tool_calls": [c.to_message() for c in self.tool_calls],
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AssistantReply:
        """Inverse of :meth:`to_dict`."""
        calls = [
            ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in data.get("tool_calls") or []
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
        LLMError: the body has no ``choices[0].message`` (an unusable reply).
    """
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LLMError(f"the model's reply has no choices[0].message: {str(body)[:300]}") from None
    calls: list[ToolCall] = []
    for n, raw in enumerate(message.get("tool_calls") or []):
        fn = (raw or {}).get("function") or {}
        name = _clean_name(fn.get("name") or raw.get("name"))
        if not name:
            raise LLMError(f"the model sent a tool call without a name: {str(raw)[:300]}")
        call_id = raw.get("id") or f"{id_prefix}_{n}"
        calls.append(ToolCall(str(call_id), name, _arguments_text(fn.get("arguments"))))
    legacy = message.get("function_call")
    if not calls and isinstance(legacy, dict) and legacy.get("name"):
        calls.append(ToolCall(f"{id_prefix}_0", _clean_name(legacy["name"]), _arguments_text(legacy.get("arguments"))))
    usage = body.get("usage") or {}
    return AssistantReply(
        content=_content_text(message.get("content")),
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage={
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
        },
        model=body.get("model"),
    )


def _clean_name(name: Any) -> str:
    return str(name or "").strip().rstrip(":").strip()


def _arguments_text(arguments: Any) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)
