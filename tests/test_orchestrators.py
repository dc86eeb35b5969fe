"""Orchestrators end to end: an HTTP start -> the orchestrator's workflow -> the bus process
-> the agents' workers -> their answers back as events (DESIGN section 5, case C10).

Real processes only: a redis-server, Celery workers limited with ``-Q`` (the orchestrators
and FlightFinder in one worker; HotelFinder in its own, started only when a test needs
it), a ``python -m agent_platform.cli bus`` process, the web app over HTTP and the
scripted model (:func:`tests.agents_multi.respond`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from agent_platform.bus.dedup import derived_workflow_id
from agent_platform.bus.streams import StreamBus
from agent_platform.orchestrators import RandomPolicy, RoundRobinPolicy
from agent_platform.testing import ScriptedModel

from .agents_multi import FLIGHT_ANSWER, HOTEL_ANSWER, respond
from .bus_helpers import FAST_ENV, BusProcess, dump, start_queue_worker
from .helpers import Platform, platform_env, running_platform
from .workers import Worker, wait_until

AGENT_APP = "tests.agents_multi:agents"
MAIN_QUEUES = ["agent.TripPlanner", "agent.QuickPlanner", "agent.Coordinator", "agent.FlightFinder"]
TASK = "Plan a trip to Paris"


@dataclass
class Deployment:
    platform: Platform
    bus: BusProcess
    hotel: Worker | None = None

    def stop_hotel(self) -> None:
        if self.hotel is not None:
            self.platform.stack.stop_worker(self.hotel)
            self.hotel = None

    def start_hotel(self) -> None:
        if self.hotel is None or not self.hotel.alive():
            self.hotel = start_queue_worker(self.platform.stack, "hotel", ["agent.HotelFinder"])


@pytest.fixture(scope="module")
def deployment(redis_server: Any, model_server: ScriptedModel, tmp_path_factory: Any) -> Iterator[Deployment]:
    log_dir = tmp_path_factory.mktemp("orchestrators")
    env = platform_env(redis_server.url, model_server.base_url, AGENT_APP, **FAST_ENV)
    with running_platform(env, log_dir, workers=0) as platform:
        bus = BusProcess(platform.stack.env, log_dir / "bus.log").start(wait=False)
        try:
            start_queue_worker(platform.stack, "main", MAIN_QUEUES)
            bus.wait_ready()
            yield Deployment(platform, bus)
        finally:
            bus.stop()


@pytest.fixture
def multi(
    deployment: Deployment, redis_client: redis.Redis, model: ScriptedModel, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    model.set_responder(respond)
    deployment.platform.stack.mark()
    yield deployment
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        dump("workers", deployment.platform.stack.logs())
        dump("bus", deployment.bus.log())


def _tool_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in steps if s["kind"] == "tool"]


def _callee(wf: str, tool_step: dict[str, Any]) -> str:
    """The workflow the bus started for one agent call (its id derives from the message id)."""
    return derived_workflow_id(tool_step["data"]["name"], f"{wf}:{tool_step['data']['call_id']}")


def test_terminating_a_called_turn_answers_its_caller(multi: Deployment) -> None:
    multi.stop_hotel()
    api = multi.platform.api
    wf = api.start_turn(TASK, agent="TripPlanner")
    waiting = wait_until(
        lambda: (api.status(wf).get("pending_event") or {}).get("target") == "HotelFinder" and api.status(wf),
        60,
        message="TripPlanner to wait for HotelFinder",
    )
    assert waiting["runtime_status"] == "SUSPENDED"
    hotel_wf = _callee(wf, {"data": {"name": "HotelFinder", "call_id": "call_2_HotelFinder"}})
    wait_until(lambda: api.http.get(f"/workflows/{hotel_wf}").status_code == 200, 30, message="the HotelFinder turn")

    response = api.http.post(f"/workflows/{hotel_wf}/terminate", json={"reason": "no hotels today"})

    assert response.status_code == 202, response.text
    status = api.wait_status(wf, timeout=60)
    assert status["runtime_status"] == "COMPLETED", status
    assert FLIGHT_ANSWER in status["output"]
    assert "No answer from: HotelFinder." in status["output"]
    assert "agent HotelFinder's turn was terminated: no hotels today" in status["output"]


def test_c10_orchestrator_ends_naming_the_agent_that_did_not_answer(
    multi: Deployment, redis_client: redis.Redis
) -> None:
    multi.stop_hotel()  # case C10: HotelFinder's worker is not running
    api = multi.platform.api
    wf = api.start_turn(TASK, agent="QuickPlanner")

    status = api.wait_status(wf, timeout=60)

    assert status["runtime_status"] == "COMPLETED", status
    output = status["output"]
    assert "No answer from: HotelFinder." in output
    assert "- HotelFinder did not answer: timed out waiting for HotelFinder" in output
    assert f"- FlightFinder answered: {FLIGHT_ANSWER}" in output
    assert status["stop_reason"] == "stop"
    steps = api.steps(wf)
    tools = _tool_steps(steps)
    assert [t["data"]["name"] for t in tools] == ["FlightFinder", "HotelFinder"]  # max_rounds=2: bounded
    assert tools[1]["data"]["error"] == "timed out waiting for HotelFinder"
    timeouts = [s for s in steps if s["kind"] == "event" and (s["data"].get("payload") or {}).get("timeout")]
    assert len(timeouts) == 1
    hotel_wf = _callee(wf, tools[1])
    assert api.status(hotel_wf)["runtime_status"] == "PENDING"  # nobody serves HotelFinder

    # HotelFinder's worker starts: its turn runs and answers an orchestrator that has ended.
    multi.start_hotel()
    assert api.wait_status(hotel_wf, timeout=60)["runtime_status"] == "COMPLETED"
    line = f"dropped a late answer of HotelFinder for workflow {wf}"
    wait_until(lambda: multi.bus.count(line), 30, message="the bus to drop the late answer")
    topics = StreamBus(redis_client)
    wait_until(lambda: topics.pending("QuickPlanner", "QuickPlanner") == 0, 10, message="the late answer's XACK")
    assert multi.bus.count(line) == 1  # acknowledged: never delivered again, no loop
    after = api.status(wf)
    assert after["runtime_status"] == "COMPLETED" and after["output"] == output
    assert len(api.steps(wf)) == len(steps)


def test_round_robin_orchestrator_completes_with_both_answers(multi: Deployment) -> None:
    multi.start_hotel()
    api = multi.platform.api

    wf = api.start_turn(TASK, agent="TripPlanner")

    status = api.wait_status(wf, timeout=60)
    assert status["runtime_status"] == "COMPLETED", status
    assert FLIGHT_ANSWER in status["output"] and HOTEL_ANSWER in status["output"]
    assert "All agents answered." in status["output"]
    assert status["stop_reason"] == "stop"
    tools = _tool_steps(api.steps(wf))
    assert [(t["data"]["name"], t["data"]["result"]) for t in tools] == [
        ("FlightFinder", FLIGHT_ANSWER),
        ("HotelFinder", HOTEL_ANSWER),
    ]
    flight, hotel = (api.status(_callee(wf, t)) for t in tools)
    for callee in (flight, hotel):
        assert callee["runtime_status"] == "COMPLETED"
        assert callee["session_id"] == wf  # one conversation per calling turn
        assert callee["metadata"]["reply_to"]["workflow_id"] == wf
    assert flight["input"] == TASK
    assert FLIGHT_ANSWER in hotel["input"]  # the next agent sees the answers so far


def test_llm_orchestrator_asks_agents_in_parallel_and_summarises(multi: Deployment, model: ScriptedModel) -> None:
    multi.start_hotel()
    api = multi.platform.api

    wf = api.start_turn(TASK, agent="Coordinator")

    status = api.wait_status(wf, timeout=60)
    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == f"Summary: {FLIGHT_ANSWER} | {HOTEL_ANSWER}"
    tools = _tool_steps(api.steps(wf))
    assert sorted(t["data"]["name"] for t in tools) == ["FlightFinder", "HotelFinder"]
    coordinator_calls = [r for r in model.requests if "Your name is Coordinator" in r["messages"][0]["content"]]
    assert len(coordinator_calls) == 2
    assert {t["function"]["name"] for t in coordinator_calls[0]["tools"]} == {"FlightFinder", "HotelFinder"}


# -- the policies alone (no processes) ---------------------------------------------------


def _turn(policy: Any, task: str, answers: dict[str, str | None]) -> list[dict[str, Any]]:
    """Messages of a turn in which ``policy``'s calls got ``answers`` (None: a timeout)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "s"}, {"role": "user", "content": task}]
    for agent, answer in answers.items():
        reply = policy.chat(messages, [{"type": "function"}])
        assert [c.name for c in reply.tool_calls] == [agent]
        messages.append(reply.to_message())
        content = answer if answer is not None else f"Error: timed out waiting for {agent}"
        messages.append({"role": "tool", "tool_call_id": reply.tool_calls[0].id, "content": content})
    return messages


