"""The prompt of an ``llm`` step, kept incrementally (DESIGN section 3, rule 9).

Nothing is copied at each step: ``start`` records how many memory messages the turn sees
(``history_len``); each ``llm`` step's checkpoint appends to the workflow's ``messages``
list the tool results before it (in call order) and its own reply, and marks the step log
folded up to there (``folded_seq``). The next ``llm`` step reads that list and only the
records after it (the tool results of one stage), so its cost does not grow with the
records before it.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def fold(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages of step records, in log order: an ``llm`` record is its assistant
    message, ``tool`` records answer it in call order; retries, lost runs, events and
    other kinds add nothing."""
    messages: list[dict[str, Any]] = []
    pending: dict[int, dict[str, Any]] = {}
    for record in records:
        if record["status"] in ("retry", "lost"):
            continue
        if record["kind"] == "llm":
            _flush(messages, pending)
            messages.append(AssistantReply.from_dict(record["data"]).to_message())
        elif record["kind"] == "tool":
            data = record["data"]
            pending[data["index"]] = tool_message(data["call_id"], tool_result_text(data))
    _flush(messages, pending)
    return messages


def build_messages(
    agent: AssistantAgent, history: list[dict[str, Any]], task: str, turn: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The chat messages for the next model call.

    Args:
        agent: gives the system prompt.
        history: the session's earlier messages (memory entries).
        task: this turn's user message.
        turn: this turn's messages since the user's (folded, then the records after them).

    Returns:
        ``[system, *history, user, *turn]`` in OpenAI's shape.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": agent.system_prompt()}]
    messages.extend({k: m[k] for k in MESSAGE_KEYS if k in m} for m in history)
    messages.append({"role": "user", "content": task})
    messages.extend(turn)
    return messages


def used_call_ids(turn: Iterable[dict[str, Any]]) -> set[str]:
    """The tool call ids the turn's assistant messages used."""
    return {call["id"] for m in turn if m.get("role") == "assistant" for call in m.get("tool_calls") or []}


def _flush(messages: list[dict[str, Any]], pending: dict[int, dict[str, Any]]) -> None:
    messages.extend(pending[i] for i in sorted(pending))
    pending.clear()
