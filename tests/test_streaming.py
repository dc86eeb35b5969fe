"""Live tokens while every step stays durable (issue 14, DESIGN section 3 rule 12), with
real Celery workers, the web app over real HTTP and the scripted model streaming.

- a client of ``GET /workflows/<id>/events`` sees ``token`` events, live, before the
  step that records the reply, and their text is the turn's output;
- ``Last-Event-ID`` of a token event resumes without gap or duplicate; ``?tokens=0``;
- a worker SIGKILLed mid-stream: the retried step's tokens follow an ``event: retry``,
  and the output is whole and once in memory;
- streamed tool call fragments reassemble to the arguments of the unstreamed path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent_platform.testing import ScriptedModel, StreamStyle, streamed, text, tool_call, tool_calls

from .helpers import Api, Platform, chain_problems
from .ops_helpers import SseEvent, SseStream

PLATFORM_ENV = {
    "AGENT_PLATFORM_LEASE_TTL": "3",
    "AGENT_PLATFORM_SWEEP_INTERVAL": "0.5",
    "AGENT_PLATFORM_DISPATCH_GRACE": "5",
    "AGENT_PLATFORM_LLM_BACKOFF": "0.05",
}
QUESTION = "I want to find flights to Paris"
ANSWER = (
    "SkyHighAir flies to Paris on Monday at 09:40 for $450.00, and GlobalWings on Tuesday at 14:05 "
    "for $375.50. GlobalWings is the cheaper one; both include a checked bag. Shall I book one?"
)
TOKEN_KINDS = {"token", "retry"}


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a held stream (and a worker) waiting on a failed test


def _read_until(stream: SseStream, predicate: Any) -> list[SseEvent]:
    events = []
    while (event := stream.next_event()) is not None:
        events.append(event)
        if predicate(event):
            return events
    raise AssertionError(f"the stream ended first: {[e.event for e in events]}")


def _text(events: list[SseEvent]) -> str:
    return "".join(e.data.get("text", "") for e in events if e.event == "token")


def _received(call: dict[str, Any]) -> str:
    """A recorded tool call's arguments as the model sent them (what its tokens spell)."""
    return call.get("raw_arguments", call["function"]["arguments"])


def _final_llm_index(events: list[SseEvent]) -> int:
    return next(i for i, e in enumerate(events) if e.event == "step" and e.data["kind"] == "llm" and
                e.data["status"] == "ok" and not e.data["data"]["tool_calls"])  # fmt: skip


def test_tokens_arrive_live_before_the_record_and_make_the_output(
    api: Api, model: ScriptedModel, gate: threading.Event
) -> None:
    check_tokens_arrive_live(api, model, gate)


