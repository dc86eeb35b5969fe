"""The engine's decisions, in process (no Celery, no HTTP, no network): each outcome kind
(Advance, ToolAnswered, RetryAfter, Suspend, End), the tool group's counter, fencing,
lost runs, and the latent defects of issue 16 (merged listing, purge, sweeper lock).

The store runs the engine's real Lua scripts on fakeredis; see ``tests/engine_fakes.py``.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import re
from pathlib import Path

import pytest

from agent_platform.engine import control, lifecycle
from agent_platform.engine.dispatch import StepMessage, task_kind
from agent_platform.engine.runner import StepReport, Verdict, run_step
from agent_platform.engine.sweeper import sweep_due
from agent_platform.errors import ConfigurationError, LLMError, RetryableLLMError
from agent_platform.runtime import load_agents
from agent_platform.store.queries import list_workflows
from agent_platform.store.state import RuntimeStatus
from agent_platform.store.turn_messages import TurnMessages

from .engine_fakes import FLAKY, PAUSE, FakeModel, FakeRuntime, call, make_agent, say

REPO = Path(__file__).resolve().parent.parent


def kinds(rt: FakeRuntime, wf: str) -> list[tuple[str, str]]:
    return [(r["kind"], r["status"]) for r in rt.store_for("Unit").steps(wf)]


def test_advance_then_end_completes_and_appends_memory_once() -> None:
    model = FakeModel(say("Hello."))
    rt = FakeRuntime(make_agent(model))
    finished: list[str] = []
    rt.finish_hooks.append(lambda _, state: finished.append(state.runtime_status))
    wf = rt.start("Unit", "Hi")

    reports = list(rt.drain())

    assert [r.verdict for r in reports] == [Verdict.DONE]  # one task: start, llm, finish
    assert [r.steps for r in reports] == [("start", "llm", "finish")]
    state = rt.store_for("Unit").state(wf)
    assert state.runtime_status == RuntimeStatus.COMPLETED and state.output == "Hello."
    assert kinds(rt, wf) == [("start", "ok"), ("llm", "ok"), ("finish", "ok")]
    history = rt.history_for(rt.agent("Unit"))
    assert [m["content"] for m in history.messages("s1")] == ["Hi", "Hello."]
    lifecycle.finish_workflow(rt, rt.store_for("Unit"), state)  # a second finish changes nothing
    assert len(history.messages("s1")) == 2
    assert finished == ["COMPLETED", "COMPLETED"]
    assert rt.store_for("Unit").active_workflows() == []


def test_tool_group_counter_the_last_call_dispatches_the_next_llm() -> None:
    model = FakeModel(call(("add", '{"a": 1, "b": 2}'), ("add", '{"a": 3, "b": 4}')), say("3 and 7"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "Add")
    assert rt.run_next().steps == ("start", "llm")  # two tool calls, one group
    group = [d.message for d in rt.queue]
    assert [(m.kind, m.step_seq, m.call_index) for m in group] == [("tool", 2, 0), ("tool", 2, 1)]

    second = rt.queue.pop(1).message
    report = lifecycle_run(rt, second)
    assert report.verdict == Verdict.DONE
    assert len(rt.queue) == 1 and rt.queue[0].message.call_index == 0  # nothing new: one call left
    assert rt.store_for("Unit").state(wf).tools_remaining == 1

    lifecycle_run(rt, rt.take())
    assert [(d.message.kind, d.message.step_seq) for d in rt.queue] == [("llm", 3)]
    list(rt.drain())
    steps = rt.store_for("Unit").steps(wf)
    assert [s["data"].get("result") for s in steps if s["kind"] == "tool"] == [7, 3]  # checkpoint order
    tool_messages = [m for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["3", "7"]  # the prompt keeps call order


def lifecycle_run(rt: FakeRuntime, message: StepMessage) -> StepReport:
    return run_step(rt, message, rt.worker)


def test_an_llm_step_reads_the_turn_messages_not_the_whole_step_log() -> None:
    """Issue 15: each model call gets the folded messages and one stage's records from the
    step's open; nothing reads the whole step log, in either mode."""
    whole_log_reads: list[str] = []

    def steps(workflow_id: str, *_: object, **__: object) -> list[dict[str, object]]:
        whole_log_reads.append(workflow_id)
        return []

    for local in (False, True):
        replies = [call(("add", f'{{"a": {i}, "b": 1}}')) for i in range(4)]
        model = FakeModel(*replies, say("done"))
        rt = FakeRuntime(make_agent(model, local_steps=local))
        store = rt.store_for("Unit")
        store.steps = steps  # type: ignore[method-assign,assignment]
        wf = rt.start("Unit", "add")

        list(rt.drain())

        assert whole_log_reads == [] and store.state(wf).runtime_status == RuntimeStatus.COMPLETED
        last = model.requests[-1]["messages"]
        assert [m["role"] for m in last] == ["system", "user", *["assistant", "tool"] * 4]
        assert [m["content"] for m in last if m["role"] == "tool"] == ["1", "2", "3", "4"]


