"""The peers of ``bench.steps``: the same turn on DBOS Transact and on LangGraph.

Both run in the benchmark's process (that is how they are used: DBOS and LangGraph run a
workflow in the calling process, with durability in a database). Each step is what
:mod:`bench.turn` does, in two shapes: 5 durable steps (start, llm, tool, llm, finish:
the peers as issue 15 measured them) and 3 (llm, tool, llm: start and finish left to the
framework's own workflow records, as agent-platform folds them into its first and last
``llm`` task); the durable store is PostgreSQL (:data:`POSTGRES_URL`, database
``bench``, created if missing) or, when no PostgreSQL answers, each one's SQLite backend.
They need the ``[bench]`` extra: ``pip install -e '.[dev,bench]'``.
"""

from __future__ import annotations

import operator
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

from . import turn

#: The server and database the peers use (``BENCH_POSTGRES_URL`` overrides it).
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/bench")


@dataclass
class Peer:
    """One system under test: ``run(task)`` makes one turn; ``close()`` releases it;
    ``steps``: durable steps per turn of one tool round (5 or 3)."""

    name: str
    store: str
    run: Callable[[str], Any]
    close: Callable[[], None]
    steps: int = 5


def postgres_available(url: str = POSTGRES_URL) -> str | None:
    """Create the database of ``url`` if missing; return None when ready, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    base, _, dbname = url.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", connect_timeout=3, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{dbname}"')
    except Exception as exc:  # unreachable, refused, no rights: fall back to SQLite
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def postgres_durability(url: str = POSTGRES_URL) -> str:
    """``fsync`` and ``synchronous_commit`` of the server (what a commit waits for)."""
    import psycopg

    with psycopg.connect(url, connect_timeout=3) as conn:
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    return f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync}"


# -- DBOS -------------------------------------------------------------------------------


def dbos_peers(
    url: str | None, folder: Path, shapes: tuple[int, ...] = (5, 3)
) -> tuple[list[Peer], Callable[[], None]]:
    r"""DBOS Transact: the turn's steps as ``@DBOS.step``\ s inside one ``@DBOS.workflow``.

    Args:
        url: the PostgreSQL URL, or None for SQLite in ``folder``.
        shapes: 5 (start, llm, tool, llm, finish: five steps) and/or 3 (llm, tool, llm: the
            workflow's own start and end records stand for start and finish).

    Returns:
        One peer per shape, and the function that shuts DBOS down.
    """
    from dbos import DBOS

    database = url.replace("postgresql://", "postgresql+psycopg://", 1) if url else f"sqlite:///{folder}/dbos.sqlite"

    @DBOS.step()
    def start_step(task: str) -> list[dict[str, Any]]:
        return turn.first_messages(task)

    @DBOS.step()
    def llm_step(messages: list[dict[str, Any]]) -> dict[str, Any]:
        return turn.call_model(messages)

    @DBOS.step()
    def tool_step(call: dict[str, Any]) -> dict[str, Any]:
        return turn.run_tool(call)

    @DBOS.step()
    def finish_step(output: str) -> str:
        return output

    def tool_loop(messages: list[dict[str, Any]]) -> str:
        while True:
            reply = llm_step(messages)
            messages = [*messages, reply]
            if not reply.get("tool_calls"):
                return reply["content"]
            messages.extend(tool_step(call) for call in reply["tool_calls"])

    @DBOS.workflow()
    def bench_turn(task: str) -> str:
        return finish_step(tool_loop(start_step(task)))

    @DBOS.workflow()
    def bench_turn_folded(task: str) -> str:
        return tool_loop(turn.first_messages(task))

    DBOS(config={"name": "agent-platform-bench", "system_database_url": database, "log_level": "WARNING"})
    DBOS.launch()

    def close() -> None:
        DBOS.destroy(destroy_registry=True)

    name = f"DBOS Transact {_version('dbos')}"
    store = "PostgreSQL" if url else "SQLite (no PostgreSQL)"
    runs = {5: bench_turn, 3: bench_turn_folded}
    return [Peer(name, f"{store}, {SHAPE_LABEL[n]}", runs[n], lambda: None, n) for n in shapes], close


#: How each shape of a peer's turn is labelled in the tables.
SHAPE_LABEL = {5: "5 steps", 3: "3 steps"}


# -- LangGraph --------------------------------------------------------------------------


class TurnState(TypedDict, total=False):
    task: str
    messages: Annotated[list[dict[str, Any]], operator.add]
    output: str


def _graph(steps: int = 5) -> Any:
    """start -> llm -> (tool -> llm)* -> finish, one node per step (``steps`` 5); with
    ``steps`` 3, llm -> (tool -> llm)*, the first ``llm`` building the prompt from the task
    and the last one's answer being the output."""
    from langgraph.graph import END, START, StateGraph

    def start(state: TurnState) -> TurnState:
        return {"messages": turn.first_messages(state["task"])}

    def llm(state: TurnState) -> TurnState:
        messages = state.get("messages") or []
        if not messages:
            first = turn.first_messages(state["task"])
            reply = turn.call_model(first)
            update: TurnState = {"messages": [*first, reply]}
        else:
            reply = turn.call_model(messages)
            update = {"messages": [reply]}
        if not reply.get("tool_calls") and steps == 3:
            update["output"] = reply["content"]
        return update

    def tool(state: TurnState) -> TurnState:
        return {"messages": [turn.run_tool(call) for call in state["messages"][-1]["tool_calls"]]}

    def finish(state: TurnState) -> TurnState:
        return {"output": state["messages"][-1]["content"]}

    def route(state: TurnState) -> str:
        if state["messages"][-1].get("tool_calls"):
            return "tool"
        return "finish" if steps == 5 else END

    builder = StateGraph(TurnState)
    builder.add_node("llm", llm)
    builder.add_node("tool", tool)
    if steps == 5:
        builder.add_node("start", start)
        builder.add_node("finish", finish)
        builder.add_edge(START, "start")
        builder.add_edge("start", "llm")
        builder.add_conditional_edges("llm", route, ["tool", "finish"])
        builder.add_edge("finish", END)
    else:
        builder.add_edge(START, "llm")
        builder.add_conditional_edges("llm", route, ["tool", END])
    builder.add_edge("tool", "llm")
    return builder


def langgraph_peers(
    url: str | None, folder: Path, durabilities: tuple[str, ...] = ("sync", "async"), shapes: tuple[int, ...] = (5, 3)
) -> tuple[list[Peer], Callable[[], None]]:
    """LangGraph with a Postgres checkpointer (``langgraph-checkpoint-postgres``), or its
    SQLite one; one thread per turn; a peer per durability and shape.

    Args:
        durabilities: ``sync`` (each step's checkpoint is written before the next step
            starts, as agent-platform does) and/or ``async`` (LangGraph's default: written
            while the next step runs).
        shapes: 5 (a node per record: start, llm, tool, llm, finish) and/or 3 (llm, tool,
            llm; LangGraph's own input and final checkpoints stand for start and finish).
    """
    if url:
        from langgraph.checkpoint.postgres import PostgresSaver

        manager: Any = PostgresSaver.from_conn_string(url)
    else:
        from langgraph.checkpoint.sqlite import SqliteSaver

        manager = SqliteSaver.from_conn_string(str(folder / "langgraph.sqlite"))
    saver = manager.__enter__()
    saver.setup()
    peers = []
    for steps in shapes:
        graph = _graph(steps).compile(checkpointer=saver)
        for durability in durabilities:

            def run(task: str, graph: Any = graph, durability: str = durability) -> str:
                config = {"configurable": {"thread_id": uuid.uuid4().hex}}
                return graph.invoke({"task": task}, config, durability=durability)["output"]

            store = ("PostgreSQL" if url else "SQLite (no PostgreSQL)") + f", durability={durability}"
            peers.append(
                Peer(f"LangGraph {_version('langgraph')}", f"{store}, {SHAPE_LABEL[steps]}", run, lambda: None, steps)
            )

    def close() -> None:
        manager.__exit__(None, None, None)

    return peers, close


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