def test_round_robin_policy_asks_in_order_then_summarises() -> None:
    policy = RoundRobinPolicy([("A", "A"), ("B", "B"), ("C", "C")], max_rounds=5)
    messages = _turn(policy, "go", {"A": "a1", "B": None, "C": "c1"})
    again = policy.chat(messages, [{"type": "function"}])
    assert [c.name for c in again.tool_calls] == ["B"]  # the silent agent is asked again
    assert "a1" in json.loads(again.tool_calls[0].arguments)["task"]

    final = policy.chat(messages, [{"type": "function"}], tool_choice="none")

    assert not final.tool_calls
    assert final.content.splitlines()[1] == "No answer from: B."
    assert "- A answered: a1" in final.content and "- C answered: c1" in final.content


def test_random_policy_asks_every_agent_once_within_max_rounds() -> None:
    policy = RandomPolicy([("A", "A"), ("B", "B"), ("C", "C")], max_rounds=3, seed=7)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    asked = []
    for _ in range(3):
        reply = policy.chat(messages, [{"type": "function"}])
        (call,) = reply.tool_calls
        asked.append(call.name)
        messages += [reply.to_message(), {"role": "tool", "tool_call_id": call.id, "content": f"{call.name}!"}]

    final = policy.chat(messages, [{"type": "function"}])

    assert sorted(asked) == ["A", "B", "C"]
    assert final.content.splitlines()[1] == "All agents answered."


def test_the_multi_agent_example_loads_as_agent_app() -> None:
    from agent_platform.runtime import load_agents

    agents = load_agents("examples.multi_agent:agents")

    assert [a.name for a in agents] == ["FlightFinder", "HotelFinder", "TravelOrchestrator"]
    orchestrator = agents[2]
    assert list(orchestrator.tools) == ["FlightFinder", "HotelFinder"]
    assert orchestrator.max_iterations == orchestrator.max_rounds + 2