def test_a_model_call_reads_only_the_messages_the_last_checkpoint_added() -> None:
    """Issue 15 (bench.long_turn): a process keeps the turn's messages it read, so each
    model call of a long turn reads the few messages added since (and one it holds, as a
    check), in either mode; the model still gets the whole conversation."""

    def turn(local: bool) -> list[int]:
        model = FakeModel(*[call(("add", f'{{"a": {i}, "b": 1}}')) for i in range(8)], say("done"))
        rt = FakeRuntime(make_agent(model, local_steps=local))
        store = rt.store_for("Unit")
        read: list[int] = []
        merge = store.turns.merge
        store.turns.merge = lambda wf, start, texts: read.append(len(texts)) or merge(wf, start, texts)  # type: ignore[method-assign]
        wf = rt.start("Unit", "add")

        list(rt.drain())

        assert store.state(wf).runtime_status == RuntimeStatus.COMPLETED
        last = model.requests[-1]["messages"]
        assert [m["role"] for m in last] == ["system", "user", *["assistant", "tool"] * 8]
        assert [m["content"] for m in last if m["role"] == "tool"] == [str(i + 1) for i in range(8)]
        assert store.turns.have(wf) == 0  # dropped when the turn ended
        return read

    for local in (False, True):
        read = turn(local)
        assert len(read) >= 9 and max(read) <= 3, read  # not 2, 4, ..., 16 messages


def test_held_messages_that_do_not_match_the_stored_ones_are_not_used() -> None:
    """A copy whose last message differs from the stored one (a purged id used again) is
    dropped: the caller reads the turn another way (the step folds its step log)."""
    turns = TurnMessages(capacity=2)
    assert turns.merge("w1", 0, ['{"n": 0}', '{"n": 1}']) == [{"n": 0}, {"n": 1}]
    assert turns.have("w1") == 2
    assert turns.merge("w1", 1, ['{"n": 1}', '{"n": 2}']) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert turns.merge("w1", 2, ['{"other": 1}', '{"n": 3}']) is None and turns.have("w1") == 0
    for wf in ("a", "b", "c"):  # bounded: the least recently used goes first
        turns.merge(wf, 0, ["{}"])
    assert [turns.have(wf) for wf in ("a", "b", "c")] == [0, 1, 1]


