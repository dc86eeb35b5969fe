"""In-process fakes for the engine's unit tests: no Celery, no HTTP, no network.

- the store runs on ``fakeredis`` (with Lua), so the engine's real scripts run;
- :class:`FakeRuntime` implements the engine's seam (``agent_platform.engine.seam.Runtime``);
  the steps it is asked to dispatch are kept in :attr:`FakeRuntime.queue`;
- :class:`FakeModel` answers model calls from a script (replies or exceptions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fakeredis

from agent_platform import AssistantAgent, tool
from agent_platform.engine.dispatch import StepMessage, task_kind
from agent_platform.engine.runner import StepReport, run_step
from agent_platform.engine.seam import FinishHook
from agent_platform.errors import AgentNotFound, WorkflowNotFound
from agent_platform.ids import new_workflow_id
from agent_platform.llm.reply import AssistantReply, ToolCall
from agent_platform.memory import ConversationListMemory
from agent_platform.settings import Settings
from agent_platform.store.workflows import WorkflowStore


class FakeModel:
    """A model client whose replies come from a list (an exception is raised instead)."""

    def __init__(self, *replies: AssistantReply | BaseException) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def resolved(self) -> dict[str, Any]:
        return {"model": "fake", "max_tool_rounds": None, "tool_result_role": "tool"}

    def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> AssistantReply:
        self.requests.append({"messages": messages, "tool_choice": tool_choice})
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


def say(text: str) -> AssistantReply:
    return AssistantReply(text, [], "stop", {"prompt_tokens": 3, "completion_tokens": 2})


def call(*calls: tuple[str, str]) -> AssistantReply:
    """A reply calling tools: ``call(("add", '{"a": 1, "b": 2}'), ...)``."""
    tool_calls = [ToolCall(f"c{i}", name, arguments) for i, (name, arguments) in enumerate(calls)]
    return AssistantReply("", tool_calls, "tool_calls", {"prompt_tokens": 3, "completion_tokens": 2})


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


FLAKY = {"calls": 0}


@tool(retries=1)
def flaky() -> str:
    """Fails on its first call."""
    FLAKY["calls"] += 1
    if FLAKY["calls"] == 1:
        raise ConnectionError("first call fails")
    return "fine"


@tool(requires_approval=True)
def wire(amount: int) -> str:
    """Needs an approval."""
    return f"wired {amount}"


@tool(timeout=5)
def timed(x: int) -> int:
    """Has a timeout (Celery's time limit of its own task)."""
    return x


PAUSE: dict[str, Any] = {}


@tool
def pausing(context: Any) -> str:
    """Pauses its own workflow while it runs (``PAUSE["runtime"]`` is the fake runtime)."""
    from agent_platform.engine import control

    control.pause(PAUSE["runtime"], context.workflow_id)
    return "paused"


def make_agent(
    model: FakeModel, name: str = "Unit", state_key: str = "workflow_state", local_steps: bool | None = None
) -> AssistantAgent:
    return AssistantAgent(
        name,
        tools=[add, flaky, wire, timed, pausing],
        memory=ConversationListMemory(),
        llm=model,  # type: ignore[arg-type]
        state_key=state_key,
        local_steps=local_steps,
    )


@dataclass
class Dispatched:
    message: StepMessage
    countdown: float | None


class FakeRuntime:
    """The engine's seam over fakeredis, with a queue instead of a broker."""

    def __init__(self, *agents: AssistantAgent, settings: Settings | None = None) -> None:
        self.settings = settings or Settings(lease_ttl=5.0, dispatch_grace=1.0)
        self.worker = "unit@test"
        self.finish_hooks: list[FinishHook] = []
        self._agents = {a.name: a for a in agents}
        self.client = fakeredis.FakeRedis(decode_responses=True)
        self._stores: dict[str, WorkflowStore] = {}
        self.queue: list[Dispatched] = []

    @property
    def agents(self) -> dict[str, AssistantAgent]:
        return self._agents

    def agent(self, name: str) -> AssistantAgent:
        if name not in self._agents:
            raise AgentNotFound(name)
        return self._agents[name]

    def store_for(self, agent: AssistantAgent | str) -> WorkflowStore:
        agent = self.agent(agent) if isinstance(agent, str) else agent
        if agent.state_key not in self._stores:
            self._stores[agent.state_key] = WorkflowStore(self.client, "", agent.state_key)
        return self._stores[agent.state_key]

    def stores(self) -> list[WorkflowStore]:
        return [self.store_for(a) for a in self._agents.values()]

    def find_store(self, workflow_id: str) -> WorkflowStore:
        for store in self.stores():
            if store.exists(workflow_id):
                return store
        raise WorkflowNotFound(workflow_id)

    def history_for(self, agent: AssistantAgent) -> Any:
        return agent.memory.bind(self, agent.name)

    def dispatch(self, message: StepMessage, countdown: float | None = None) -> None:
        self.queue.append(Dispatched(message, countdown))

    def dispatch_many(self, messages: Sequence[StepMessage], countdown: float | None = None) -> None:
        for message in messages:
            self.dispatch(message, countdown)

    # -- driving ------------------------------------------------------------------------
    def start(self, agent: str, task: str, session_id: str = "s1") -> str:
        wf, _ = self.store_for(agent).create(new_workflow_id(), agent, session_id, task)
        self.dispatch(StepMessage(agent, wf, task_kind("start"), 0))
        return wf

    def take(self) -> StepMessage:
        return self.queue.pop(0).message

    def run_next(self) -> StepReport:
        return run_step(self, self.take(), self.worker)

    def drain(self, limit: int = 50) -> Iterator[StepReport]:
        """Run queued steps (countdowns ignored) until the queue is empty."""
        for _ in range(limit):
            if not self.queue:
                return
            yield self.run_next()
        raise AssertionError("the queue never emptied")