def check_tokens_arrive_live(api: Api, model: ScriptedModel, gate: threading.Event, **start: Any) -> None:
    """A turn of TravelBuddy (``start``: more fields of its start, e.g. ``agent``) whose
    model holds its answer half written: the tokens written so far arrive before the
    step's record (the publisher's ticks flush them), and all of them make the output."""
    model.add(
        tool_call("search_flights", {"destination": "Paris"}),
        streamed(text(ANSWER), chunk_chars=3, interval=0.005, hold=gate, hold_after=6),
    )
    wf = api.start_turn(QUESTION, session_id="stream-live", **start)

    with SseStream(api.http, f"/workflows/{wf}/events") as stream:
        seen = _read_until(stream, lambda e: e.event == "token" and e.data.get("text"))
        # the answer is half written (the model holds it): tokens are live, no llm record yet
        assert [s["kind"] for s in api.steps(wf)] == ["start", "llm", "tool"]
        assert ANSWER.startswith(_text(seen)) and _text(seen) != ANSWER
        gate.set()
        events = seen + stream.read_to_end()

    status = events[-1].data
    assert events[-1].event == "status" and status["runtime_status"] == "COMPLETED"
    final = _final_llm_index(events)
    answer_tokens = [e for e in events[:final] if e.event == "token" and e.data["seq"] == events[final].data["seq"]]
    assert _text(answer_tokens) == ANSWER == status["output"] == events[final].data["data"]["content"]
    assert 1 < len(answer_tokens) < len(ANSWER) // 3  # batched, not one event per chunk
    assert not [e for e in events[final:] if e.event in TOKEN_KINDS]
    # each token event says its step and attempt; its id orders it after the step before it
    for i, event in enumerate(events[:-1]):
        if event.event == "token":
            previous = next(e for e in reversed(events[:i]) if e.event == "step")
            assert str(event.id).startswith(f"{previous.data['seq']}:") and event.data["attempt"] == 1
    # the first llm step streamed its tool call: the fragments are its arguments
    first_llm = next(e for e in events if e.event == "step" and e.data["kind"] == "llm")
    fragments = [c for e in events if e.event == "token" and e.data["seq"] == first_llm.data["seq"]
                 for c in e.data.get("tool_calls", [])]  # fmt: skip
    assert "".join(c["arguments"] for c in fragments) == _received(first_llm.data["data"]["tool_calls"][0])
    # the checkpoint is the step log alone: exactly the records, no token in it
    steps = [e.data for e in events if e.event == "step"]
    assert steps == api.steps(wf) and chain_problems(steps) == []
    assert [s["kind"] for s in steps] == ["start", "llm", "tool", "llm", "finish"]


def test_resume_from_a_token_event_and_steps_only(api: Api, model: ScriptedModel, gate: threading.Event) -> None:
    model.add(
        tool_call("search_flights", {"destination": "Paris"}),
        streamed(text(ANSWER), chunk_chars=5, hold=gate, hold_after=8),
    )
    wf = api.start_turn(QUESTION, session_id="stream-resume")
    url = f"/workflows/{wf}/events"

    with SseStream(api.http, url) as stream:
        first = _read_until(stream, lambda e: e.event == "token" and e.data.get("text"))
    gate.set()
    with SseStream(api.http, url, headers={"Last-Event-ID": str(first[-1].id)}) as stream:
        rest = stream.read_to_end()
    with SseStream(api.http, url) as stream:
        everything = stream.read_to_end()

    assert [e.id for e in first + rest] == [e.id for e in everything]
    assert _text(first + rest) == _text(everything)
    assert ANSWER in _text(everything)
    with SseStream(api.http, f"{url}?tokens=0") as stream:
        steps_only = stream.read_to_end()
    assert [e.event for e in steps_only] == ["step"] * 5 + ["status"]
    with SseStream(api.http, f"{url}?last_event_id={first[-1].id}") as stream:
        assert [e.id for e in stream.read_to_end()] == [e.id for e in rest]


def test_worker_sigkilled_mid_stream_retries_after_a_retry_event(
    api: Api, model: ScriptedModel, platform: Platform, gate: threading.Event
) -> None:
    # The first attempt writes part of the answer, then the model holds it until after the kill.
    model.add(streamed(text(ANSWER), chunk_chars=4, hold=gate, hold_after=10), streamed(text(ANSWER), chunk_chars=4))
    wf = api.start_turn("Just answer, no tool", session_id="stream-kill")

    with SseStream(api.http, f"/workflows/{wf}/events", read_timeout=60) as stream:
        before = _read_until(stream, lambda e: e.event == "token" and len(_text([e])) > 0)
        (worker,) = [w for w in platform.stack.workers if w.alive()]
        platform.stack.kill_worker(worker)
        gate.set()
        platform.stack.start_worker()
        after = stream.read_to_end()

    events = before + after
    status = events[-1].data
    assert status["runtime_status"] == "COMPLETED" and status["output"] == ANSWER
    retry = next(i for i, e in enumerate(events) if e.event == "retry")
    partial, again = _text(events[:retry]), _text(events[retry:])
    assert partial and ANSWER.startswith(partial) and partial != ANSWER  # cut off mid-answer
    assert again == ANSWER  # the retried step's tokens, after the retry event: the whole answer
    final = _final_llm_index(events)
    assert retry < final and events[final].data["data"]["content"] == ANSWER
    assert model.calls == 2
    # whole and once in memory
    assert [{k: m[k] for k in ("role", "content")} for m in platform.history("stream-kill")] == [
        {"role": "user", "content": "Just answer, no tool"},
        {"role": "assistant", "content": ANSWER},
    ]
    steps = api.steps(wf)
    assert chain_problems(steps) == [] and [s["kind"] for s in steps if s["status"] == "ok"] == [
        "start",
        "llm",
        "finish",
    ]


