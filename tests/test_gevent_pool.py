"""A worker on Celery's gevent pool (``-P gevent``, ``WORKER_POOL=gevent``) makes its model
calls with the SDK's synchronous client, its deadline kept by gevent
(:mod:`agent_platform.llm.green`): overlapping calls no longer deadlock, a trickling
server is cut at the deadline (C13), and streamed tokens arrive as under prefork. Real
Redis, a real worker, the web app over real HTTP, the scripted model.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent_platform.testing import ScriptedModel, streamed, text, tool_call

from .helpers import Api, Platform, chain_problems
from .test_cases_model_faults import check_c13
from .test_streaming import check_tokens_arrive_live

AGENT_APP = (
    "tests.agents:travel_buddy,tests.agents_model_faults:slow_model_buddy,"
    "tests.agents_model_faults:slow_unstreamed_buddy"
)
PLATFORM_POOL = "gevent"
PLATFORM_CONCURRENCY = 8
PLATFORM_ENV = {"AGENT_PLATFORM_LLM_BACKOFF": "0.05"}
TURNS = 4


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a held stream (and a worker) waiting on a failed test


def _flights(body: dict[str, Any]) -> Any:
    """TravelBuddy's model for turns "Find me flights, gevent-N": a streamed tool call,
    then a streamed answer naming the turn, each written over ~0.3 s."""
    last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    token = re.search(r"gevent-\d", last_user).group(0)  # type: ignore[union-attr]
    if body["messages"][-1]["role"] == "tool":
        return streamed(text(f"Flights for {token}: SkyHighAir and GlobalWings."), chunk_chars=2, interval=0.01)
    return streamed(tool_call("search_flights", {"destination": f"City of {token}"}), chunk_chars=2, interval=0.01)


def test_turns_started_at_once_all_complete(api: Api, model: ScriptedModel, platform: Platform) -> None:
    model.set_responder(_flights)
    tokens = [f"gevent-{i}" for i in range(TURNS)]

    ids = {t: api.start_turn(f"Find me flights, {t}", session_id=t, agent="TravelBuddy") for t in tokens}

    for token, wf in ids.items():
        status = api.wait_status(wf, timeout=20)
        assert status["runtime_status"] == "COMPLETED", status
        assert status["output"] == f"Flights for {token}: SkyHighAir and GlobalWings."
        steps = api.steps(wf)
        assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]
        assert chain_problems(steps) == []
    assert not model.errors and model.calls == 2 * TURNS
    assert model.max_in_flight >= 2  # the model calls overlapped (one at a time never deadlocked)
    (worker,) = platform.stack.workers
    assert "(gevent)" in worker.log()  # Celery's banner: "concurrency: 8 (gevent)"
    assert {s["worker"] for wf in ids.values() for s in api.steps(wf)} == {worker.hostname}


@pytest.mark.parametrize("agent", ["SlowModelBuddy", "SlowUnstreamedBuddy"], ids=["streamed", "unstreamed"])
@pytest.mark.parametrize("in_headers", [False, True], ids=["trickled-body", "endless-headers"])
def test_c13_a_trickling_model_server_is_cut_at_the_call_deadline(
    api: Api, model: ScriptedModel, in_headers: bool, agent: str
) -> None:
    check_c13(api, model, in_headers, agent)


def test_tokens_arrive_live_as_under_prefork(api: Api, model: ScriptedModel, gate: threading.Event) -> None:
    check_tokens_arrive_live(api, model, gate, agent="TravelBuddy")
