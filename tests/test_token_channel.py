"""The token side channel on a real Redis (issue 14, DESIGN section 3 rule 12): batching,
the fencing of an older run, retry entries, and the timeline that merges tokens with the
step log under one resumable id scheme. Whole turns are in tests/test_streaming.py.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from agent_platform.engine.records import StepClock
from agent_platform.engine.tokens import TokenPublisher
from agent_platform.errors import ValidationError
from agent_platform.store.tokens import TokenChannel
from agent_platform.store.workflows import CheckpointPlan, WorkflowStore
from agent_platform.timeline import LivePrinter, Position, TimelineEvent, follow_timeline


@pytest.fixture
def store(redis_client: redis.Redis) -> WorkflowStore:
    return WorkflowStore(redis_client, "test:", "workflow_state")


@pytest.fixture
def wf(store: WorkflowStore) -> str:
    workflow_id, _ = store.create(uuid.uuid4().hex, "TravelBuddy", "s1", "Fly me to Paris")
    return workflow_id


def _checkpoint(store: WorkflowStore, wf: str, stage: int, kind: str, data: dict[str, Any], end: bool = False) -> None:
    record = StepClock().record(kind, "ok", 1, "w", data)
    updates = {"runtime_status": "COMPLETED" if end else "RUNNING"}
    plan = CheckpointPlan("end" if end else "advance", updates, next={"kind": "llm"})
    result = store.checkpoint(wf, stage, None, "", record, plan)
    assert result.accepted, result


def _entries(channel: TokenChannel, wf: str) -> list[Any]:
    return channel.read(wf)


def test_deltas_are_batched_by_size_and_the_first_goes_at_once(store: WorkflowStore, wf: str) -> None:
    channel = TokenChannel(store)
    publisher = TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=64, interval=0.05)
    answer = "".join(f"word{n} " for n in range(60))  # 400 characters, one delta per character

    time.sleep(0.06)  # the model's time to its first token: longer than a batch's interval
    for char in answer:
        publisher({"text": char})
    publisher({"finish_reason": "stop"})
    publisher.close()

    entries = _entries(channel, wf)
    texts = [e.delta.get("text", "") for e in entries]
    assert "".join(texts) == answer
    assert texts[0] == answer[0]  # time to first token: not held for a batch
    assert all(len(t) <= 64 for t in texts) and len(entries) <= 2 + len(answer) // 64
    assert entries[-1].delta.get("finish_reason") == "stop"
    assert {(e.type, e.after, e.stage, e.attempt) for e in entries} == {("delta", -1, 1, 1)}
    ttl = store.client.pttl(channel.key(wf))
    assert 0 < ttl <= 300_000  # a short-lived side channel, never part of the checkpoint
    assert store.steps(wf) == []


def test_tool_call_fragments_merge_per_call_within_a_batch(store: WorkflowStore, wf: str) -> None:
    channel = TokenChannel(store)
    publisher = TokenPublisher(channel, wf, stage=1, attempt=1, interval=0.05)
    time.sleep(0.06)
    publisher({"tool_call": {"index": 0, "id": "a", "name": "search_flights", "arguments": ""}})  # goes at once
    for part in ['{"desti', 'nation"', ': "Paris"}']:
        publisher({"tool_call": {"index": 0, "arguments": part}})
    publisher({"tool_call": {"index": 1, "id": "b", "name": "search_flights", "arguments": '{"destination": "Rome"}'}})
    publisher.close()

    batches = [e.delta["tool_calls"] for e in _entries(channel, wf)]
    assert batches[0] == [{"index": 0, "id": "a", "name": "search_flights", "arguments": ""}]
    assert batches[1] == [
        {"index": 0, "arguments": '{"destination": "Paris"}'},
        {"index": 1, "id": "b", "name": "search_flights", "arguments": '{"destination": "Rome"}'},
    ]


def test_a_newer_run_of_the_step_fences_the_older_one_after_a_retry_entry(store: WorkflowStore, wf: str) -> None:
    channel = TokenChannel(store)
    old = TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=1)
    old({"text": "Par"})
    new = TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=1)
    new({"text": "Paris is"})
    old({"text": "tial"})  # a worker that lost its lease, still reading its model
    new({"text": " lovely"})

    entries = _entries(channel, wf)
    assert [(e.type, e.delta.get("text")) for e in entries] == [
        ("delta", "Par"), ("retry", None), ("delta", "Paris is"), ("delta", " lovely"),
    ]  # fmt: skip
    assert old.closed and not new.closed
    # another stage's first run is no retry
    TokenPublisher(channel, wf, stage=3, attempt=1, max_chars=1)({"text": "Next"})
    assert _entries(channel, wf)[-1].type == "delta"


def test_a_fast_call_writes_its_tokens_in_the_checkpoints_round_trip(store: WorkflowStore, wf: str) -> None:
    _checkpoint(store, wf, 0, "start", {"session_id": "s1"})
    channel = TokenChannel(store)
    publisher = TokenPublisher(channel, wf, stage=1, attempt=1)  # 64 characters or 0.1 s per batch
    publisher({"text": "Fly on "})
    publisher({"text": "Monday."})
    publisher({"finish_reason": "stop"})
    assert _entries(channel, wf) == []  # the model answered within one interval: nothing written yet

    batch = publisher.close_pending()
    assert batch is not None and publisher.closed and publisher.close_pending() is None
    record = StepClock().record("llm", "ok", 1, "w", {"content": "Fly on Monday."})
    plan = CheckpointPlan("advance", {"runtime_status": "RUNNING"}, next={"kind": "llm"})
    sent: list[list[str]] = []
    pipeline = store.client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: (sent.append([str(c[0][0]) for c in pipe.command_stack]), execute(*a, **k))[1]
        return pipe

    store.client.pipeline = counting_pipeline  # type: ignore[method-assign]
    try:
        assert store.checkpoint(wf, 1, None, "", record, plan, before=batch).accepted
    finally:
        del store.client.pipeline
    # one round trip: the token script, the checkpoint script and the sweeper's due time
    assert sent == [["EVALSHA", "EVALSHA", "ZADD"]]

    (entry,) = _entries(channel, wf)
    assert entry.delta == {"text": "Fly on Monday.", "finish_reason": "stop"}
    assert entry.after == 0 and entry.event_data()["seq"] == 1  # before the llm record, after start
    assert [s["kind"] for s in store.steps(wf)] == ["start", "llm"]


def test_a_failed_call_voids_its_partial_output_once(store: WorkflowStore, wf: str) -> None:
    channel = TokenChannel(store)
    first = TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=1)
    first({"text": "Half an ans"})
    first.abandon()
    silent = TokenPublisher(channel, wf, stage=1, attempt=2, max_chars=1)
    silent.abandon()  # published nothing: nothing to void
    second = TokenPublisher(channel, wf, stage=1, attempt=3, max_chars=1)
    second({"text": "A whole answer."})

    assert [(e.type, e.attempt) for e in _entries(channel, wf)] == [("delta", 1), ("retry", 1), ("delta", 3)]


def test_a_purged_workflow_gets_no_tokens(store: WorkflowStore, wf: str) -> None:
    channel = TokenChannel(store)
    TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=1)({"text": "x"})
    assert store.client.exists(channel.key(wf))
    _checkpoint(store, wf, 0, "finish", {"output": "x"}, end=True)
    store.purge(wf)
    assert not store.client.exists(channel.key(wf))
    publisher = TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=1)
    publisher({"text": "late"})
    assert publisher.closed and not store.client.exists(channel.key(wf))


# -- the timeline -----------------------------------------------------------------------------------


def _turn(store: WorkflowStore, wf: str) -> None:
    """start, llm (streamed in three batches), finish; a raised event lands mid-stream."""
    channel = TokenChannel(store)
    _checkpoint(store, wf, 0, "start", {"session_id": "s1"})
    publisher = TokenPublisher(channel, wf, stage=1, attempt=1, max_chars=1)
    publisher({"text": "Fly "})
    publisher({"text": "on "})
    store.raise_event(wf, "note", {"x": 1}, StepClock().record("event", "ok", 1, "w", {"name": "note"}))
    publisher({"text": "Monday."})
    publisher.close()
    _checkpoint(store, wf, 1, "llm", {"content": "Fly on Monday."})
    _checkpoint(store, wf, 2, "finish", {"output": "Fly on Monday."}, end=True)


def _events(store: WorkflowStore, wf: str, after: Position = Position(), tokens: bool = True) -> list[TimelineEvent]:
    return [e for e in follow_timeline(store, wf, after, tokens=tokens, timeout=10) if e is not None]


def test_timeline_orders_tokens_between_steps_as_they_happened(store: WorkflowStore, wf: str) -> None:
    _turn(store, wf)

    events = _events(store, wf)

    shape = [(e.kind, e.data.get("kind") or e.data.get("text") or e.data.get("runtime_status")) for e in events]
    assert shape == [
        ("step", "start"), ("token", "Fly "), ("token", "on "), ("step", "event"), ("token", "Monday."),
        ("step", "llm"), ("step", "finish"), ("status", "COMPLETED"),
    ]  # fmt: skip
    ids = [e.id for e in events[:-1]]
    assert ids[0] == "0" and ids[5] == "2" and events[-1].id is None
    assert all(str(i).startswith("0:") for i in ids[1:3]) and str(ids[4]).startswith("1:")
    assert [e.data["seq"] for e in events if e.kind == "token"] == [1, 1, 2]  # the seq the step would take
    assert "".join(e.data["text"] for e in events if e.kind == "token") == events[5].data["data"]["content"]
    assert [e.data for e in events if e.kind == "step"] == store.steps(wf)


@pytest.mark.parametrize("cut", range(7))
def test_resuming_after_any_event_sends_the_rest_once(store: WorkflowStore, wf: str, cut: int) -> None:
    _turn(store, wf)
    everything = _events(store, wf)

    rest = _events(store, wf, Position.parse(everything[cut].id or ""))

    assert everything[: cut + 1] + rest == everything


def test_timeline_without_tokens_and_ids_that_are_not_ours(store: WorkflowStore, wf: str) -> None:
    _turn(store, wf)
    assert [e.kind for e in _events(store, wf, tokens=False)] == ["step"] * 4 + ["status"]
    for bad in ("step-3", "-2", "3:abc", "3:1-2-3", ""):
        with pytest.raises(ValidationError):
            Position.parse(bad)
    assert str(Position.parse("3:17-0")) == "3:17-0" and Position.parse("-1") == Position()


def test_timeline_yields_none_while_nothing_happens(store: WorkflowStore, wf: str) -> None:
    _checkpoint(store, wf, 0, "start", {})
    events = follow_timeline(store, wf, block_ms=10)
    first = next(events)
    assert first is not None and first.kind == "step"
    assert next(events) is None  # time for a keep-alive


def test_live_printer_writes_text_as_it_comes_and_steps_on_their_lines(store: WorkflowStore, wf: str) -> None:
    import io

    _turn(store, wf)
    out, live = io.StringIO(), io.StringIO()
    show = LivePrinter(lambda r: f"[{r['seq']}] {r['kind']}", out, live)
    for event in _events(store, wf):
        show(event)
    assert out.getvalue().splitlines() == ["[0] start", "[1] event", "[2] llm", "[3] finish"]
    assert live.getvalue() == "  > Fly on \n  > Monday.\n"
