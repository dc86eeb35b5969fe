"""Orchestration policies: stand-ins for a model that pick the next agent without one.

A policy has the model client's interface (``chat(messages, tools, tool_choice) ->
AssistantReply`` and ``resolved()``), so an orchestrator is an ordinary agent whose
``llm`` step asks the policy which agent tool to call next: every round is a checkpointed
step, every wait a durable suspension, and the turn ends like any other (DESIGN section 5).

A policy reads the turn from the messages the engine builds (system, history, the
turn's task as the last user message, then the assistant tool calls and their tool
results) and answers either one tool call (the next agent, with the task and the answers
so far) or, after ``max_rounds`` calls, when every agent answered, or when the engine
forbids tools (``tool_choice="none"``, the turn's last iteration), a summary naming
each agent's answer or why it gave none.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..llm.reply import AssistantReply, ToolCall

ERROR_PREFIX = "Error: "


@dataclass
class AgentCall:
    """One call of an agent tool in the current turn.

    Attributes:
        tool: the tool name (the agent's, see ``agent_tool.tool_name_for``).
        answer: the agent's answer text, when it answered.
        error: why it did not (e.g. ``timed out waiting for HotelFinder``), or None.
    """

    tool: str
    answer: str | None = None
    error: str | None = None


def read_turn(messages: list[dict[str, Any]]) -> tuple[str, list[AgentCall]]:
    """The current turn's task and its agent calls in order (results attached).

    The task is the last ``user`` message; what follows it is this turn's tool rounds.
    """
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    task = str(messages[start].get("content") or "") if start >= 0 else ""
    calls: dict[str, AgentCall] = {}
    for message in messages[start + 1 :]:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                calls[call["id"]] = AgentCall(call["function"]["name"])
        elif message.get("role") == "tool" and message.get("tool_call_id") in calls:
            found = calls[message["tool_call_id"]]
            content = str(message.get("content") or "")
            if content.startswith(ERROR_PREFIX):
                found.error = content[len(ERROR_PREFIX) :]
            else:
                found.answer = content
    return task, list(calls.values())


class Policy:
    """Base of the deterministic policies: subclasses choose the next agent.

    Args:
        agents: ``(tool name, agent name)`` pairs, in the orchestrator's order.
        max_rounds: agent calls allowed in one turn.
        name: reported as the ``model`` of each reply.
    """

    name = "policy"

    def __init__(self, agents: list[tuple[str, str]], max_rounds: int) -> None:
        self.agents = list(agents)
        self.max_rounds = max_rounds
        self._names = dict(agents)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} agents={[a for _, a in self.agents]} max_rounds={self.max_rounds}>"

    def resolved(self) -> dict[str, Any]:
        """The engine's view of the "model": no tool-round limit besides ``max_iterations``."""
        return {"model": self.name, "base_url": None, "temperature": None, "max_tool_rounds": None}

    def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> AssistantReply:
        """The next agent call, or the summary when the turn is done (``config`` is unused)."""
        task, calls = read_turn(messages)
        answered = {c.tool for c in calls if c.answer is not None}
        pending = [tool for tool, _ in self.agents if tool not in answered]
        if tool_choice == "none" or not tools or len(calls) >= self.max_rounds or not pending:
            return self._reply(self.summary(task, calls))
        last = calls[-1].tool if calls else None
        tool = self.choose(pending, last)
        call = ToolCall(f"call_{len(calls) + 1}_{tool}", tool, json.dumps({"task": self.brief(task, calls)}))
        return self._reply("", [call])

    def choose(self, pending: list[str], last: str | None) -> str:
        """The tool (agent) to call next among those that have not answered."""
        raise NotImplementedError

    def brief(self, task: str, calls: list[AgentCall]) -> str:
        """The task sent to the next agent: the user's task and the answers so far."""
        answers = [f"- {self._names.get(c.tool, c.tool)}: {c.answer}" for c in calls if c.answer is not None]
        return task if not answers else task + "\n\nAnswers of the other agents so far:\n" + "\n".join(answers)

    def summary(self, task: str, calls: list[AgentCall]) -> str:
        """The final answer: one line per agent (its latest answer, or why there is none)."""
        latest = {c.tool: c for c in calls}
        lines: list[str] = []
        silent: list[str] = []
        for tool, agent in self.agents:
            call = latest.get(tool)
            if call is None:
                silent.append(agent)
                lines.append(f"- {agent} was not asked (the limit of {self.max_rounds} rounds was reached)")
            elif call.answer is not None:
                lines.append(f"- {agent} answered: {call.answer}")
            else:
                silent.append(agent)
                lines.append(f"- {agent} did not answer: {call.error or 'no answer'}")
        head = "All agents answered." if not silent else f"No answer from: {', '.join(silent)}."
        return f"Task: {task}\n{head}\n" + "\n".join(lines)

    def _reply(self, content: str, calls: list[ToolCall] | None = None) -> AssistantReply:
        return AssistantReply(
            content=content,
            tool_calls=calls or [],
            finish_reason="tool_calls" if calls else "stop",
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            model=self.name,
        )


class RoundRobinPolicy(Policy):
    """Calls the agents in order, one per round, skipping those that answered; an agent
    that did not answer is asked again in the next cycle while rounds remain."""

    name = "round-robin"

    def choose(self, pending: list[str], last: str | None) -> str:
        order = [tool for tool, _ in self.agents]
        start = order.index(last) + 1 if last in order else 0
        for k in range(len(order)):
            candidate = order[(start + k) % len(order)]
            if candidate in pending:
                return candidate
        return pending[0]


class RandomPolicy(Policy):
    """Calls a random agent among those that have not answered, not the previous one
    when another is left. ``seed`` makes the choice repeatable (tests)."""

    name = "random"

    def __init__(self, agents: list[tuple[str, str]], max_rounds: int, seed: int | None = None) -> None:
        super().__init__(agents, max_rounds)
        self._random = random.Random(seed)

    def choose(self, pending: list[str], last: str | None) -> str:
        candidates = [tool for tool in pending if tool != last] or pending
        return self._random.choice(candidates)