def test_retry_after_redispatches_the_same_step_with_a_countdown() -> None:
    FLAKY["calls"] = 0
    model = FakeModel(RetryableLLMError("503", retry_after=0.5), call(("flaky", "{}")), say("done"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "go")

    report = rt.run_next()  # start, then llm: 503

    assert report.verdict == Verdict.RETRY and report.steps == ("start", "llm")
    again = rt.queue[0]
    assert (again.message.kind, again.message.step_seq, again.message.attempt) == ("llm", 1, 2)
    assert again.countdown is not None and again.countdown >= 0.5
    rt.run_next()  # llm attempt 2: calls flaky
    assert rt.run_next().verdict == Verdict.RETRY  # flaky fails once
    assert rt.queue[0].countdown and rt.queue[0].message.call_index == 0
    list(rt.drain())
    assert kinds(rt, wf) == [
        ("start", "ok"), ("llm", "retry"), ("llm", "ok"), ("tool", "retry"), ("tool", "ok"), ("llm", "ok"),
        ("finish", "ok"),
    ]  # fmt: skip
    attempts = [(r["kind"], r["attempt"]) for r in rt.store_for("Unit").steps(wf) if r["kind"] != "start"]
    assert attempts[:4] == [("llm", 1), ("llm", 2), ("tool", 1), ("tool", 2)]


def test_suspend_waits_for_an_approval_and_an_event_wakes_it() -> None:
    model = FakeModel(call(("wire", '{"amount": 5}')), say("wired"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "wire 5")
    rt.run_next()

    assert rt.run_next().verdict == Verdict.WAITING
    state = rt.store_for("Unit").state(wf)
    assert state.runtime_status == RuntimeStatus.SUSPENDED and state.pending_event["name"] == "approval.2.0"
    assert rt.queue == []

    assert control.raise_event(rt, wf, "approval.2.0", {"approved": True}) is True
    list(rt.drain())
    assert rt.store_for("Unit").state(wf).runtime_status == RuntimeStatus.COMPLETED
    assert [r["kind"] for r in rt.store_for("Unit").steps(wf)].count("event") == 2  # the wait, the event


def test_an_event_raised_before_the_wait_is_checkpointed_is_read_once() -> None:
    """The early event (issue 16): raised between the step's open and its checkpoint, it
    is logged once and the step runs again at once; the workflow never stays SUSPENDED."""
    model = FakeModel(call(("wire", '{"amount": 5}')), say("wired"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "wire 5")
    rt.run_next()
    store = rt.store_for("Unit")
    message = rt.take()
    # the run reads the state (no event yet), then the event lands before its checkpoint
    original = store.checkpoint

    def checkpoint_after_event(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert control.raise_event(rt, wf, "approval.2.0", {"approved": True}) is False  # not waiting yet
        return original(*args, **kwargs)

    store.checkpoint = checkpoint_after_event  # type: ignore[method-assign]
    try:
        assert lifecycle_run(rt, message).verdict == Verdict.WAITING
    finally:
        store.checkpoint = original  # type: ignore[method-assign]
    assert store.state(wf).runtime_status == RuntimeStatus.RUNNING
    assert [d.message.kind for d in rt.queue] == ["tool"]  # dispatched again at once
    list(rt.drain())
    assert store.state(wf).runtime_status == RuntimeStatus.COMPLETED
    events = [r for r in store.steps(wf) if r["kind"] == "event" and "name" in r["data"]]
    assert len(events) == 1


def test_end_failed_on_a_model_error_names_the_step() -> None:
    rt = FakeRuntime(make_agent(FakeModel(LLMError("400 bad request"))))
    wf = rt.start("Unit", "go")
    reports = list(rt.drain())

    assert reports[-1].verdict == Verdict.FAILED
    state = rt.store_for("Unit").state(wf)
    assert state.runtime_status == RuntimeStatus.FAILED
    assert state.failure_details == {"type": "LLMError", "message": "400 bad request", "step": "llm", "step_seq": 1}


def test_fencing_stale_and_duplicate_messages_do_nothing() -> None:
    model = FakeModel(call(("add", '{"a": 1, "b": 1}')), say("2"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "add")
    rt.run_next()
    tool_message = rt.queue[0].message
    rt.run_next()
    assert lifecycle_run(rt, tool_message).verdict == Verdict.STALE  # the workflow moved on
    assert lifecycle_run(rt, StepMessage("Unit", wf, "llm", 0)).verdict == Verdict.STALE
    list(rt.drain())
    assert lifecycle_run(rt, tool_message).verdict == Verdict.FINISHED
    assert len(model.requests) == 2


def test_a_run_whose_worker_died_becomes_a_lost_record() -> None:
    model = FakeModel(call(("add", '{"a": 1, "b": 1}')), say("2"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "add")
    rt.run_next()
    store = rt.store_for("Unit")
    message = rt.queue[0].message
    dead = store.open_step(wf, message.step_seq, 0, "host|1|dead", 5.0, worker="w1@host")
    assert dead.verdict == "open" and dead.lost == 0
    store.client.delete(store.keys.lease(wf, message.step_seq, 0))  # its lease expired

    list(rt.drain())

    records = [(r["kind"], r["status"], r["worker"]) for r in store.steps(wf) if r["kind"] == "tool"]
    assert records == [("tool", "lost", "w1@host"), ("tool", "ok", rt.worker)]
    assert store.state(wf).runtime_status == RuntimeStatus.COMPLETED


def _lose_runs(rt: FakeRuntime, wf: str, message: StepMessage, count: int) -> None:
    """``count`` runs of ``message``'s step whose worker died (lease expired, no checkpoint)."""
    store = rt.store_for("Unit")
    for n in range(count):
        opened = store.open_step(wf, message.step_seq, message.call_index, f"host|{n}|dead", 5.0, f"w{n}@host")
        assert opened.verdict == "open"
        store.client.delete(store.keys.lease(wf, message.step_seq, message.call_index))


def test_c14_a_tool_call_whose_worker_dies_every_time_ends_with_an_error_for_the_model() -> None:
    model = FakeModel(call(("add", '{"a": 1, "b": 1}')), say("The tool crashed."))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "add")
    rt.run_next()
    _lose_runs(rt, wf, rt.queue[0].message, 3)  # the default: 3 runs in all

    list(rt.drain())

    store = rt.store_for("Unit")
    tools = [(r["status"], r["worker"], r["attempt"]) for r in store.steps(wf) if r["kind"] == "tool"]
    assert tools == [("lost", "w0@host", 1), ("lost", "w1@host", 2), ("lost", "w2@host", 3), ("error", rt.worker, 3)]
    answer = model.requests[1]["messages"][-1]
    assert answer["role"] == "tool" and "worker lost during tool add (3 runs in all" in answer["content"]
    assert store.state(wf).runtime_status == RuntimeStatus.COMPLETED


class WorkerDied(BaseException):
    """Stands for a SIGKILL: nothing in the engine catches it."""


def test_c14_an_llm_step_whose_worker_dies_every_time_fails_the_turn() -> None:
    model = FakeModel(WorkerDied(), say("never"))
    rt = FakeRuntime(make_agent(model))
    wf = rt.start("Unit", "hello")
    with pytest.raises(WorkerDied):
        rt.run_next()  # start is checkpointed, the model call's worker dies
    store = rt.store_for("Unit")
    llm = StepMessage("Unit", wf, "llm", 1)
    store.client.delete(store.keys.lease(wf, 1, None))  # its lease expired
    _lose_runs(rt, wf, llm, 2)  # two more runs die: 3 in all
    assert lifecycle.redispatch(rt, store, store.state(wf)) == 1  # the sweeper

    assert [r.verdict for r in rt.drain()] == [Verdict.FAILED]

    state = store.state(wf)
    assert state.runtime_status == RuntimeStatus.FAILED and len(model.requests) == 1
    assert state.failure_details is not None and state.failure_details["type"] == "WorkerLost"
    assert "worker lost during llm step (3 runs in all" in state.failure_details["message"]
    assert [(r["kind"], r["status"]) for r in store.steps(wf)] == [
        ("start", "ok"), ("llm", "lost"), ("llm", "lost"), ("llm", "lost"), ("llm", "error"),
    ]  # fmt: skip


def test_local_steps_run_a_sequential_turn_in_one_task_with_the_same_records() -> None:
    model = FakeModel(call(("add", '{"a": 1, "b": 2}')), say("3"))
    rt = FakeRuntime(make_agent(model, local_steps=True))
    wf = rt.start("Unit", "add")

    reports = list(rt.drain())

    assert [str(r) for r in reports] == ["done: start llm tool llm finish"]
    assert kinds(rt, wf) == [("start", "ok"), ("llm", "ok"), ("tool", "ok"), ("llm", "ok"), ("finish", "ok")]
    state = rt.store_for("Unit").state(wf)
    assert state.runtime_status == RuntimeStatus.COMPLETED and state.steps_completed == 5
    assert rt.store_for("Unit").client.keys("*lease*") == []  # every lease released


def test_local_steps_leave_parallel_calls_timeouts_and_the_budget_to_the_broker() -> None:
    model = FakeModel(
        call(("add", '{"a": 1, "b": 2}'), ("add", '{"a": 1, "b": 1}')), call(("timed", '{"x": 1}')), say("ok")
    )
    rt = FakeRuntime(make_agent(model, local_steps=True))
    rt.start("Unit", "go")

    assert str(rt.run_next()) == "done: start llm"  # two calls: a Celery group
    assert [d.message.call_index for d in rt.queue] == [0, 1]
    assert [str(rt.run_next()) for _ in range(2)] == ["done: tool", "done: tool"]
    assert [d.message.kind for d in rt.queue] == ["llm"]  # after a group: through the broker
    assert str(rt.run_next()) == "done: llm"
    assert [(d.message.kind, d.message.tool) for d in rt.queue] == [("tool", "timed")]  # has a timeout
    assert str(rt.run_next()) == "done: tool"
    assert str(rt.run_next()) == "done: llm finish"

    slow = FakeRuntime(make_agent(FakeModel(call(("add", '{"a": 1, "b": 2}')), say("3")), local_steps=True))
    slow.settings = slow.settings.with_(local_steps_budget=0.0)
    slow.start("Unit", "add")
    assert [str(r) for r in slow.drain()] == ["done: start llm", "done: tool", "done: llm finish"]


def test_a_pause_is_seen_between_local_steps() -> None:
    model = FakeModel(call(("pausing", "{}")), say("resumed"))
    rt = FakeRuntime(make_agent(model, local_steps=True))
    PAUSE["runtime"] = rt
    wf = rt.start("Unit", "pause yourself")

    assert str(rt.run_next()) == "done: start llm tool"
    assert rt.store_for("Unit").state(wf).runtime_status == RuntimeStatus.SUSPENDED and rt.queue == []

    control.resume(rt, wf)
    assert [str(r) for r in rt.drain()] == ["done: llm finish"]
    assert rt.store_for("Unit").state(wf).runtime_status == RuntimeStatus.COMPLETED


def test_every_script_touches_keys_of_one_hash_tag() -> None:
    """Redis Cluster (issue 13): a script may only touch keys of one slot; every script
    of a whole turn (approval, retry, tool group, control, events) names keys of one
    workflow's hash tag only; the sweeper's index is written beside the scripts."""
    FLAKY["calls"] = 0
    model = FakeModel(call(("wire", '{"amount": 1}'), ("flaky", "{}")), say("ok"))
    rt = FakeRuntime(make_agent(model))
    store = rt.store_for("Unit")
    calls: list[tuple[str, list[str]]] = []
    original = store._run

    def run(name: str, keys: list[str], args: list[object], due: object = None, before: object = None) -> object:
        calls.append((name, keys))
        if before is not None:  # a side write in the same round trip (the token stream)
            calls.append((f"before {name}", before.keys))  # type: ignore[attr-defined]
        return original(name, keys, args, due, before)  # type: ignore[arg-type]

    store._run = run  # type: ignore[method-assign]
    wf = rt.start("Unit", "go")
    list(rt.drain())
    control.raise_event(rt, wf, "approval.2.0", {"approved": True})
    list(rt.drain())
    assert store.state(wf).runtime_status == RuntimeStatus.COMPLETED

    assert {name for name, _ in calls} >= {"open_step", "checkpoint", "raise_event"}
    for name, keys in calls:
        tags = {re.search(r"\{([^}]*)\}", key).group(1) for key in keys}  # type: ignore[union-attr]
        assert tags == {wf}, (name, keys)


def test_sweeper_lock_is_per_store_and_its_holder_sweeps_only_that_store() -> None:
    a, b = make_agent(FakeModel(), "A", "state_a"), make_agent(FakeModel(), "B", "state_b")
    rt = FakeRuntime(a, b)
    wf_a, wf_b = rt.start("A", "x"), rt.start("B", "y")
    rt.queue.clear()  # both start messages were lost
    for store in rt.stores():
        for wf in (wf_a, wf_b):
            store.client.zadd(store.keys.active, {wf: 0}, xx=True)  # due now
    assert rt.store_for("A").take_sweeper_lock(60)  # another worker sweeps store A

    sweep_due(rt)

    assert [(d.message.agent, d.message.workflow_id) for d in rt.queue] == [("B", wf_b)]


def test_listing_over_several_stores_is_merged_newest_first_and_paged() -> None:
    rt = FakeRuntime(make_agent(FakeModel(), "A", "state_a"), make_agent(FakeModel(), "B", "state_b"))
    created = []
    for i in range(6):
        agent = "AB"[i % 2]
        wf = rt.start(agent, f"task {i}", session_id=f"s{i}")
        created.append(wf)
        rt.store_for(agent).client.hset(rt.store_for(agent).key(wf, "meta"), "created_at", f"2030-01-01T00:00:0{i}Z")
    stores = rt.stores()

    first, cursor = list_workflows(stores, limit=4)
    rest, end = list_workflows(stores, limit=4, cursor=cursor or 0)

    assert [s.instance_id for s in first + rest] == created[::-1]
    assert cursor == 4 and end is None
    only_b, _ = list_workflows(stores, session_id="s3")
    assert [s.instance_id for s in only_b] == [created[3]]


def test_purge_deletes_every_key_of_a_workflow_including_the_bus_response_marker() -> None:
    rt = FakeRuntime(make_agent(FakeModel(say("ok"))))
    wf = rt.start("Unit", "go")
    list(rt.drain())
    store = rt.store_for("Unit")
    store.client.set(store.key(wf, "bus-response"), "1")
    store.client.set(store.key(wf, "callback"), "1")

    control.purge(rt, wf)

    assert sorted(store.client.scan_iter(match=f"*{wf}*")) == []


def test_a_purged_id_created_again_in_its_session_is_remembered_again() -> None:
    """Purge, then reuse the id (as the README says to): the new turn is appended to
    memory; the writers set used to keep the old one's id and skip it."""
    rt = FakeRuntime(make_agent(FakeModel(say("first"), say("second"))))
    store = rt.store_for("Unit")
    for task in ("one", "two"):
        store.create("reused", "Unit", "s1", task)
        rt.dispatch(StepMessage("Unit", "reused", task_kind("start"), 0))
        list(rt.drain())
        assert store.state("reused").runtime_status == RuntimeStatus.COMPLETED
        if task == "one":
            control.purge(rt, "reused")
    history = rt.history_for(rt.agent("Unit"))
    assert [m["content"] for m in history.messages("s1")] == ["one", "first", "two", "second"]


def test_lua_scripts_name_only_known_statuses_and_ship_as_package_data() -> None:
    lua_files = sorted((REPO / "agent_platform").rglob("*.lua"))
    assert len(lua_files) >= 9
    redis_words = {"MAXLEN", "COUNT"}  # arguments of XADD / XREVRANGE, not statuses
    found = {m for path in lua_files for m in re.findall(r"(?<!redis\.call\()'([A-Z]{4,})'", path.read_text())}
    literals = found - redis_words
    assert literals and literals <= {s.value for s in RuntimeStatus}, literals
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["agent_platform"].split(",")]
    for path in lua_files:
        relative = path.relative_to(REPO / "agent_platform").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
    for path in lua_files:  # each script names its KEYS and ARGV in its header
        text = path.read_text()
        if "KEYS[" in text.split("\n-- ", 1)[-1] and not path.name.startswith("_"):
            assert re.search(r"^-- KEYS\[1\]", text, re.M), path.name


#: The launchers (DESIGN section 2): the dev-mode ``start()`` and the CLI may import them
#: lazily, inside a function, from modules they import themselves.
LAUNCHERS = {"agent_platform.cli", "agent_platform.devmode", "agent_platform.dev_service", "agent_platform.demo"}


def _imports(path: Path, package: str, modules: set[str]) -> set[str]:
    """Modules of agent_platform that a module imports, at its top or inside a function
    (a lazy import counts too, except of a launcher; not under TYPE_CHECKING); ``from pkg
    import sub`` counts as importing ``pkg.sub`` only."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: set[str] = set()
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        if id(node) in lazy:
            targets -= LAUNCHERS
        found.update(targets)
    return {m for m in found if m.startswith("agent_platform")}


def test_no_import_cycle_inside_agent_platform() -> None:
    root = REPO / "agent_platform"
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in _imports(path, package, set(modules)) if m in modules and m != name}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_agent_app_names_the_missing_attribute() -> None:
    with pytest.raises(ConfigurationError, match="nope"):
        load_agents("tests.agents:nope")
    with pytest.raises(ConfigurationError, match="cannot import 'tests.no_such_module'"):
        load_agents("tests.no_such_module:agent")
    assert [a.name for a in load_agents("tests.agents:travel_buddy")] == ["TravelBuddy"]
