"""Issue 13: RabbitMQ as the broker (quorum queues), the state on Redis.

The machine's RabbitMQ (127.0.0.1:5672) with a vhost of this run's own; the state on the
test redis-server. Cases: the Paris turn (C01), SIGKILL of every worker mid-tool (C04:
RabbitMQ redelivers the unacknowledged tool step when the worker's connection drops), and
what goes through native delayed delivery on quorum queues: an LLM retry's countdown, a
tool retry's sub-second countdown, a tool's time limit, and the sweeper.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import pytest
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, error, text, tool_call

from .agents_failures import tool_events
from .helpers import Api, Platform, chain_problems
from .scaling_cases import FAST_RECOVERY, paris_turn, sigkill_mid_tool
from .topologies import RabbitVhost, topology_platform

QUEUES = ("agent.TravelBuddy", "agent.OpsBuddy")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def platform(
    rabbit_vhost: RabbitVhost,
    redis_server: EmbeddedRedis,
    model_server: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    with topology_platform(
        tmp_path_factory,
        "rabbitmq",
        redis_server.url,
        model_server.base_url,
        AGENT_PLATFORM_BROKER_URL=rabbit_vhost.url,
        AGENT_PLATFORM_LLM_BACKOFF_MAX="0.2",
        **FAST_RECOVERY,
    ) as deployment:
        yield deployment


def test_c01_paris_turn_on_rabbitmq_quorum_queues(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis, rabbit_vhost: RabbitVhost
) -> None:
    paris_turn(api, model, platform, redis_client, "rabbit-paris")

    types = rabbit_vhost.queue_types()
    assert {q: types.get(q) for q in QUEUES} == dict.fromkeys(QUEUES, "quorum"), types
    # the worker declared native delayed delivery's queues (quorum too)
    assert types.get("celery_delayed_0") == "quorum" and types.get("celery_delayed_27") == "quorum", types
    assert platform.celery.conf.broker_transport_options["confirm_publish"] is True


def test_c04_sigkill_of_the_whole_worker_mid_tool_on_rabbitmq(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    sigkill_mid_tool(api, model, platform, redis_client, "rabbit-c04")


def test_llm_retry_countdown_goes_through_native_delayed_delivery(
    api: Api, model: ScriptedModel, platform: Platform
) -> None:
    """A 503 is retried after a backoff: the retry is a step message with a countdown,
    which quorum queues deliver through the ``celery_delayed_*`` queues (in whole
    seconds; a sub-second backoff becomes 1 s)."""
    model.add(error(503), tool_call("search_flights", {"destination": "Oslo"}), text("Flights to Oslo found."))
    wf = api.start_turn("Flights to Oslo?", session_id="rabbit-retry", agent="TravelBuddy")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    steps = api.steps(wf)
    assert [(s["kind"], s["status"], s["attempt"]) for s in steps] == [
        ("start", "ok", 1), ("llm", "retry", 1), ("llm", "ok", 2), ("tool", "ok", 1), ("llm", "ok", 1),
        ("finish", "ok", 1),
    ], steps  # fmt: skip
    assert chain_problems(steps) == []
    assert model.calls == 3
    # the backoff (at most 0.2 s here) was rounded up to native delayed delivery's 1 s
    waited = _time(steps[2]["started_at"]) - _time(steps[1]["finished_at"])
    assert waited.total_seconds() >= 0.95, (steps[1], steps[2])
    log = platform.stack.logs(since_mark=True)
    assert "ValueError" not in log and "Direct exchanges are not supported" not in log, log[-4000:]


def test_tool_retry_and_time_limit_on_rabbitmq(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    """C02's flaky tool (its retry's backoff is under a second) and a tool stopped by its
    1 s time limit (Celery's soft time limit): both answer the model, both turns complete."""
    model.add(tool_call("flaky_lookup", {"query": "q"}), text("Looked it up."))
    flaky = api.start_turn("Look it up", session_id="rabbit-flaky", agent="OpsBuddy")
    assert api.wait_status(flaky, timeout=30)["runtime_status"] == "COMPLETED"
    model.add(tool_call("hanging_task", {}), text("It hung."))
    hanging = api.start_turn("Run the hanging task", session_id="rabbit-hang", agent="OpsBuddy")
    status = api.wait_status(hanging, timeout=40)

    assert status["runtime_status"] == "COMPLETED", status
    tools = [(s["status"], s["attempt"]) for s in api.steps(flaky) if s["kind"] == "tool"]
    assert tools == [("retry", 1), ("ok", 2)], tools
    hung = [s for s in api.steps(hanging) if s["kind"] == "tool"]
    assert [s["status"] for s in hung] == ["error"] and "1" in hung[0]["data"]["error"], hung
    assert len(tool_events(redis_client, "hanging_task:start")) == 1
    assert tool_events(redis_client, "hanging_task:end") == []


def test_sweeper_dispatches_a_step_lost_between_checkpoint_and_publish(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    """A pool process SIGKILLed right after the tool step's checkpoint, before it publishes
    the next step (fault injection): no message exists; the sweeper dispatches it."""
    for worker in [w for w in platform.stack.workers if w.alive()]:
        platform.stack.stop_worker(worker)
    faulty = platform.stack.start_worker(
        AGENT_PLATFORM_FAULT="exit_after_checkpoint:tool", AGENT_PLATFORM_DISPATCH_GRACE="2"
    )  # the module's last test: the deployment stops after it
    model.add(tool_call("slow_task", {"seconds": 0.2, "label": "x"}), text("Recovered by the sweeper."))
    wf = api.start_turn("Run a quick task", session_id="rabbit-sweep", agent="OpsBuddy")
    status = api.wait_status(wf, timeout=30)

    assert status["runtime_status"] == "COMPLETED", status
    assert re.search(rf"re-dispatching {wf} step llm/3", faulty.log()), faulty.log()[-3000:]
    assert [s["kind"] for s in api.steps(wf)] == ["start", "llm", "tool", "llm", "finish"]
    assert len(tool_events(redis_client, "slow_task:start")) == 1
