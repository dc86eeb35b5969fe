"""Shared fixtures: a private redis-server, the scripted model, and a running platform.

- ``redis_server`` (session): our own redis-server on a free port, AOF on; never 6379.
- ``redis_client`` (function): a client of it; every key but kombu's is deleted first.
- ``model_server`` (session) / ``model`` (function): the ScriptedModel, reset per test.
- ``platform`` (module): Celery workers + ``web.create_app()`` over HTTP for the agent
  named by the module's ``AGENT_APP`` (default ``tests.agents:travel_buddy``), with
  ``PLATFORM_WORKERS`` workers (default 1) of ``PLATFORM_CONCURRENCY`` (default 2) on
  Celery's ``PLATFORM_POOL`` (default prefork) and the extra platform variables of
  ``PLATFORM_ENV`` (a dict, e.g. a short lease TTL).
- ``api`` (function): the platform's HTTP client, on a clean Redis and a reset model.
- ``redis_cluster``, ``redis_sentinel``, ``rabbit_vhost`` (module): the topologies of the
  scaling tests (``tests/topologies.py``), started for the module that asks, stopped after.

On a failed test, the worker logs written during it are printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel

from .helpers import Api, Platform, clean_redis, platform_env, running_platform
from .topologies import RabbitVhost, RedisClusterServers, RedisSentinelServers, require_rabbitmq


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"), appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        clean_redis(client)
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def model_server() -> Iterator[ScriptedModel]:
    with ScriptedModel() as server:
        yield server


@pytest.fixture
def model(model_server: ScriptedModel) -> Iterator[ScriptedModel]:
    model_server.reset()
    yield model_server
    # A turn this test left with a model call in flight (a held reply, a turn terminated
    # mid-call) must not come back for the next test's replies: its call ends first.
    model_server.wait_idle()
    model_server.reset()


@pytest.fixture(scope="module")
def platform(
    request: pytest.FixtureRequest,
    redis_server: EmbeddedRedis,
    model_server: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    module = request.module
    env = platform_env(
        redis_server.url,
        model_server.base_url,
        getattr(module, "AGENT_APP", "tests.agents:travel_buddy"),
        **getattr(module, "PLATFORM_ENV", {}),
    )
    log_dir = tmp_path_factory.mktemp(f"workers-{module.__name__.rsplit('.', 1)[-1]}")
    with running_platform(
        env,
        log_dir,
        workers=getattr(module, "PLATFORM_WORKERS", 1),
        concurrency=getattr(module, "PLATFORM_CONCURRENCY", 2),
        pool=getattr(module, "PLATFORM_POOL", "prefork"),
    ) as deployment:
        yield deployment


@pytest.fixture
def api(
    platform: Platform, redis_client: redis.Redis, model: ScriptedModel, request: pytest.FixtureRequest
) -> Iterator[Api]:
    platform.stack.mark()
    yield platform.api
    dump_logs_on_failure(request, platform)


def dump_logs_on_failure(request: pytest.FixtureRequest, platform: Platform) -> None:
    """Print the worker logs of this test when it failed (pytest shows them in the report)."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(platform.stack.logs(since_mark=True))


# -- topologies of the scaling tests (issue 13) -------------------------------------------


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    with RedisClusterServers(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelServers]:
    with RedisSentinelServers(tmp_path_factory.mktemp("sentinel")) as servers:
        yield servers


@pytest.fixture(scope="module")
def rabbit_vhost() -> Iterator[RabbitVhost]:
    require_rabbitmq()
    vhost = RabbitVhost().create()
    try:
        yield vhost
    finally:
        vhost.delete()
