"""Unit tests of issue 13's configuration (no server needed): the topology a Redis
component selects (Dapr's ``redisType``, ``failover``, ``sentinelMasterName``), the broker
a process chooses (``CELERY_BROKER_URL`` / ``AGENT_PLATFORM_BROKER_URL``, else the state
store), and the Celery settings of each broker kind (quorum queues on RabbitMQ)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Queue

from agent_platform import AssistantAgent
from agent_platform.broker import AMQP, REDIS, REDIS_SENTINEL, broker_target
from agent_platform.components import CLUSTER, NODE, SENTINEL, Component, RedisTarget, redis_target
from agent_platform.engine.dispatch import StepMessage
from agent_platform.errors import ComponentError, ConfigurationError
from agent_platform.runtime import Runtime
from agent_platform.settings import Settings
from tasks.app import celery_config
from tasks.dispatch import CeleryDispatcher


def component(**metadata: str) -> Component:
    return Component("store", "state.redis", "v1", dict(metadata), "store.yaml")


# -- topology of a Redis component --------------------------------------------------------


def test_redis_type_cluster_selects_redis_cluster_with_every_seed_node() -> None:
    target = redis_target(component(redisHost="r1:7000, r2:7001", redisType="cluster", redisPassword="s3cret"), env={})

    assert target.topology == CLUSTER
    assert target.hosts == (("r1", 7000), ("r2", 7001))
    assert target.url == "redis://:s3cret@r1:7000/0"
    assert target.redacted_url() == "redis+cluster://:***@r1:7000,r2:7001"
    assert "s3cret" not in repr(target)


def test_several_hosts_select_a_cluster_and_its_db_is_ignored_as_dapr_does() -> None:
    target = redis_target(component(redisHost="a:1,b:2,c:3", redisDB="4"), env={})

    assert target.topology == CLUSTER and target.url == "redis://a:1/0" and len(target.hosts) == 3
    assert redis_target(component(redisHost="a:1", redisType="Cluster"), env={}).topology == CLUSTER


def test_failover_selects_sentinel_with_its_master_name_and_login() -> None:
    target = redis_target(
        component(
            redisHost="s1:26379,s2:26380",
            failover="true",
            sentinelMasterName="mymaster",
            sentinelPassword="sentinel-pw",
            redisPassword="data-pw",
            redisDB="2",
            enableTLS="true",
        ),
        env={},
    )

    assert target.topology == SENTINEL and target.master_name == "mymaster"
    assert target.hosts == (("s1", 26379), ("s2", 26380))
    assert target.url == "rediss://:data-pw@s1:26379/2" and target.sentinel_password == "sentinel-pw"
    assert target.redacted_url() == "rediss+sentinel://:***@s1:26379,s2:26380/mymaster/2"
    assert "pw" not in repr(target)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"failover": "true"}, "sentinelMasterName"),
        ({"failover": "true", "sentinelMasterName": "m", "redisType": "cluster"}, "exclude each other"),
        ({"redisType": "sharded"}, "redisType"),
        ({"failover": "perhaps"}, "failover"),
    ],
)
def test_bad_topology_fields_are_clear_errors(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ComponentError, match=f"store.yaml.*{message}"):
        redis_target(component(redisHost="h:1", **fields), env={})


def test_redis_url_overrides_the_topology_too() -> None:
    target = redis_target(component(redisHost="a:1,b:2", redisType="cluster"), env={"REDIS_URL": "redis://one:6379/0"})
    assert target == RedisTarget("redis://one:6379/0", "")
    assert target.topology == NODE


# -- the broker ---------------------------------------------------------------------------

STATE = RedisTarget("redis://:pw@state:6379/0", "")


def test_broker_url_variables_and_their_precedence() -> None:
    both = {"CELERY_BROKER_URL": "amqp://guest:guest@rabbit//", "AGENT_PLATFORM_BROKER_URL": "redis://b:6379/1"}
    assert broker_target(Settings.from_env(both), STATE).url == "redis://b:6379/1"
    celery_only = Settings.from_env({"CELERY_BROKER_URL": "amqp://guest:guest@rabbit//"})
    assert broker_target(celery_only, STATE).kind == AMQP
    default = broker_target(Settings.from_env({}), STATE)
    assert (default.url, default.kind) == (STATE.url, REDIS)
    assert default.redacted_url() == "redis://:***@state:6379/0"


def test_a_cluster_state_store_needs_a_broker_url() -> None:
    cluster = RedisTarget("redis://a:1/0", "", CLUSTER, (("a", 1), ("b", 2)))
    with pytest.raises(ConfigurationError, match="CELERY_BROKER_URL"):
        broker_target(Settings.from_env({}), cluster)
    assert broker_target(Settings.from_env({"CELERY_BROKER_URL": "redis://q:6379/0"}), cluster).kind == REDIS


def test_a_sentinel_state_store_is_the_default_sentinel_broker() -> None:
    sentinel = RedisTarget(
        "redis://:pw@s1:26379/3", "", SENTINEL, (("s1", 26379), ("s2", 26380)), "mymaster", "", "sentinel-pw"
    )
    broker = broker_target(Settings.from_env({}), sentinel)

    assert broker.kind == REDIS_SENTINEL
    assert broker.url == "sentinel://:pw@s1:26379/3;sentinel://:pw@s2:26380/3"
    assert broker.transport_options == {"master_name": "mymaster", "sentinel_kwargs": {"password": "sentinel-pw"}}
    assert "pw" not in broker.redacted_url()


def test_a_sentinel_broker_url_needs_a_master_name() -> None:
    url = {"AGENT_PLATFORM_BROKER_URL": "sentinel://s1:26379;sentinel://s2:26379"}
    with pytest.raises(ConfigurationError, match="master_name"):
        broker_target(Settings.from_env(url), STATE)
    options = {**url, "AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS": '{"master_name": "m", "socket_timeout": 5}'}
    assert broker_target(Settings.from_env(options), STATE).transport_options == {
        "master_name": "m",
        "socket_timeout": 5,
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENT_PLATFORM_BROKER_URL": "sqs://key:secret@"}, "not supported"),
        ({"AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS": "{master_name"}, "not JSON"),
        ({"AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS": '["x"]'}, "JSON object"),
    ],
)
def test_bad_broker_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        broker_target(Settings.from_env(env), STATE)
    assert "secret" not in str(info.value)


# -- Celery settings per broker kind --------------------------------------------------------


def _runtime(folder: Path, **env: str) -> Runtime:
    """A runtime of one agent, no components (the default Redis), ``env`` as its environment."""
    agent = AssistantAgent(name="Scout", role="r", goal="g", instructions=["i"])
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6399/0", **env}, components_path=str(folder))
    return Runtime(settings, agents=[agent])


def test_rabbitmq_gets_quorum_queues_on_topic_exchanges_and_publisher_confirms(tmp_path: Path) -> None:
    config = celery_config(_runtime(tmp_path, CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/v"))

    queue: Queue = config["task_queues"][0]
    assert (queue.name, queue.routing_key, queue.queue_arguments) == (
        "agent.Scout",
        "agent.Scout",
        {"x-queue-type": "quorum"},
    )
    assert (queue.exchange.name, queue.exchange.type) == ("agent.Scout", "topic")
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["task_default_queue_type"] == config["task_create_missing_queue_type"] == "quorum"
    assert config["task_create_missing_queue_exchange_type"] == "topic"


def test_redis_and_sentinel_brokers_keep_the_visibility_timeout(tmp_path: Path) -> None:
    redis_config = celery_config(_runtime(tmp_path, AGENT_PLATFORM_VISIBILITY_TIMEOUT="120"))
    assert redis_config["broker_url"] == "redis://127.0.0.1:6399/0"
    assert redis_config["broker_transport_options"]["visibility_timeout"] == 120
    assert redis_config["task_queues"][0].queue_arguments is None
    sentinel = _runtime(
        tmp_path,
        AGENT_PLATFORM_BROKER_URL="sentinel://127.0.0.1:26379",
        AGENT_PLATFORM_BROKER_TRANSPORT_OPTIONS='{"master_name": "m"}',
    )
    options = celery_config(sentinel)["broker_transport_options"]
    assert options["master_name"] == "m" and options["visibility_timeout"] == 3600


def test_native_delayed_delivery_gets_whole_second_countdowns() -> None:
    from celery import Celery

    message = StepMessage("Scout", "wf1", "llm", 1)
    rabbit = CeleryDispatcher(Celery(set_as_current=False), whole_second_delays=True)
    assert rabbit.signature(message, countdown=0.05).options["countdown"] == 1
    assert rabbit.signature(message, countdown=2.2).options["countdown"] == 3
    assert "countdown" not in rabbit.signature(message, countdown=0).options
    redis = CeleryDispatcher(Celery(set_as_current=False))
    assert redis.signature(message, countdown=0.05).options["countdown"] == 0.05
