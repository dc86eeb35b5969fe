"""Issue 13: Redis Sentinel for the broker and the state: a primary, a replica, 3 Sentinels.

The components say ``failover: true`` with the Sentinels in ``redisHost`` and
``sentinelMasterName`` (Dapr's fields); the broker is kombu's Sentinel transport
(``sentinel://...;sentinel://...`` with ``master_name`` in
``AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS``). Cases: the Paris turn (C01), SIGKILL of
every worker mid-tool (C04), and the primary SIGKILLed in the middle of a turn: the
Sentinels promote the replica, the workers' state and broker connections follow it, and
the turn completes once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, text, tool_call

from .agents_failures import tool_events
from .helpers import Api, Platform, clean_redis
from .scaling_cases import FAST_RECOVERY, assert_turn_once, paris_turn, sigkill_mid_tool
from .topologies import MASTER_NAME, RedisSentinelServers, topology_platform, write_components
from .workers import wait_until


@pytest.fixture(scope="module")
def platform(
    redis_sentinel: RedisSentinelServers,
    redis_server: EmbeddedRedis,
    model_server: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    components = write_components(
        tmp_path_factory.mktemp("components-sentinel"),
        redis_sentinel.hosts,
        failover="true",
        sentinelMasterName=MASTER_NAME,
    )
    with topology_platform(
        tmp_path_factory,
        "sentinel",
        redis_server.url,
        model_server.base_url,
        components,
        AGENT_PLATFORM_BROKER_URL=redis_sentinel.broker_url,
        AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS=json.dumps({"master_name": MASTER_NAME}),
        # the lease TTL stays at its default: a failover (~3 s) must not outlast it
        **{**FAST_RECOVERY, "AGENT_PLATFORM_LEASE_TTL": "10"},
    ) as deployment:
        yield deployment


@pytest.fixture(autouse=True)
def clean_primary(redis_sentinel: RedisSentinelServers) -> None:
    with redis_sentinel.primary_client() as client:
        clean_redis(client)  # kombu's bindings stay: the broker lives here too


def test_c01_paris_turn_on_redis_sentinel(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis, redis_sentinel: RedisSentinelServers
) -> None:
    wf = paris_turn(api, model, platform, redis_client, "sentinel-paris")

    with redis_sentinel.primary_client() as primary:
        assert primary.exists(f"workflow_state:{{{wf}}}:meta")
        assert any(key.startswith("_kombu.binding.") for key in primary.scan_iter(match="_kombu*"))


def test_c04_sigkill_of_the_whole_worker_mid_tool_on_redis_sentinel(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    sigkill_mid_tool(api, model, platform, redis_client, "sentinel-c04")


def test_failover_in_the_middle_of_a_turn_completes_it_once(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis, redis_sentinel: RedisSentinelServers
) -> None:
    """The primary (state and broker) is SIGKILLed while the turn's tool runs; the
    Sentinels promote the replica within seconds. The tool's checkpoint and the next steps
    go to the new primary: the turn completes, every step recorded once, the tool run
    once, memory written once; a turn started after the failover completes too."""
    workers = [w.pid for w in platform.stack.workers if w.alive()]
    model.add(tool_call("slow_task", {"seconds": 4, "label": "failover"}), text("Done across the failover."))
    wf = api.start_turn("Run the task across a failover", session_id="sentinel-failover", agent="OpsBuddy")
    wait_until(lambda: tool_events(redis_client, "slow_task:start"), timeout=20, message="the tool to start")
    old, new = redis_sentinel.kill_primary()
    status = api.wait_status(wf, timeout=60)

    assert status["runtime_status"] == "COMPLETED", status
    assert old != new == redis_sentinel.primary_port()
    assert_turn_once(api, platform, wf, "OpsBuddy", "sentinel-failover", "Done across the failover.")
    assert len(tool_events(redis_client, "slow_task:start")) == 1
    assert model.calls == 2
    with redis_sentinel.primary_client() as primary:
        assert primary.info("server")["tcp_port"] == new and primary.exists(f"workflow_state:{{{wf}}}:meta")

    model.add(tool_call("search_flights", {"destination": "Lima"}), text("Flights to Lima."))
    after = api.start_turn("Flights to Lima?", session_id="sentinel-after", agent="TravelBuddy")
    assert api.wait_status(after, timeout=40)["runtime_status"] == "COMPLETED"
    # the same worker processes rode it out (Celery reconnected to the new primary)
    assert [w.pid for w in platform.stack.workers if w.alive()] == workers
    log = platform.stack.logs(since_mark=True)
    assert "Connected to sentinel://" in log and "Unrecoverable error" not in log, log[-5000:]
