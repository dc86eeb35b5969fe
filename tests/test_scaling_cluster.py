"""Issue 13: the state on a Redis Cluster of 3 primaries, the broker on plain Redis.

The four components say ``redisType: cluster`` with the three nodes in ``redisHost``
(Dapr's fields), so the stores, memory, registry and bus use redis-py's ``RedisCluster``.
Cases: the Paris turn (C01), SIGKILL of every worker mid-tool (C04), a resharding that
migrates the slot of a running workflow key by key (clients meet ASK and TRYAGAIN), and
the bus (a TriggerAction and a broadcast through consumer groups on two streams that
live in different slots).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent_platform.bus.dedup import derived_workflow_id
from agent_platform.bus.messages import BroadcastMessage, TriggerAction, envelope
from agent_platform.bus.streams import bus_for
from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, text, tool_call

from .agents_failures import tool_events
from .bus_helpers import BusProcess
from .helpers import Api, Platform
from .scaling_cases import FAST_RECOVERY, assert_turn_once, paris_turn, sigkill_mid_tool
from .topologies import RedisClusterServers, topology_platform, write_components
from .workers import wait_until


@pytest.fixture(scope="module")
def platform(
    redis_cluster: RedisClusterServers,
    redis_server: EmbeddedRedis,
    model_server: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    components = write_components(
        tmp_path_factory.mktemp("components-cluster"), redis_cluster.hosts, redisType="cluster"
    )
    with topology_platform(
        tmp_path_factory,
        "cluster",
        redis_server.url,
        model_server.base_url,
        components,
        AGENT_PLATFORM_BROKER_URL=redis_server.url,  # kombu has no Redis Cluster transport
        **FAST_RECOVERY,
    ) as deployment:
        yield deployment


@pytest.fixture(autouse=True)
def clean_cluster(redis_cluster: RedisClusterServers) -> None:
    redis_cluster.flush()


def _nodes_holding(redis_cluster: RedisClusterServers, pattern: str) -> dict[int, list[str]]:
    found = {}
    for node in redis_cluster.nodes:
        with redis_cluster.node_client(node.port) as client:
            keys = sorted(client.scan_iter(match=pattern, count=1000))
        if keys:
            found[node.port] = keys
    return found


def test_c01_paris_turn_on_a_redis_cluster(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis, redis_cluster: RedisClusterServers
) -> None:
    wf = paris_turn(api, model, platform, redis_client, "cluster-paris")

    # the workflow's keys are on one primary (one hash tag), the one serving its slot
    holding = _nodes_holding(redis_cluster, f"*{{{wf}}}*")
    with redis_cluster.client() as client:
        owner = redis_cluster.owner(client.keyslot(f"{{{wf}}}")).port
    assert list(holding) == [owner], holding

    # the registry (one hash) is on the cluster too: the worker's heartbeat lists both agents
    def registered() -> set[str]:
        return {a["name"] for a in api.http.get("/agents").json()["agents"] if a["registered"] and not a["stale"]}

    assert wait_until(lambda: registered() == {"TravelBuddy", "OpsBuddy"}, timeout=15, message="the heartbeats")


def test_c04_sigkill_of_the_whole_worker_mid_tool_on_a_redis_cluster(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    sigkill_mid_tool(api, model, platform, redis_client, "cluster-c04")


def test_resharding_the_slot_of_a_running_workflow_loses_nothing(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis, redis_cluster: RedisClusterServers
) -> None:
    """The slot of a workflow in its tool step moves to another primary, one key at a time
    (``redis-cli --cluster reshard --cluster-pipeline 1``), and stays split (its status
    hash moved, its step log not yet) while the tool ends and checkpoints: the checkpoint
    script gets TRYAGAIN for longer than redis-py's own retries last, then runs once the
    slot is whole on the new primary (ASK, then MOVED). The turn completes once."""
    model.add(tool_call("slow_task", {"seconds": 1, "label": "reshard"}), text("Done while resharding."))
    wf = api.start_turn("Run the task while the cluster reshards", session_id="cluster-reshard", agent="OpsBuddy")
    wait_until(lambda: tool_events(redis_client, "slow_task:start"), timeout=20, message="the tool to start")
    meta = f"workflow_state:{{{wf}}}:meta"
    with redis_cluster.client() as client:
        slot = client.keyslot(meta)

    def split_while_the_tool_checkpoints() -> None:
        wait_until(lambda: tool_events(redis_client, "slow_task:end"), timeout=20, message="the tool to end")
        time.sleep(2.0)  # the checkpoint meets TRYAGAIN all this time (redis-py alone gives up after ~0.4 s)

    source, target = redis_cluster.migrate_slot(slot, first=meta, between=split_while_the_tool_checkpoints)
    status = api.wait_status(wf, timeout=40)

    assert status["runtime_status"] == "COMPLETED", status
    assert_turn_once(api, platform, wf, "OpsBuddy", "cluster-reshard", "Done while resharding.")
    assert redis_cluster.owner(slot).port == target != source
    assert list(_nodes_holding(redis_cluster, f"*{{{wf}}}*")) == [target]
    assert len(tool_events(redis_client, "slow_task:start")) == 1
    assert model.calls == 2


def test_bus_trigger_and_broadcast_on_a_redis_cluster(
    api: Api, model: ScriptedModel, platform: Platform, tmp_path: Path
) -> None:
    """``agent-platform bus`` reads TravelBuddy's topic and the broadcast topic, two streams
    in two slots, with its consumer group: a TriggerAction (sent twice) starts one turn, a
    broadcast lands in memory once."""
    runtime = platform.runtime
    agent = runtime.agent("TravelBuddy")
    bus = bus_for(runtime, agent)
    broadcast_topic = runtime.settings.bus_broadcast_topic
    assert bus.client.keyslot(bus.key(agent.topic)) != bus.client.keyslot(bus.key(broadcast_topic))
    process = BusProcess(platform.stack.env, tmp_path / "bus.log", AGENT_PLATFORM_BUS_CLAIM_IDLE="1").start()
    try:
        model.add(tool_call("search_flights", {"destination": "Rome"}), text("Rome it is."))
        trigger = envelope(TriggerAction(task="Flights to Rome?", session_id="cluster-bus"), "test", message_id="m-1")
        bus.publish(agent.topic, trigger, group=agent.name)
        bus.publish(agent.topic, trigger, group=agent.name)  # a duplicate: dropped by id
        news = BroadcastMessage(sender="Planner", content="The trip is in May.", session_id="cluster-bus-news")
        bus.publish(broadcast_topic, envelope(news, "Planner"))
        wf = derived_workflow_id(agent.name, "m-1")
        wait_until(lambda: runtime.store_for(agent).exists(wf), timeout=20, message="the triggered turn")
        status = api.wait_status(wf, timeout=30)

        assert status["runtime_status"] == "COMPLETED", status
        assert status["output"] == "Rome it is."
        history = wait_until(lambda: platform.history("cluster-bus-news"), timeout=20, message="the broadcast")
        assert [m["content"] for m in history] == ["[Planner] The trip is in May."]
        wait_until(lambda: bus.pending(agent.topic, agent.name) == 0, timeout=10, message="both entries acknowledged")
        assert process.count("dropped duplicate message m-1") == 1, process.log()[-3000:]
        assert [w.instance_id for w in runtime.store_for(agent).newest_first(session_id="cluster-bus")] == [wf]
    finally:
        process.stop()
