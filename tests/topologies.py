"""Broker and state topologies for the scaling tests (issue 13), all real servers.

- :class:`RedisClusterServers`: a Redis Cluster of 3 primaries (``redis-server
  --cluster-enabled yes`` on free ports, joined by ``redis-cli --cluster create``), with a
  one-slot migration (resharding) done the way ``redis-cli --cluster reshard`` does it.
- :class:`RedisSentinelServers`: a primary, a replica and 3 Sentinels on free ports, and a
  failover (the primary SIGKILLed, the Sentinels promote the replica).
- :class:`RabbitVhost`: the machine's RabbitMQ (127.0.0.1:5672, guest/guest) with a vhost
  of our own per test run, created and deleted with ``rabbitmqctl`` (no other run's
  queues are touched). :func:`rabbitmq_unavailable` says why the RabbitMQ tests cannot run
  (they skip then, unless ``AGENT_PLATFORM_TEST_RABBITMQ=required``, as in CI).
- :func:`write_components`: a components folder whose four Redis components point at a
  topology, and :func:`topology_env`: a test deployment's variables for it.

Every server is stopped at the end (each one is an :class:`EmbeddedRedis`, its own
process group).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from agent_platform.embedded_redis import EmbeddedRedis, find_redis_server
from agent_platform.processes import free_port

from .helpers import Platform, platform_env, running_platform
from .scaling_cases import AGENTS
from .workers import wait_until

HOST = "127.0.0.1"
MASTER_NAME = "agentmaster"
RABBITMQ = ("127.0.0.1", 5672)
#: Set to ``required`` (CI does) to fail rather than skip when RabbitMQ is not reachable.
REQUIRE_RABBITMQ = "AGENT_PLATFORM_TEST_RABBITMQ"


def _redis_cli() -> str:
    found = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    if not Path(found).exists():
        pytest.skip("redis-cli is not installed (needed to create a Redis Cluster)")
    return found


class Servers:
    """Servers started together: ``with X(...) as servers`` starts them (stopping what did
    start when one fails) and stops them all at the end."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Redis Cluster ------------------------------------------------------------------------


class RedisClusterServers(Servers):
    """A Redis Cluster of ``primaries`` primaries (no replicas) on free ports.

    Args:
        base_dir: each node's folder (``node<port>``: nodes.conf and the log) goes here.
        primaries: how many primaries (3 at least: ``redis-cli --cluster create``'s rule).
    """

    def __init__(self, base_dir: Path, primaries: int = 3) -> None:
        self.base_dir = Path(base_dir)
        self.nodes: list[EmbeddedRedis] = []
        self.count = primaries

    def start(self) -> RedisClusterServers:
        for _ in range(self.count):
            port = free_port(HOST)
            node = EmbeddedRedis(
                self.base_dir / f"node{port}",
                port=port,
                appendonly=False,
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(free_port(HOST)),
                    "--cluster-node-timeout", "3000",
                ),
            )  # fmt: skip
            self.nodes.append(node.start())
        addresses = [f"{HOST}:{n.port}" for n in self.nodes]
        subprocess.run(
            [_redis_cli(), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self._ready, timeout=30, message="the cluster to report cluster_state:ok on every node")
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            with redis.Redis(host=HOST, port=node.port, decode_responses=True) as client:
                info = client.cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != self.count:
                    return False
        return True

    @property
    def hosts(self) -> str:
        """``host:port,host:port,...`` of every node (a component's ``redisHost``)."""
        return ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def client(self) -> RedisCluster:
        """A ``RedisCluster`` client (decoded responses)."""
        return RedisCluster(startup_nodes=[ClusterNode(HOST, n.port) for n in self.nodes], decode_responses=True)

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, decode_responses=True)

    def flush(self) -> None:
        """Delete every key of every primary."""
        for node in self.nodes:
            with self.node_client(node.port) as client:
                client.flushall()

    def owner(self, slot: int) -> EmbeddedRedis:
        """The node serving ``slot`` now."""
        with self.node_client(self.nodes[0].port) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"slot {slot} is not served")

    def migrate_slot(
        self, slot: int, first: str | None = None, between: Callable[[], object] | None = None
    ) -> tuple[int, int]:
        """Move ``slot`` to another primary as ``redis-cli --cluster reshard
        --cluster-pipeline 1`` does: mark it IMPORTING on the target and MIGRATING on the
        source, MIGRATE its keys one at a time (``first`` first), then give the slot to the
        target on every node. ``between`` runs after the first key moved: while it runs the
        slot is split, and a command or script naming keys on both sides gets TRYAGAIN.

        Returns:
            ``(source port, target port)``.
        """
        source = self.owner(slot)
        target = next(n for n in self.nodes if n is not source)
        src, dst = self.node_client(source.port), self.node_client(target.port)
        try:
            source_id, target_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            moved = 0
            while keys := (
                [first] if first and not moved else src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
            ):
                src.execute_command("MIGRATE", HOST, target.port, "", 0, 5000, "REPLACE", "KEYS", *keys)
                moved += 1
                if moved == 1 and between is not None:
                    between()
            for node in (target, source, *[n for n in self.nodes if n not in (source, target)]):
                with self.node_client(node.port) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            src.close()
            dst.close()
        return source.port, target.port

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# -- Redis Sentinel -----------------------------------------------------------------------