QUIRKY = StreamStyle(chunk_chars=2, omit_index=True, omit_id=True, finish_reason="stop", null_content=True,
                     usage="finish")  # fmt: skip


@pytest.mark.parametrize("style", [QUIRKY, StreamStyle(tool_calls_in_one_chunk=True, usage="last")],
                         ids=["split-no-index-no-id", "one-chunk"])  # fmt: skip
def test_streamed_tool_call_fragments_reassemble_to_the_unstreamed_arguments(
    api: Api, model: ScriptedModel, style: StreamStyle
) -> None:
    calls = tool_calls(("search_flights", {"destination": "Paris"}), ("search_flights", {"destination": "Rome"}))
    records = {}
    for mode, reply in [("unstreamed", streamed(calls, ignore_stream=True)), ("streamed", streamed(calls, style))]:
        model.reset()
        model.add(reply, text(ANSWER))
        wf = api.start_turn(QUESTION, session_id=f"quirk-{mode}")
        with SseStream(api.http, f"/workflows/{wf}/events") as stream:
            events = stream.read_to_end()
        assert events[-1].data["runtime_status"] == "COMPLETED", events[-1].data
        llm = next(e for e in events if e.event == "step" and e.data["kind"] == "llm")
        records[mode] = llm.data["data"]
        rebuilt: dict[int, str] = {}
        for event in events:
            if event.event == "token" and event.data["seq"] == llm.data["seq"]:
                for fragment in event.data.get("tool_calls", []):
                    rebuilt[fragment["index"]] = rebuilt.get(fragment["index"], "") + fragment["arguments"]
        assert list(rebuilt.values()) == [_received(c) for c in records[mode]["tool_calls"]]
        assert model.requests[0].get("stream") is True

    def without_ids(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "tool_calls": [c["function"] for c in data["tool_calls"]]}

    assert without_ids(records["streamed"]) == without_ids(records["unstreamed"])
    assert records["streamed"]["finish_reason"] == "tool_calls"


def test_cli_run_and_tail_print_the_answer_as_it_is_written(api: Api, model: ScriptedModel) -> None:
    from .test_cli import APP, _cli

    model.add(tool_call("search_flights", {"destination": "Paris"}), streamed(text(ANSWER), chunk_chars=3))

    run = _cli("run", APP, "--task", QUESTION, "--session", "stream-cli")

    assert run.returncode == 0, run.stderr
    # stdout: the durable record (steps, answer); stderr: the text as it was written
    assert [line.split()[1] for line in run.stdout.splitlines()[:5]] == ["start", "llm", "tool", "llm", "finish"]
    live = [line for line in run.stderr.splitlines() if line.startswith("  > ")]
    assert "".join(line[4:] for line in live) == 'search_flights {"destination": "Paris"}' + ANSWER
    wf = run.stderr.split("workflow ", 1)[1].split()[0]
    tail = _cli("tail", wf, "--app", APP)
    assert tail.stdout == run.stdout and [line for line in tail.stderr.splitlines() if line.startswith("  > ")] == live
    quiet = _cli("tail", wf, "--app", APP, "--no-tokens")
    assert quiet.stdout == run.stdout and "  > " not in quiet.stderr
