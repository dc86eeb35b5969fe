"""The agents the benchmarks run (loaded by the workers as ``AGENT_APP=bench.agent:<name>``).

- ``bench_bot``: one no-op tool; its turn is start, llm (tool call), tool, llm (answer), finish.
- ``lanes``: ``bench_bot`` and clones of it under other names (so other queues), one per
  kind of worker that ``bench.steps`` and ``bench.throughput`` run side by side: Celery
  pools (``BenchBot-threads``, ``BenchBot-gevent``) and local steps (``BenchBot-local``).
- ``long_bots``: ``LongBot`` (and ``LongBot-local``), ``bench_bot`` with room for 1,000
  model calls a turn (``bench.long_turn``).
- ``slow_bot``: one tool that takes :data:`SLOW_SECONDS` (the step ``bench.recovery`` kills).

Local steps (issue 17) are turned on where the engine offers them: by the agent's
``local_steps=True`` argument and by :data:`LOCAL_STEPS_ENV` in the environment of the
worker that serves the ``-local`` agents (:func:`local_steps_support` says which of the
two this engine knows; None: neither, and the benchmarks print "n/a").
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import signals

from agent_platform import AssistantAgent, tool
from agent_platform.memory import ConversationRedisMemory
from agent_platform.settings import ENV_FIELDS
from agent_platform.tool import ToolContext

#: Seconds the slow tool takes.
SLOW_SECONDS = 5.0
#: Redis keys the slow tool writes: a counter of starts (hash field per workflow) and of ends.
SLOW_STARTED = "bench:slow:started"
SLOW_FINISHED = "bench:slow:finished"
#: The deployment-wide switch of local steps (issue 17), set on the worker of ``-local`` agents.
LOCAL_STEPS_ENV = {"AGENT_PLATFORM_LOCAL_STEPS": "1"}
#: Suffix of the agents that run with local steps.
LOCAL = "-local"
#: Set on a worker (``"1"``) to have it push each ended turn to :func:`ends_key` (a finish
#: hook), as the raw chain's last task pushes its turn id to its own list: the throughput
#: driver then learns of an end from one ``BLPOP`` for both systems, instead of waking
#: for every record of our step logs (issue 15: the driver shares the machine's 2 CPUs).
END_SIGNAL_ENV = "BENCH_END_SIGNAL"


def ends_key(agent: str) -> str:
    """The Redis list of ``[workflow_id, runtime_status]`` (JSON) of ``agent``'s ended turns."""
    return f"bench:ours:ends:{agent}"


def push_end(runtime: object, state: object) -> None:
    """A finish hook: push the ended turn onto :func:`ends_key` (one ``LPUSH``)."""
    store = runtime.store_for(state.agent)  # type: ignore[attr-defined]
    store.client.lpush(ends_key(state.agent), json.dumps([state.instance_id, state.runtime_status.value]))  # type: ignore[attr-defined]


def _install_end_signal(sender: object = None, **_: object) -> None:
    runtime = getattr(getattr(sender, "app", None), "runtime", None)
    if os.environ.get(END_SIGNAL_ENV) == "1" and runtime is not None and push_end not in runtime.finish_hooks:
        runtime.finish_hooks.append(push_end)  # before the pool forks: every child has it


signals.worker_init.connect(_install_end_signal, weak=False)


@tool
def noop() -> str:
    """Do nothing and say so (the benchmark's tool step)."""
    return "ok"


@tool
def slow_step(context: ToolContext) -> str:
    """Work for five seconds (the step that the recovery benchmark kills)."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        client.hincrby(SLOW_STARTED, context.workflow_id, 1)
        time.sleep(SLOW_SECONDS)
        client.hincrby(SLOW_FINISHED, context.workflow_id, 1)
    finally:
        client.close()
    return "done"


def local_steps_support() -> str | None:
    """How this engine turns local steps on: ``"agent"`` (``AssistantAgent(local_steps=True)``
    is accepted), ``"env"`` (only ``AGENT_PLATFORM_LOCAL_STEPS`` is known), or None."""
    try:
        AssistantAgent(name="LocalStepsProbe", local_steps=True)  # type: ignore[call-arg]
        return "agent"
    except TypeError:
        pass
    return "env" if "AGENT_PLATFORM_LOCAL_STEPS" in ENV_FIELDS else None


def _agent(name: str, tools: list, max_iterations: int = 10) -> AssistantAgent:
    options = {"local_steps": True} if name.endswith(LOCAL) and local_steps_support() == "agent" else {}
    return AssistantAgent(
        name=name,
        role="Benchmark assistant",
        goal="Call the tool once, then answer.",
        instructions=["Call the tool you have once.", "Then answer in one word."],
        tools=tools,
        memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
        max_iterations=max_iterations,
        **options,
    )


bench_bot = _agent("BenchBot", [noop])
slow_bot = _agent("SlowBot", [slow_step])
lanes = [bench_bot, *(_agent(f"BenchBot-{lane}", [noop]) for lane in ("threads", "gevent", "local"))]
long_bots = [_agent("LongBot", [noop], max_iterations=1000), _agent(f"LongBot{LOCAL}", [noop], max_iterations=1000)]


def lane_agent(pool: str = "prefork", local: bool = False, base: str = "BenchBot") -> str:
    """The name of the agent served by a worker of ``pool`` (prefork, threads, gevent), or
    by the local-steps worker."""
    if local:
        return f"{base}{LOCAL}"
    return base if pool == "prefork" else f"{base}-{pool}"