class RedisSentinelServers(Servers):
    """A primary, one replica and 3 Sentinels watching them as :data:`MASTER_NAME`.

    The Sentinels declare the primary down after 1 s without an answer
    (``down-after-milliseconds``) and need 2 of 3 to agree (quorum).
    """

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.data: list[EmbeddedRedis] = []
        self.sentinels: list[EmbeddedRedis] = []

    def start(self) -> RedisSentinelServers:
        no_delay = ("--repl-diskless-sync-delay", "0")  # Redis 7 waits 5 s for more replicas by default
        primary = EmbeddedRedis(self.base_dir / "primary", port=free_port(HOST), extra_args=no_delay).start()
        replica = EmbeddedRedis(
            self.base_dir / "replica",
            port=free_port(HOST),
            extra_args=(*no_delay, "--replicaof", HOST, str(primary.port)),
        ).start()
        self.data = [primary, replica]
        wait_until(lambda: self._replica_online(primary.port), timeout=20, message="the replica to sync")
        for index in range(3):
            folder = self.base_dir / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"sentinel monitor {MASTER_NAME} {HOST} {primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            sentinel = EmbeddedRedis(
                folder, port=free_port(HOST), appendonly=False, config_file=conf, extra_args=("--sentinel",)
            )
            self.sentinels.append(sentinel.start())
        wait_until(self._sentinels_agree, timeout=30, message="the Sentinels to find each other and the replica")
        return self

    def _replica_online(self, port: int) -> bool:
        with redis.Redis(host=HOST, port=port, decode_responses=True) as client:
            replica = client.info("replication").get("slave0") or {}
            return replica.get("state") == "online"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(host=HOST, port=sentinel.port, decode_responses=True) as client:
                master = client.sentinel_master(MASTER_NAME)
                if int(master.get("num-other-sentinels", 0)) < 2 or int(master.get("num-slaves", 0)) < 1:
                    return False
        return True

    @property
    def hosts(self) -> str:
        """``host:port,...`` of the Sentinels (a component's ``redisHost`` with ``failover: true``)."""
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    @property
    def broker_url(self) -> str:
        """kombu's Sentinel broker URL (needs ``master_name`` in the transport options)."""
        return ";".join(f"sentinel://{HOST}:{s.port}/0" for s in self.sentinels)

    def primary_port(self) -> int:
        """The port of the primary the Sentinels name now."""
        with redis.Redis(host=HOST, port=self.sentinels[0].port, decode_responses=True) as client:
            return int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def primary_client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.primary_port(), decode_responses=True)

    def kill_primary(self, timeout: float = 30.0) -> tuple[int, int]:
        """SIGKILL the primary's process and wait until every Sentinel names the replica as
        the new primary; returns ``(old port, new port)``."""
        old = self.primary_port()
        server = next(s for s in self.data if s.port == old)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)

        def promoted() -> int | None:
            ports = set()
            for sentinel in self.sentinels:
                with redis.Redis(host=HOST, port=sentinel.port, decode_responses=True) as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
            return ports.pop() if len(ports) == 1 and old not in ports else None

        new = wait_until(promoted, timeout=timeout, message="the Sentinels to promote the replica")
        with redis.Redis(host=HOST, port=new, decode_responses=True) as client:
            wait_until(lambda: client.info("replication")["role"] == "master", timeout=timeout, message="a new primary")
        return old, new

    def stop(self) -> None:
        for server in [*self.sentinels, *self.data]:
            server.stop()


