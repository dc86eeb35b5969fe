"""The agents the benchmarks run (loaded by the workers as ``AGENT_APP=bench.agent:<name>``).

- ``bench_bot``: one no-op tool; its turn is start, llm (tool call), tool, llm (answer), finish.
- ``slow_bot``: one tool that takes :data:`SLOW_SECONDS` (the step ``bench.recovery`` kills).
"""

from __future__ import annotations

import os
import time

import redis

from agent_platform import AssistantAgent, tool
from agent_platform.memory import ConversationRedisMemory
from agent_platform.tool import ToolContext

#: Seconds the slow tool takes.
SLOW_SECONDS = 5.0
#: Redis keys the slow tool writes: a counter of starts (hash field per workflow) and of ends.
SLOW_STARTED = "bench:slow:started"
SLOW_FINISHED = "bench:slow:finished"


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


def _agent(name: str, tools: list) -> AssistantAgent:
    return AssistantAgent(
        name=name,
        role="Benchmark assistant",
        goal="Call the tool once, then answer.",
        instructions=["Call the tool you have once.", "Then answer in one word."],
        tools=tools,
        memory=ConversationRedisMemory(store_name="conversationstore", session_id="default"),
    )


bench_bot = _agent("BenchBot", [noop])
slow_bot = _agent("SlowBot", [slow_step])
