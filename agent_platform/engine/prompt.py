"""The prompt of an ``llm`` step: rebuilt from the session's memory and the step log.

Nothing is copied at each step (DESIGN section 3, rule 9): ``start`` records how many
memory messages the turn sees (``history_len``); each ``llm`` step reads those, the
turn's input, and the records of the turn's earlier ``llm`` and ``tool`` steps.
"""

from __future__ import annotations

from typing import Any

from ..agent import AssistantAgent
from ..jsontext import dumps
from ..llm.reply import AssistantReply

MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def tool_message(call_id: str, content: Any) -> dict[str, Any]:
    """The ``tool`` role message answering ``call_id`` (content as strict JSON text)."""
    text = content if isinstance(content, str) else dumps(content)
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def tool_result_text(data: dict[str, Any]) -> str:
    """What the model reads for a tool step: the result as strict JSON text (NaN and
    infinities as null, :mod:`agent_platform.jsontext`), or ``Error: ...``."""
    if "error" in data:
        return f"Error: {data['error']}"
    result = data.get("result")
    return result if isinstance(result, str) else dumps(result)


def build_messages(
    agent: AssistantAgent, history: list[dict[str, Any]], task: str, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The chat messages for the next model call.

    Args:
        agent: gives the system prompt.
        history: the session's earlier messages (memory entries).
        task: this turn's user message.
        records: this turn's step records, in log order.

    Returns:
        ``[system, *history, user, (assistant, tool...)*]`` in OpenAI's shape; tool
        results follow their assistant message in call order.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt()}]
    messages.extend({k: m[k] for k in MESSAGE_KEYS if k in m} for m in history)
    messages.append({"role": "user", "content": task})
    pending: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["status"] == "retry":
            continue
        if record["kind"] == "llm":
            _flush(messages, pending)
            messages.append(AssistantReply.from_dict(record["data"]).to_message())
        elif record["kind"] == "tool":
            data = record["data"]
            pending[data["index"]] = tool_message(data["call_id"], tool_result_text(data))
    _flush(messages, pending)
    return messages


def _flush(messages: list[dict[str, Any]], pending: dict[int, dict[str, Any]]) -> None:
    messages.extend(pending[i] for i in sorted(pending))
    pending.clear()