# -- RabbitMQ -----------------------------------------------------------------------------


def rabbitmq_unavailable() -> str | None:
    """Why the RabbitMQ tests cannot run here (None: they can): the broker does not accept
    TCP connections on 127.0.0.1:5672, or ``rabbitmqctl`` is missing."""
    try:
        socket.create_connection(RABBITMQ, timeout=2).close()
    except OSError as exc:
        return f"RabbitMQ is not reachable on {RABBITMQ[0]}:{RABBITMQ[1]}: {exc}"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed (needed to create a vhost of our own)"
    return None


def require_rabbitmq() -> None:
    """Skip (or fail, with ``AGENT_PLATFORM_TEST_RABBITMQ=required``) without RabbitMQ."""
    reason = rabbitmq_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_RABBITMQ) == "required":
        pytest.fail(f"{reason} ({REQUIRE_RABBITMQ}=required)")
    pytest.skip(reason)


class RabbitVhost:
    """A vhost of our own on the machine's RabbitMQ (guest may use it), deleted at the end
    with every queue and exchange in it."""

    def __init__(self, prefix: str = "agent-platform-test") -> None:
        self.name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{self.name}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    def create(self) -> RabbitVhost:
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        self._ctl("delete_vhost", self.name)

    def queue_types(self) -> dict[str, str]:
        """Queue name -> type (``quorum``, ``classic``) in this vhost."""
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", self.name, "name", "type", "--no-table-headers"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return dict(line.split("\t")[:2] for line in listed.splitlines() if "\t" in line)


# -- components and environments ----------------------------------------------------------

_COMPONENT = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: {type}
  version: v1
  metadata:
  - name: redisHost
    value: "{hosts}"
  - name: keyPrefix
    value: none
{extra}"""
COMPONENT_NAMES = {
    "workflowstatestore": "state.redis",
    "conversationstore": "state.redis",
    "registrystatestore": "state.redis",
    "messagepubsub": "pubsub.redis",
}


def write_components(folder: Path, hosts: str, **fields: str) -> Path:
    """Write the four Redis components of the test agents, each with ``redisHost: hosts``
    and the Dapr ``fields`` given (``redisType="cluster"``, or ``failover="true",
    sentinelMasterName=...``); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = "".join(f'  - name: {name}\n    value: "{value}"\n' for name, value in fields.items())
    for name, ctype in COMPONENT_NAMES.items():
        (folder / f"{name}.yaml").write_text(_COMPONENT.format(name=name, type=ctype, hosts=hosts, extra=extra))
    return folder


def topology_env(
    trace_url: str, model_url: str, agent_app: str, components: Path | None = None, **extra: Any
) -> dict[str, str | None]:
    """A deployment's variables when the state is not ``REDIS_URL``'s server: ``REDIS_URL``
    unset (it would override every component), the components at ``components``, and the
    test agents' trace (what their tools record) in ``trace_url``'s plain Redis."""
    env: dict[str, Any] = platform_env(trace_url, model_url, agent_app, **extra)
    env["TEST_TRACE_REDIS_URL"] = trace_url
    if components is not None:
        env["AGENT_PLATFORM_COMPONENTS_PATH"] = str(components)
        env["REDIS_URL"] = None
    return env


@contextmanager
def topology_platform(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    trace_url: str,
    model_url: str,
    components: Path | None = None,
    workers: int = 1,
    agent_app: str = AGENTS,
    **extra: Any,
) -> Iterator[Platform]:
    """Workers (2 processes each) and the web app of ``agent_app`` (default both test
    agents, :data:`AGENTS`) on a topology (see :func:`topology_env`), logging under a
    ``workers-<name>`` folder."""
    env = topology_env(trace_url, model_url, agent_app, components, **extra)
    with running_platform(
        env, tmp_path_factory.mktemp(f"workers-{name}"), workers=workers, concurrency=2
    ) as deployment:
        yield deployment
