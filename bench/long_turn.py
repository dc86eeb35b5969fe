"""Does a step cost more late in a long turn? ``python -m bench.long_turn``.

One turn of ``LongBot`` (``bench_bot`` allowed 1,000 model calls) in which the scripted
model calls the no-op tool ``N`` times, one call per round, before it answers
(``--rounds``, default 1, 10, 50 and 200): ``2N + 1`` work steps (``N + 1`` model calls and
``N`` tool calls) and the ``start`` and ``finish`` records. One ``celery -A tasks worker
-c 1`` per mode: agent-platform's default mode and, when the engine has them, local steps
(issue 17); and, as a reference without durability, the 3-task raw Celery chain looping
``llm -> tool -> llm`` with the conversation inside each message. Each size runs
``--repeat`` times (medians shown), every turn in a new session.

Figures (per work step = per model call or tool call):

- ``ms/step``: the turn's wall time (start call to the final record seen by the driver)
  / work steps. The model's request grows with the turn (it carries the whole
  conversation, as a prompt must), so part of any growth is the model's; the raw chain
  shows that part.
- ``late/early ms``: from the step log's ``finished_at`` times of the largest turn, the
  ms per round of its last 10 rounds / its first 10 (agent-platform only).
- ``bytes written/step``: ``INFO stats`` ``total_net_input_bytes`` delta over the turn
  (every byte every client sent Redis: checkpoints, broker messages with their
  arguments, task events, leases, the driver's reads' requests) / work steps.
- ``log bytes/record``: mean size of the stored step records (the JSON of each step-log
  stream entry), the part of a checkpoint that stays.
- ``log memory/step``: ``MEMORY USAGE`` of the turn's step log (``SAMPLES 0``: exact) /
  work steps: the Redis memory the turn's records keep.
- ``model ms/step (engine client)``: the model's share, estimated from direct
  calls of the driver, made as an ``llm`` step makes them: agent-platform's own
  ``OpenAIChatClient.chat(messages, tools, "auto")`` (the SDK's generic ``post``, the body
  as is), streamed (a no-op ``on_delta``: the engine passes a listener, so its calls
  stream by default), with the messages the engine sends at that point of the turn
  (``build_messages``: LongBot's system prompt, the task, the turn's assistant tool calls
  and tool results), with the conversation of 0 and of ``N`` rounds (a call's time grows
  about linearly with the conversation): their mean times ``N + 1`` calls, / work steps.
  ``ms/step less model`` is the rest: what the system adds per step. (Not the SDK's
  ``chat.completions.create``, whose typed-parameter transform costs ~0.4 ms per message:
  the engine never pays it, and it overstated the model's share of a long turn. The raw
  chain's own calls do go through ``create`` (``bench/turn.py``), so its rest includes
  that transform.)

Target (issue 15): at 200 rounds, ms/step and bytes written/step at most 1.2x those at 10.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_platform.engine.prompt import build_messages, tool_message
from agent_platform.llm.openai_client import OpenAIChatClient
from agent_platform.llm.reply import AssistantReply, ToolCall

from .agent import local_steps_support, long_bots
from .common import Bench, median, note, parse_args, print_header, print_table, ratio, run_raw_turn, start_and_wait
from .lanes import OURS, RAW, TASK, Lane, start_workers
from .model import task_with_rounds

TARGET = 1.2
TURN_TIMEOUT = 600  # seconds one turn may take (200 rounds on a busy machine take over a minute)
LATE = 10  # rounds compared at each end of the largest turn


@dataclass
class Size:
    """The measures of one system at one number of rounds."""

    rounds: int
    ms: list[float] = field(default_factory=list)
    written: list[float] = field(default_factory=list)
    record_bytes: list[float] = field(default_factory=list)
    log_memory: list[float] = field(default_factory=list)
    late_early: list[float] = field(default_factory=list)
    model_ms: float = float("nan")

    @property
    def net_ms(self) -> list[float]:
        return [ms - self.model_ms for ms in self.ms]

    @property
    def steps(self) -> int:
        return 2 * self.rounds + 1


def _written(client: Any) -> float:
    return float(client.info("stats")["total_net_input_bytes"])


def engine_messages(rounds: int) -> list[dict[str, Any]]:
    """The messages an ``llm`` step of LongBot sends after ``rounds`` tool rounds of a turn
    (in a new session) whose model asks for one more (the task says ``rounds + 1``)."""
    agent = long_bots[0]
    turn_messages: list[dict[str, Any]] = []
    for i in range(rounds):
        call = ToolCall(f"call_{i:018d}", "noop", "{}")  # as long as the engine's ids
        turn_messages += [AssistantReply("", [call]).to_message(), tool_message(call.id, "ok")]
    return build_messages(agent, [], task_with_rounds(TASK, rounds + 1), turn_messages)


def model_ms_per_step(rounds: int, calls: int = 5) -> float:
    """The model's share of a step in a turn of ``rounds`` rounds (see the module doc): the
    call made as the engine makes it, by its client, streamed."""
    llm = OpenAIChatClient(base_url=os.environ["OPENAI_BASE_URL"], api_key="not-needed")
    tools = long_bots[0].tool_schemas()

    def call_ms(size: int) -> float:
        messages = engine_messages(size)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            reply = llm.chat(messages, tools, "auto", on_delta=lambda delta: None)
            times.append(time.perf_counter() - t0)
            if not reply.tool_calls:  # the scripted model answers with a tool call here
                raise RuntimeError(f"the model did not call the tool after {size} rounds: {reply!r}")
        return median(times) * 1000

    try:
        return (call_ms(0) + call_ms(rounds)) / 2 * (rounds + 1) / (2 * rounds + 1)
    finally:
        llm.close()


def one_turn(bench: Bench, lane: Lane, rounds: int) -> dict[str, float]:
    """One turn of ``rounds`` tool rounds on ``lane``; its measures (see the module doc)."""
    task = task_with_rounds(TASK, rounds)
    before = _written(bench.client)
    out: dict[str, float] = {}
    if lane.ours:
        runtime = bench.platform().runtime
        session = f"l{uuid.uuid4().hex[:12]}"
        workflow_id, seconds = start_and_wait(runtime, lane.agent, session, task, timeout=TURN_TIMEOUT)
        store = runtime.store_for(lane.agent)
        entries = store.client.xrange(store.key(workflow_id, "steps"))
        out["record_bytes"] = sum(len(fields["r"]) for _, fields in entries) / max(1, len(entries))
        usage = store.client.memory_usage(store.key(workflow_id, "steps"), samples=0) or 0
        out["log_memory"] = usage / (2 * rounds + 1)
        out["late_early"] = _late_over_early(store.steps(workflow_id), rounds)
    else:
        from .raw_chain import get_app

        app = get_app(lane.events, lane.queue)
        seconds = run_raw_turn(app, bench.client, uuid.uuid4().hex, task, lane.tasks, timeout=TURN_TIMEOUT)
    steps = 2 * rounds + 1
    out.update(ms=seconds * 1000 / steps, written=(_written(bench.client) - before) / steps)
    return out


def _late_over_early(records: list[dict[str, Any]], rounds: int) -> float:
    """ms per round of the last :data:`LATE` rounds / the first's, from the ``llm`` records'
    ``finished_at`` (nan for a turn shorter than 2 x LATE rounds)."""
    if rounds < 2 * LATE:
        return float("nan")
    ends = [datetime.fromisoformat(r["finished_at"].replace("Z", "+00:00")) for r in records if r["kind"] == "llm"]
    if len(ends) < 2 * LATE + 1:
        return float("nan")
    early = (ends[LATE] - ends[0]).total_seconds()
    late = (ends[-1] - ends[-1 - LATE]).total_seconds()
    return late / early if early > 0 else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.long_turn", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, nargs="+", default=[1, 10, 50, 200], help="tool rounds (default 1 10 50 200)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="turns per size and system (default 2)")
    args = parse_args(parser, argv, quick={"repeat": 1})

    print_header("bench.long_turn: ms and bytes per step as a turn grows to 200 tool rounds")
    lanes = [Lane(OURS, base="LongBot"), Lane(OURS, local=True, base="LongBot"), Lane(RAW, tasks=3)]
    results: dict[Lane, list[Size]] = {lane: [Size(n) for n in args.rounds] for lane in lanes if lane.supported}
    with Bench("long", agent_app="bench.agent:long_bots") as bench:
        print(bench.describe())
        support = local_steps_support()
        print(f"local steps: {f'supported (by {support})' if support else 'not in this engine (n/a)'}")
        print()
        start_workers(bench, lanes)
        for lane in results:  # warm-up
            one_turn(bench, lane, 1)
        model = {rounds: model_ms_per_step(rounds) for rounds in args.rounds}
        for sizes in results.values():
            for size in sizes:
                size.model_ms = model[size.rounds]
        for _ in range(args.repeat):
            for index, rounds in enumerate(args.rounds):
                for lane, sizes in results.items():
                    measures = one_turn(bench, lane, rounds)
                    for name, value in measures.items():
                        getattr(sizes[index], name).append(value)
                note(f"{rounds} rounds done")
    _report(results, [lane for lane in lanes if not lane.supported], args.rounds)


def _report(results: dict[Lane, list[Size]], unsupported: list[Lane], rounds: list[int]) -> None:
    rows = []
    for lane, sizes in results.items():
        for s in sizes:
            rows.append(
                [lane.label, s.rounds, s.steps, len(s.ms), median(s.ms), s.model_ms, median(s.net_ms),
                 median(s.written), median(s.record_bytes) if s.record_bytes else "-",
                 median(s.log_memory) if s.log_memory else "-",
                 median(s.late_early) if s.late_early and s.late_early[0] == s.late_early[0] else "-"]
            )  # fmt: skip
    for lane in unsupported:
        rows.append([lane.label, "n/a", "", 0, "n/a", "", "", "n/a", "n/a", "n/a", "n/a"])
    print("medians per work step (a model call or a tool call); raw chain: no durability, for reference")
    print("model ms/step: direct calls made as an llm step makes them (OpenAIChatClient.chat, streamed, same messages)")
    headers = ["system", "tool rounds", "work steps", "turns", "ms/step"]
    headers += ["model ms/step (engine client)", "ms/step less model"]
    headers += ["bytes written/step", "log bytes/record", "log memory/step", f"late/early ms ({LATE} rounds)"]
    print_table(headers, rows)
    if 10 not in rounds or len(rounds) < 2:
        return
    top = max(rounds)
    print(f"targets (issue 15): at {top} rounds <= {TARGET}x the figure at 10 rounds")
    for lane, sizes in results.items():
        ten, big = sizes[rounds.index(10)], sizes[rounds.index(top)]
        for name, what in (("ms", "ms/step"), ("net_ms", "ms/step less model"), ("written", "bytes written/step")):
            late, early = median(getattr(big, name)), median(getattr(ten, name))
            verdict = (" -> met" if late <= TARGET * early else " -> NOT met") if lane.ours else " (reference)"
            print(f"  {lane.label}: {what} at {top} rounds / at 10: {ratio(late, early)}{verdict}")


if __name__ == "__main__":
    main()
