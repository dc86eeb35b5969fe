"""The message bus and the registry with real processes (DESIGN section 5).

A redis-server, one Celery worker serving FlightFinder only (``-Q agent.FlightFinder``),
the web app over HTTP, and ``python -m agent_platform.cli bus`` processes started and
killed by the tests. Messages are published from the test process with the library's
own :class:`~agent_platform.bus.streams.StreamBus`, as another service would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_platform.bus.dedup import derived_workflow_id
from agent_platform.bus.messages import BroadcastMessage, TriggerAction, envelope
from agent_platform.bus.streams import StreamBus
from agent_platform.store.queries import list_workflows
from agent_platform.store.state import WorkflowState
from agent_platform.testing import ScriptedModel

from .agents_multi import FLIGHT_ANSWER, respond
from .bus_helpers import FAST_ENV, BusProcess, dump, start_queue_worker
from .helpers import Platform, platform_env, running_platform
from .workers import wait_until

AGENT_APP = "tests.agents_multi:agents"


@dataclass
class BusDeployment:
    platform: Platform
    log_dir: Path
    buses: list[BusProcess]
    started: int = 0

    def bus(self, **env: str | None) -> BusProcess:
        """A bus process (not started) with this deployment's environment and its own log."""
        self.started += 1
        bus = BusProcess(self.platform.stack.env, self.log_dir / f"bus{self.started}.log", **env)
        self.buses.append(bus)
        return bus

    def flight_workflows(self) -> list[WorkflowState]:
        items, _ = list_workflows([self.platform.runtime.store_for("FlightFinder")], limit=100)
        return [s for s in items if s.agent == "FlightFinder"]


@pytest.fixture(scope="module")
def deployment(redis_server: Any, model_server: ScriptedModel, tmp_path_factory: Any) -> Iterator[BusDeployment]:
    log_dir = tmp_path_factory.mktemp("bus")
    env = platform_env(redis_server.url, model_server.base_url, AGENT_APP, **FAST_ENV)
    with running_platform(env, log_dir, workers=0) as platform:
        start_queue_worker(platform.stack, "flights", ["agent.FlightFinder"])
        yield BusDeployment(platform, log_dir, [])


@pytest.fixture
def deploy(
    deployment: BusDeployment, redis_client: redis.Redis, model: ScriptedModel, request: pytest.FixtureRequest
) -> Iterator[BusDeployment]:
    model.set_responder(respond)
    deployment.platform.stack.mark()
    yield deployment
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        dump("workers", deployment.platform.stack.logs())
        for n, bus in enumerate(deployment.buses, 1):
            dump(f"bus {n}", bus.log())
    for bus in deployment.buses:
        bus.stop()
    deployment.buses.clear()


def _trigger(task: str, message_id: str) -> Any:
    return envelope(TriggerAction(task=task, session_id="trip"), "test/publisher", message_id=message_id)


def test_message_published_while_the_bus_is_down_is_delivered_once(
    deploy: BusDeployment, redis_client: redis.Redis
) -> None:
    topics = StreamBus(redis_client)
    event = _trigger("Find flights to Rome", "order-1")
    topics.publish("FlightFinder", event, group="FlightFinder")
    topics.publish("FlightFinder", event, group="FlightFinder")  # the same message, delivered twice
    wf = derived_workflow_id("FlightFinder", "order-1")
    assert deploy.flight_workflows() == []  # no bus is running: nothing happened yet

    bus = deploy.bus().start()

    api = deploy.platform.api
    wait_until(lambda: api.http.get(f"/workflows/{wf}").status_code == 200, 30, message="the bus to start the turn")
    status = api.wait_status(wf, timeout=30)
    assert status["runtime_status"] == "COMPLETED" and status["output"] == FLIGHT_ANSWER
    assert status["input"] == "Find flights to Rome" and status["session_id"] == "trip"
    assert status["metadata"]["bus"] == {"message_id": "order-1", "source": "test/publisher"}
    wait_until(lambda: topics.pending("FlightFinder", "FlightFinder") == 0, 10, message="both entries acknowledged")
    assert [s.instance_id for s in deploy.flight_workflows()] == [wf]
    assert bus.count(r"dropped duplicate message order-1 ") == 1


