"""The benchmarks' model: a :class:`~agent_platform.testing.ScriptedModel` in its own process.

``python -m bench.model`` prints its ``base_url`` on the first line of stdout and serves
until its stdin closes. Every request is answered at once (zero added latency): with the
last message from a tool, the text answer ``done``; otherwise a call of the first tool in
the request (no arguments). So every system makes the same two calls per turn.

It runs in a process of its own so that its HTTP server does not share a GIL with the
system under test (DBOS and LangGraph run their steps in the benchmark's process).
"""

from __future__ import annotations

import sys
from typing import Any

from agent_platform.testing import ScriptedModel, text, tool_call
from agent_platform.testing.replies import Reply

ANSWER = "done"


def respond(body: dict[str, Any]) -> Reply:
    """A tool call of the first tool, or the answer once a tool result came back."""
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    if messages and messages[-1].get("role") == "tool" or not tools or body.get("tool_choice") == "none":
        return text(ANSWER)
    return tool_call(tools[0]["function"]["name"], {})


def main() -> None:
    with ScriptedModel(default=respond) as model:
        print(model.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or exits)


if __name__ == "__main__":
    main()
