"""The benchmarks' model: a :class:`~agent_platform.testing.ScriptedModel` in its own process.

``python -m bench.model`` prints its ``base_url`` on the first line of stdout and serves
until its stdin closes. Every request is answered at once (zero added latency): a call of
the first tool in the request (no arguments) until the turn has had its tool rounds, then
the text answer ``done``. A turn has one tool round, or ``N`` when its task (the last
``user`` message) contains ``[rounds=N]`` (``bench.long_turn``). So every system makes the
same calls per turn.

It runs in a process of its own so that its HTTP server does not share a GIL with the
system under test (DBOS and LangGraph run their steps in the benchmark's process).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from agent_platform.testing import ScriptedModel, text, tool_call
from agent_platform.testing.replies import Reply

ANSWER = "done"
ROUNDS = re.compile(r"\[rounds=(\d+)\]")


def task_with_rounds(task: str, rounds: int) -> str:
    """``task`` asking the model for ``rounds`` tool rounds before it answers."""
    return f"{task} [rounds={rounds}]"


def respond(body: dict[str, Any]) -> Reply:
    """A tool call of the first tool while the turn (the messages after the last ``user``
    message) has fewer tool results than its rounds; otherwise the answer."""
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    if not tools or body.get("tool_choice") == "none":
        return text(ANSWER)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    match = ROUNDS.search(str(messages[last_user].get("content") or "")) if last_user >= 0 else None
    rounds = int(match.group(1)) if match else 1
    done = sum(1 for m in messages[last_user + 1 :] if m.get("role") == "tool")
    if done >= rounds:
        return text(ANSWER)
    return tool_call(tools[0]["function"]["name"], {})


def main() -> None:
    with ScriptedModel(default=respond) as model:
        print(model.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or exits)


if __name__ == "__main__":
    main()
