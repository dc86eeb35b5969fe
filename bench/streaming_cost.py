"""Cost of streaming an ``llm`` step's model call: ``python -m bench.streaming_cost``
(``python -m bench.steps`` prints it too, after its own table).

The model call as an ``llm`` step makes it (``OpenAIChatClient.chat`` through the
``openai`` SDK), unstreamed and streamed: a streamed call (``stream=True``) hands its
deltas to a :class:`~agent_platform.engine.tokens.TokenPublisher`, which writes them,
batched, to the workflow's token stream on a private Redis (AOF everysec, as dev mode),
exactly as the step does. The model is the scripted one, in its own process, with zero
latency, streaming the way servers do (about one token, 4 characters, per chunk). Two
replies: the benchmark agent's tool call, and a 600-character answer. Calls alternate
(unstreamed, streamed) so that a change of load hits both alike.

Figures: median wall ms per call, ``ratio`` (streamed / unstreamed), the ms streaming
adds to an ``llm`` step, the CPU ms of the calling process (the worker's share, without
the model's), and the token stream entries one call writes. With a zero-latency
model this is the worst case: a real model spends hundreds of ms per reply, which the
few added ms do not change.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.engine.tokens import TokenPublisher
from agent_platform.llm.openai_client import OpenAIChatClient
from agent_platform.store.tokens import TokenChannel
from agent_platform.store.workflows import WorkflowStore

from .common import median, note, print_table, ratio

ANSWER = (
    "SkyHighAir flies to Paris on Monday at 09:40 for $450.00; GlobalWings on Tuesday at 14:05 for $375.50. " * 6
)[:600]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_flights",
            "description": "Search for flights to the specified destination.",
            "parameters": {"type": "object", "properties": {"destination": {"type": "string"}}},
        },
    }
]


def _respond(body: dict[str, Any]) -> Any:
    from agent_platform.testing import text, tool_call

    if body["messages"][-1]["content"] == "call":
        return tool_call("search_flights", {"destination": "Paris"})
    return text(ANSWER)


def _serve(conn: Any) -> None:
    """The scripted model in a process of its own (no GIL shared with the client)."""
    from agent_platform.testing import ScriptedModel

    with ScriptedModel(default=_respond) as model:
        conn.send(model.base_url)
        conn.recv()  # until the parent says stop


def measure(calls: int = 150, warmup: int = 20) -> list[list[Any]]:
    """Time ``calls`` unstreamed and streamed calls per reply; return the table's rows."""
    folder = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    server = EmbeddedRedis(data_dir=folder / "redis", appendonly=True).start()
    parent, child = multiprocessing.get_context("fork").Pipe()
    model = multiprocessing.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
    model.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        base_url = parent.recv()
        store = WorkflowStore(client, "bench:", "workflow_state")
        workflow_id, _ = store.create(uuid.uuid4().hex, "BenchBot", "s", "bench")
        channel = TokenChannel(store)
        llm = OpenAIChatClient(model="scripted-model", base_url=base_url, api_key="x", timeout=30.0, stream="on")
        rows = []
        for label, content in [("tool call (24 chars of arguments)", "call"), ("answer (600 chars)", "answer")]:
            messages = [
                {"role": "system", "content": "You are a travel planner."},
                {"role": "user", "content": content},
            ]
            plain: list[tuple[float, float]] = []
            streamed: list[tuple[float, float]] = []
            entries_before = client.xlen(channel.key(workflow_id))
            for n in range(warmup + calls):
                t0, c0 = time.perf_counter(), time.process_time()
                llm.chat(messages, TOOLS)
                t1, c1 = time.perf_counter(), time.process_time()
                publisher = TokenPublisher(channel, workflow_id, stage=n, attempt=1)
                llm.chat(messages, TOOLS, on_delta=publisher)
                publisher.close()
                t2, c2 = time.perf_counter(), time.process_time()
                if n >= warmup:
                    plain.append((t1 - t0, c1 - c0))
                    streamed.append((t2 - t1, c2 - c1))
                if n == warmup - 1:
                    entries_before = client.xlen(channel.key(workflow_id))
            entries = (client.xlen(channel.key(workflow_id)) - entries_before) / calls
            off, on = (median([w for w, _ in times]) * 1000 for times in (plain, streamed))
            cpu_off, cpu_on = (median([c for _, c in times]) * 1000 for times in (plain, streamed))
            rows.append([label, calls, off, on, ratio(on, off), on - off, cpu_off, cpu_on, entries])
            note(f"streaming cost: {label} done")
        return rows
    finally:
        parent.send("stop")
        model.join(5)
        if model.is_alive():
            model.kill()
        client.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def report(calls: int = 150, warmup: int = 20) -> None:
    """Measure and print the streaming cost table (what ``bench.steps`` calls)."""
    rows = measure(calls, warmup)
    print("streaming cost per llm step: the model call unstreamed vs streamed and published (token channel)")
    headers = ["reply", "calls", "unstreamed ms", "streamed ms", "ratio", "added ms/step"]
    print_table(headers + ["worker CPU ms off", "on", "entries/step"], rows)
    print("note: wall ms include the scripted model's own work (another process: it writes one SSE event per")
    print("      4 characters); worker CPU ms are what the llm step's process spends (SDK, SSE parsing, batching,")
    print("      token stream writes). With a real model the call takes hundreds of ms and the added ms stay the same.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150, help="measured calls per reply and mode (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up calls per reply and mode (default 20)")
    args = parser.parse_args(argv)
    report(args.calls, args.warmup)


if __name__ == "__main__":
    main()
