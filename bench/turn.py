"""The work of one turn without any durability: what the raw chain, DBOS and LangGraph run.

The same requests as agent-platform makes for ``bench_bot`` (its system prompt, its tool
schemas, ``tool_choice="auto"``), through the same ``openai`` SDK settings (no SDK
retries, one client per process), to the same model server.
"""

from __future__ import annotations

import json
import os
from typing import Any

import openai

from .agent import bench_bot

_clients: dict[int, openai.OpenAI] = {}


def client() -> openai.OpenAI:
    """This process's SDK client (a client made before a fork is never reused)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = openai.OpenAI(
            base_url=os.environ["OPENAI_BASE_URL"], api_key="not-needed", timeout=60.0, max_retries=0
        )
    return _clients[pid]


def first_messages(task: str) -> list[dict[str, Any]]:
    """The ``start`` step: the system prompt and the user's task."""
    return [{"role": "system", "content": bench_bot.system_prompt()}, {"role": "user", "content": task}]


def call_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``llm`` step: one chat completion; returns the assistant message as a dict."""
    reply = client().chat.completions.create(
        model="scripted-model", messages=messages, tools=bench_bot.tool_schemas(), tool_choice="auto"
    )
    message = reply.choices[0].message
    calls = [c.model_dump() for c in message.tool_calls or []]
    return {"role": "assistant", "content": message.content or "", **({"tool_calls": calls} if calls else {})}


def run_tool(call: dict[str, Any]) -> dict[str, Any]:
    """A ``tool`` step: run the named tool of ``bench_bot``; returns the ``tool`` message."""
    function = call["function"]
    result = bench_bot.tools[function["name"]].func(**json.loads(function["arguments"] or "{}"))
    return {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)}
