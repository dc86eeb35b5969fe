"""The workflow store's writes at a turn's creation and end, on a real Redis (issue 15: one
round trip each, and a refused creation leaves nothing behind)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from agent_platform.errors import WorkflowExists
from agent_platform.memory.redis_memory import RedisSessionHistory
from agent_platform.store.workflows import WorkflowStore


@pytest.fixture
def store(redis_client: redis.Redis) -> WorkflowStore:
    return WorkflowStore(redis_client, f"t{uuid.uuid4().hex[:6]}:", "workflow_state")


def _round_trips(client: Any) -> list[list[str]]:
    """Record the commands of each round trip made through ``client`` (pipelines and single commands)."""
    sent: list[list[str]] = []
    pipeline, execute_command = client.pipeline, client.execute_command

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: (sent.append([str(c[0][0]) for c in pipe.command_stack]), execute(*a, **k))[1]
        return pipe

    def counting_command(*args: Any, **kwargs: Any) -> Any:
        sent.append([str(args[0])])
        return execute_command(*args, **kwargs)

    client.pipeline, client.execute_command = counting_pipeline, counting_command
    return sent


def _snapshot(store: WorkflowStore, agent: str, session: str) -> tuple[Any, ...]:
    c = store.client
    return (
        c.zrange(store.keys.index, 0, -1, withscores=True),
        c.zrange(store.keys.active, 0, -1, withscores=True),
        c.lrange(store.keys.session(agent, session), 0, -1),
    )


def test_a_creation_is_one_round_trip_and_a_refused_one_leaves_nothing(store: WorkflowStore) -> None:
    store.create("wf-0", "Bot", "s0", "the first creation on this Redis loads the script")
    sent = _round_trips(store.client)
    wf, created = store.create("wf-a", "Bot", "s1", "first")
    assert created and sent == [["EVALSHA", "ZADD", "ZADD", "RPUSH"]]
    assert store.session_head("Bot", "s1") == "wf-a" and store.state("wf-a").runtime_status == "PENDING"

    for status in ("PENDING", "COMPLETED"):
        if status == "COMPLETED":  # a finished turn has left the sweeper's set and its session
            store.client.hset(store.key(wf, "meta"), "runtime_status", "COMPLETED")
            store.finish_turn("Bot", "s1", wf)
        before = _snapshot(store, "Bot", "s1")
        with pytest.raises(WorkflowExists):
            store.create("wf-a", "Bot", "s1", "again")
        assert _snapshot(store, "Bot", "s1") == before, status
        assert store.state("wf-a").input == "first"


def test_a_finish_appends_to_memory_and_leaves_session_and_sweeper_in_one_round_trip(store: WorkflowStore) -> None:
    history = RedisSessionHistory(store.client, store.keys.base + ":", "Bot")
    store.create("wf-1", "Bot", "s1", "first")
    store.create("wf-2", "Bot", "s1", "second")
    turn = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "answer"}]
    leave = store.keys.session("Bot", "s1")
    history.append_turn("s0", "wf-0", turn)  # the first append on this Redis loads the script

    sent = _round_trips(store.client)
    head = store.finish_turn("Bot", "s1", "wf-1", history.append_call("s1", "wf-1", turn, leave=leave))

    assert head == "wf-2" and sent == [["EVALSHA", "ZREM"]]
    assert [m["content"] for m in history.messages("s1")] == ["first", "answer"]
    assert store.client.zscore(store.keys.active, "wf-1") is None and store.session_head("Bot", "s1") == "wf-2"
    # again (a re-run finish): memory holds the turn once
    assert store.finish_turn("Bot", "s1", "wf-1", history.append_call("s1", "wf-1", turn, leave=leave)) == "wf-2"
    assert len(history.messages("s1")) == 2
    # a restarted Redis forgot the script: loaded, and the turn is appended once all the same
    store.client.script_flush()
    store.client.zadd(store.keys.active, {"wf-2": 0})
    assert store.finish_turn("Bot", "s1", "wf-2", history.append_call("s1", "wf-2", turn, leave=leave)) is None
    assert len(history.messages("s1")) == 4 and store.client.zscore(store.keys.active, "wf-2") is None


def test_a_step_of_a_purged_workflow_cannot_checkpoint_into_its_successor_of_the_same_id(store: WorkflowStore) -> None:
    """An instance id purged and used again (the README's way to reuse one): a model call of
    the old run that comes back while the new run is at the same step_seq is refused, as
    the old workflow is missing, instead of writing the old answer into the new turn."""
    from agent_platform.engine.records import StepClock
    from agent_platform.store.plans import CheckpointPlan

    store.create("ABA", "Bot", "s1", "OLD turn")
    old = store.open_step("ABA", 0, None, "old-token", 30.0)
    assert old.verdict == "open" and old.state is not None
    store.control("ABA", "terminate")
    store.finish_turn("Bot", "s1", "ABA")
    store.purge("ABA")
    store.create("ABA", "Bot", "s1", "NEW turn")
    new = store.open_step("ABA", 0, None, "new-token", 30.0)
    assert new.verdict == "open" and new.state is not None

    record = StepClock().record("start", "ok", 1, "w", {"task": "OLD turn"})
    plan = CheckpointPlan("advance", {"runtime_status": "RUNNING"}, next={"kind": "llm"})
    stale = store.checkpoint("ABA", 0, None, "old-token", record, plan, incarnation=old.state.fields["incarnation"])

    assert not stale.accepted and stale.reason == "missing"
    assert store.steps("ABA") == [] and store.state("ABA").input == "NEW turn"
    fresh = store.checkpoint("ABA", 0, None, "new-token", record, plan, incarnation=new.state.fields["incarnation"])
    assert fresh.accepted and [s["kind"] for s in store.steps("ABA")] == ["start"]
