"""Cases C01, C03 and C05 of /work/shared/cases, against real workers, Redis and HTTP."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, text, tool_call

from .agents import recorded_calls
from .helpers import Api, Platform, platform_env, running_platform

#: C03 needs two worker processes; C01 shares them.
PLATFORM_WORKERS = 2


def _pairs(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in messages]


def test_c01_bad_tool_arguments_go_back_to_the_model(api: Api, model: ScriptedModel, redis_client: redis.Redis) -> None:
    model.add(
        tool_call("search_flights", {"destination": ["Paris", "Rome"]}),
        tool_call("search_flights", {"destination": "Paris"}),
        text("SkyHighAir ($450) and GlobalWings ($375.50) fly to Paris."),
    )

    wf = api.start_turn("I want to find flights to Paris", session_id="c01")
    status = api.wait_status(wf)

    assert status["runtime_status"] == "COMPLETED", status
    assert status["output"] == "SkyHighAir ($450) and GlobalWings ($375.50) fly to Paris."
    assert model.calls == 3
    steps = api.steps(wf)
    assert [(s["kind"], s["status"]) for s in steps] == [
        ("start", "ok"), ("llm", "ok"), ("tool", "error"), ("llm", "ok"), ("tool", "ok"), ("llm", "ok"), ("finish", "ok"),
    ]  # fmt: skip
    bad_call_id = steps[1]["data"]["tool_calls"][0]["id"]
    # the second request answers the bad call with the validation error, naming the field
    answer = model.requests[1]["messages"][-1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == bad_call_id
    assert "destination" in answer["content"] and "string" in answer["content"].lower(), answer
    # the function itself only ever ran with valid arguments
    assert [c["arguments"] for c in recorded_calls(redis_client)] == [{"destination": "Paris"}]


def test_c03_concurrent_sessions_never_share_history(api: Api, model: ScriptedModel, platform: Platform) -> None:
    tokens = [f"token-{i:02d}" for i in range(20)]

    def responder(body: dict[str, Any]) -> Any:
        last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        token = re.search(r"token-\d\d", last_user).group(0)  # type: ignore[union-attr]
        if body["messages"][-1]["role"] == "tool":
            return text(f"Flights for {token}: SkyHighAir and GlobalWings.")
        return tool_call("search_flights", {"destination": f"City of {token}"})

    model.set_responder(responder)
    with ThreadPoolExecutor(len(tokens)) as pool:
        ids = dict(
            zip(
                tokens,
                pool.map(lambda t: api.start_turn(f"Find me flights, {t}", session_id=f"session-{t}"), tokens),
                strict=True,
            )
        )

    for token, wf in ids.items():
        status = api.wait_status(wf, timeout=60)
        assert status["runtime_status"] == "COMPLETED", status
        assert status["output"] == f"Flights for {token}: SkyHighAir and GlobalWings."
    assert not model.errors
    # every request the model received holds exactly one session's token
    seen: dict[str, int] = {}
    for request in model.requests:
        present = [t for t in tokens if t in json.dumps(request["messages"])]
        assert len(present) == 1, present
        seen[present[0]] = seen.get(present[0], 0) + 1
    assert seen == {t: 2 for t in tokens}
    # each session's memory holds exactly its own user message and answer, in order
    for token, wf in ids.items():
        history = platform.history(f"session-{token}")
        assert _pairs(history) == [
            ("user", f"Find me flights, {token}"),
            ("assistant", f"Flights for {token}: SkyHighAir and GlobalWings."),
        ]
        assert {m["workflow_id"] for m in history} == {wf}
    # both worker processes took steps
    workers = {s["worker"] for wf in ids.values() for s in api.steps(wf)}
    assert workers == {w.hostname for w in platform.stack.workers}


def _answer_last_user(body: dict[str, Any]) -> Any:
    last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return text(f"Answer to: {last_user}")


def _request_for(model: ScriptedModel, task: str) -> list[tuple[str, Any]]:
    matching = [r for r in model.requests if r["messages"][-1] == {"role": "user", "content": task}]
    assert len(matching) == 1, f"{len(matching)} requests end with {task!r}"
    return _pairs(matching[0]["messages"])


def test_c05_session_is_chosen_per_request_and_survives_restarts(tmp_path: Path, model: ScriptedModel) -> None:
    a1, b1, c1 = "Alice: flights to Paris?", "Bob: flights to Rome?", "Carol: flights to Oslo?"
    a2, a3 = "Alice: and the cheapest?", "Alice: what did I ask first?"
    model.set_responder(_answer_last_user)
    server = EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=True).start()
    try:
        env = platform_env(server.url, model.base_url, "tests.agents:travel_buddy")
        with running_platform(env, tmp_path / "workers", workers=1) as deployment:
            api = deployment.api
            assert api is not None
            turns = {
                a1: api.start_turn(a1, session_id="alice"),
                b1: api.start_turn(b1, session_id="bob"),
                c1: api.start_turn(c1),
            }
            for wf in turns.values():
                assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
            assert api.status(turns[c1])["session_id"] == "default"
            assert api.wait_status(api.start_turn(a2, session_id="alice"))["runtime_status"] == "COMPLETED"

            # alice's second turn saw alice's first turn and nothing of bob's (or carol's)
            prompt = _request_for(model, a2)
            assert prompt[1:] == [("user", a1), ("assistant", f"Answer to: {a1}"), ("user", a2)]
            expected = {
                "alice": [
                    ("user", a1),
                    ("assistant", f"Answer to: {a1}"),
                    ("user", a2),
                    ("assistant", f"Answer to: {a2}"),
                ],
                "bob": [("user", b1), ("assistant", f"Answer to: {b1}")],
                "default": [("user", c1), ("assistant", f"Answer to: {c1}")],
            }
            assert {s: _pairs(deployment.history(s)) for s in expected} == expected

            deployment.restart_everything(server)
            api = deployment.api
            assert api is not None

            assert {s: _pairs(deployment.history(s)) for s in expected} == expected
            assert api.status(turns[b1])["output"] == f"Answer to: {b1}"
            third = api.wait_status(api.start_turn(a3, session_id="alice"))
            assert third["runtime_status"] == "COMPLETED", third
            assert _request_for(model, a3)[1:] == [*expected["alice"], ("user", a3)]
            assert _pairs(deployment.history("alice")) == [
                *expected["alice"],
                ("user", a3),
                ("assistant", f"Answer to: {a3}"),
            ]
    except BaseException:
        if "deployment" in locals():
            print(deployment.stack.logs(since_mark=False))  # shown with the failure
        raise
    finally:
        server.stop()
