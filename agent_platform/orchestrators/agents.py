"""Orchestrators: agents whose tools are other agents (DESIGN section 5).

Each orchestrator is an :class:`~agent_platform.agent.AssistantAgent` whose tools are
:class:`~agent_platform.bus.agent_tool.AgentTool` objects, one per agent it coordinates,
so each of its turns is an ordinary durable workflow: every round is an ``llm`` step (the
choice of the next agent) and a ``tool`` step (trigger the agent, then SUSPENDED until its
answer or ``response_timeout``), with checkpoints, SSE, pause and terminate. A turn
always ends: after at most ``max_rounds`` agent calls it answers with a summary that names
every agent's answer, or the agent that did not answer (dapr-agents issue 76 is an
orchestrator that never stopped).

- :class:`RoundRobinOrchestrator` and :class:`RandomOrchestrator` choose with a
  deterministic policy (:mod:`.policies`) instead of a model.
- :class:`LLMOrchestrator` lets a model choose (and decide when the task is done);
  ``max_iterations = max_rounds + 1``, and the engine makes the last model call with
  ``tool_choice="none"``, so it must answer then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..agent import AssistantAgent
from ..bus.agent_tool import AgentTool
from ..errors import ConfigurationError
from ..llm.openai_client import OpenAIChatClient
from .policies import Policy, RandomPolicy, RoundRobinPolicy


def _agent_tools(name: str, agents: Sequence[Any], response_timeout: float | None) -> list[AgentTool]:
    if not agents:
        raise ConfigurationError(f"orchestrator {name}: name at least one agent")
    tools = [AgentTool(agent, timeout=response_timeout) for agent in agents]
    if any(t.agent_name == name for t in tools):
        raise ConfigurationError(f"orchestrator {name} cannot orchestrate itself")
    return tools


def _rounds(name: str, max_rounds: int | None, default: int) -> int:
    rounds = default if max_rounds is None else max_rounds
    if rounds < 1:
        raise ConfigurationError(f"orchestrator {name}: max_rounds must be >= 1")
    return rounds


class PolicyOrchestrator(AssistantAgent):
    """An orchestrator driven by a :class:`~.policies.Policy` (no model calls).

    ``max_iterations`` is ``max_rounds + 2``: the policy stops calling agents after
    ``max_rounds`` calls and answers at the next iteration, so a normal end has
    ``stop_reason="stop"``; the engine's limit stays as a backstop.

    Args:
        name: the orchestrator's agent name.
        agents: agent names, or agents (their role and goal then describe their tools).
        policy_factory: builds the policy from ``(tool name, agent name)`` pairs and max_rounds.
        max_rounds: agent calls allowed in one turn.
        response_timeout: seconds to wait for each agent's answer (None: forever).
        **kwargs: any :class:`AssistantAgent` keyword (role, goal, stores, memory, ...).

    Raises:
        ConfigurationError: no agents, max_rounds < 1, or the orchestrator among its agents.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[Any],
        policy_factory: Any,
        max_rounds: int,
        response_timeout: float | None = 60.0,
        **kwargs: Any,
    ) -> None:
        tools = _agent_tools(name, agents, response_timeout)
        rounds = _rounds(name, max_rounds, len(tools))
        policy: Policy = policy_factory([(t.name, t.agent_name) for t in tools], rounds)
        kwargs.setdefault("role", "Orchestrator")
        kwargs.setdefault("goal", "Get the task done by the agents, then report their answers.")
        super().__init__(name, tools=tools, llm=policy, max_iterations=rounds + 2, **kwargs)  # type: ignore[arg-type]
        self.max_rounds = rounds
        self.response_timeout = response_timeout
        self.agent_names = [t.agent_name for t in tools]


class RoundRobinOrchestrator(PolicyOrchestrator):
    """Asks the agents in turn (one per round), each with the task and the answers so
    far; ends when every agent answered or after ``max_rounds`` calls (default: one per
    agent), answering with a summary that names each agent's answer or silence.

    Args:
        name: the orchestrator's agent name.
        agents: agent names or agents, in the order they are asked.
        max_rounds: agent calls allowed in one turn (default ``len(agents)``).
        response_timeout: seconds to wait for each answer; an agent that does not answer
            in time is named in the summary.
        **kwargs: any :class:`AssistantAgent` keyword.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[Any],
        max_rounds: int | None = None,
        response_timeout: float | None = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name, agents, RoundRobinPolicy, _rounds(name, max_rounds, len(agents)), response_timeout, **kwargs
        )


class RandomOrchestrator(PolicyOrchestrator):
    """Like :class:`RoundRobinOrchestrator`, but each round asks a random agent among those
    that have not answered (not the previous one when another is left).

    Args:
        seed: makes the choices repeatable (None: random).
        (others as :class:`RoundRobinOrchestrator`)
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[Any],
        max_rounds: int | None = None,
        response_timeout: float | None = 60.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        def factory(pairs: list[tuple[str, str]], rounds: int) -> RandomPolicy:
            return RandomPolicy(pairs, rounds, seed=seed)

        super().__init__(name, agents, factory, _rounds(name, max_rounds, len(agents)), response_timeout, **kwargs)


class LLMOrchestrator(AssistantAgent):
    """A model picks which agent to ask next (it may ask several at once) and decides when
    the task is done; at most ``max_rounds`` model rounds call agents, then the model must
    answer (``max_iterations = max_rounds + 1``, the last call with ``tool_choice="none"``).

    Args:
        name: the orchestrator's agent name.
        agents: agent names or agents (their role and goal describe their tools).
        llm: the model client (default :class:`OpenAIChatClient` from the environment).
        max_rounds: model rounds that may call agents (default ``2 * len(agents)``).
        response_timeout: seconds to wait for each answer.
        **kwargs: any :class:`AssistantAgent` keyword (``instructions`` are added to the
            default ones).

    Raises:
        ConfigurationError: no agents, max_rounds < 1, or the orchestrator among its agents.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[Any],
        llm: OpenAIChatClient | None = None,
        max_rounds: int | None = None,
        response_timeout: float | None = 60.0,
        **kwargs: Any,
    ) -> None:
        tools = _agent_tools(name, agents, response_timeout)
        rounds = _rounds(name, max_rounds, 2 * len(tools))
        extra = kwargs.pop("instructions", [])
        instructions = [
            "You coordinate other agents; each tool asks one agent and returns its answer.",
            f"Ask the agents what the task needs (at most {rounds} rounds), giving each the full task.",
            "When the task is done, answer with a summary that names each agent's answer.",
            "If an agent did not answer (a tool error), say which agent did not answer.",
            *([extra] if isinstance(extra, str) else list(extra)),
        ]
        kwargs.setdefault("role", "Orchestrator")
        kwargs.setdefault("goal", "Get the task done by the right agents, then report their answers.")
        super().__init__(name, tools=tools, llm=llm, max_iterations=rounds + 1, instructions=instructions, **kwargs)
        self.max_rounds = rounds
        self.response_timeout = response_timeout
        self.agent_names = [t.agent_name for t in tools]
