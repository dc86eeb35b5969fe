"""Issue 13: the chaos test (tests/test_chaos.py) on RabbitMQ (quorum queues) + a Redis
Cluster of 3 primaries: 50 concurrent turns on 2 workers, random SIGKILLs of pool
processes and of whole workers (RabbitMQ redelivers their unacknowledged steps at once).
Every turn COMPLETED, one record per step (a killed run is one ``lost`` record), the tool's
runs under one idempotency key, memory written once per turn. ``CHAOS_SEED=<n>`` replays.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel

from .helpers import Api, Platform
from .scaling_cases import FAST_RECOVERY
from .test_chaos import run_chaos
from .topologies import RabbitVhost, RedisClusterServers, topology_platform, write_components

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TURNS = 50
KILLS = 3


@pytest.fixture(scope="module")
def platform(
    rabbit_vhost: RabbitVhost,
    redis_cluster: RedisClusterServers,
    redis_server: EmbeddedRedis,
    model_server: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    components = write_components(tmp_path_factory.mktemp("components-chaos"), redis_cluster.hosts, redisType="cluster")
    with topology_platform(
        tmp_path_factory,
        "chaos",
        redis_server.url,
        model_server.base_url,
        components,
        workers=2,
        agent_app="tests.agents_failures:ops_buddy",
        AGENT_PLATFORM_BROKER_URL=rabbit_vhost.url,
        **FAST_RECOVERY,
    ) as deployment:
        yield deployment


def test_chaos_50_turns_random_sigkills_on_rabbitmq_and_a_redis_cluster(
    api: Api, model: ScriptedModel, platform: Platform, redis_client: redis.Redis
) -> None:
    run_chaos(api, model, platform, redis_client, TURNS, KILLS)