def test_a_new_bus_claims_the_message_a_killed_bus_did_not_acknowledge(
    deploy: BusDeployment, redis_client: redis.Redis
) -> None:
    topics = StreamBus(redis_client)
    first = deploy.bus(AGENT_PLATFORM_FAULT="bus_exit_before_ack").start()
    topics.publish("FlightFinder", _trigger("Find flights to Oslo", "order-2"), group="FlightFinder")
    wf = derived_workflow_id("FlightFinder", "order-2")

    wait_until(lambda: not first.alive(), 30, message="the bus to SIGKILL itself before XACK")

    assert first.proc is not None and first.proc.returncode == -9
    assert topics.pending("FlightFinder", "FlightFinder") == 1  # read, never acknowledged
    assert deploy.platform.runtime.store_for("FlightFinder").exists(wf)  # its effect was stored
    second = deploy.bus().start()
    wait_until(lambda: topics.pending("FlightFinder", "FlightFinder") == 0, 30, message="the new bus to claim it")
    assert second.count(r"claimed message .* of FlightFinder") == 1
    assert deploy.platform.api.wait_status(wf, timeout=30)["runtime_status"] == "COMPLETED"
    assert [s.instance_id for s in deploy.flight_workflows()] == [wf]  # started once


def test_broadcasts_reach_every_other_agent_s_memory_and_bad_messages_are_dropped(
    deploy: BusDeployment, redis_client: redis.Redis
) -> None:
    bus = deploy.bus().start()
    topics = StreamBus(redis_client)
    redis_client.xadd(topics.key("FlightFinder"), {"event": "not json"})
    note = BroadcastMessage(content="The trip is to Rome in May.", sender="TripPlanner")
    topics.publish("beacon_channel", envelope(note, "agent-platform/TripPlanner", message_id="note-1"))

    platform = deploy.platform
    expected = [{"role": "user", "content": "[TripPlanner] The trip is to Rome in May.", "workflow_id": "bus:note-1"}]
    for agent in ("FlightFinder", "HotelFinder", "QuickPlanner"):
        wait_until(lambda a=agent: platform.history("default", agent=a) == expected, 10, message=f"{agent}'s memory")
    assert platform.history("default", agent="TripPlanner") == []  # its own broadcast
    wait_until(lambda: topics.pending("FlightFinder", "FlightFinder") == 0, 10, message="the bad entry's XACK")
    assert bus.count(r"dropped entry .* of topic FlightFinder: not a CloudEvents") == 1


def test_agents_show_a_fresh_heartbeat_while_their_worker_runs_and_stale_after(deploy: BusDeployment) -> None:
    api = deploy.platform.api

    def agents() -> dict[str, dict[str, Any]]:
        response = api.http.get("/agents")
        assert response.status_code == 200, response.text
        return {a["name"]: a for a in response.json()["agents"]}

    flights = wait_until(lambda: agents().get("FlightFinder", {}).get("registered"), 10, message="a heartbeat")
    assert flights
    listed = agents()
    assert listed["FlightFinder"]["stale"] is False
    assert listed["FlightFinder"]["queue"] == "agent.FlightFinder" and listed["FlightFinder"]["topic"] == "FlightFinder"
    assert listed["FlightFinder"]["hostname"] == deploy.platform.stack.workers[0].hostname
    assert listed["HotelFinder"]["stale"] is True  # no worker consumes its queue
    hotel = start_queue_worker(deploy.platform.stack, "hotels", ["agent.HotelFinder"])
    wait_until(lambda: agents()["HotelFinder"]["stale"] is False, 10, message="HotelFinder's heartbeat")
    assert agents()["HotelFinder"]["hostname"] == hotel.hostname

    deploy.platform.stack.stop_worker(hotel)

    wait_until(lambda: agents()["HotelFinder"]["stale"] is True, 10, message="HotelFinder to turn stale")
    listed = agents()
    assert listed["HotelFinder"]["registered"] is True and listed["HotelFinder"]["heartbeat_at"]
    assert listed["FlightFinder"]["stale"] is False
