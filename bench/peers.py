"""The peers of ``bench.steps``: the same turn on DBOS Transact and on LangGraph.

Both run in the benchmark's process (that is how they are used: DBOS and LangGraph run a
workflow in the calling process, with durability in a database). Each step is what
:mod:`bench.turn` does; the durable store is PostgreSQL (:data:`POSTGRES_URL`, database
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
    """One system under test: ``run(task)`` makes one turn; ``close()`` releases it."""

    name: str
    store: str
    run: Callable[[str], Any]
    close: Callable[[], None]


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


def dbos_peer(url: str | None, folder: Path) -> Peer:
    """DBOS Transact: ``@DBOS.step`` start, llm, tool, llm, finish inside one ``@DBOS.workflow``.

    Args:
        url: the PostgreSQL URL, or None for SQLite in ``folder``.
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

    @DBOS.workflow()
    def bench_turn(task: str) -> str:
        messages = start_step(task)
        while True:
            reply = llm_step(messages)
            messages = [*messages, reply]
            if not reply.get("tool_calls"):
                return finish_step(reply["content"])
            messages.extend(tool_step(call) for call in reply["tool_calls"])

    DBOS(config={"name": "agent-platform-bench", "system_database_url": database, "log_level": "WARNING"})
    DBOS.launch()

    def close() -> None:
        DBOS.destroy(destroy_registry=True)

    version = _version("dbos")
    return Peer(f"DBOS Transact {version}", "PostgreSQL" if url else "SQLite (no PostgreSQL)", bench_turn, close)


# -- LangGraph --------------------------------------------------------------------------


class TurnState(TypedDict, total=False):
    task: str
    messages: Annotated[list[dict[str, Any]], operator.add]
    output: str


def _graph() -> Any:
    """start -> llm -> (tool -> llm)* -> finish, one node per step."""
    from langgraph.graph import END, START, StateGraph

    def start(state: TurnState) -> TurnState:
        return {"messages": turn.first_messages(state["task"])}

    def llm(state: TurnState) -> TurnState:
        return {"messages": [turn.call_model(state["messages"])]}

    def tool(state: TurnState) -> TurnState:
        return {"messages": [turn.run_tool(call) for call in state["messages"][-1]["tool_calls"]]}

    def finish(state: TurnState) -> TurnState:
        return {"output": state["messages"][-1]["content"]}

    def route(state: TurnState) -> str:
        return "tool" if state["messages"][-1].get("tool_calls") else "finish"

    builder = StateGraph(TurnState)
    for name, fn in (("start", start), ("llm", llm), ("tool", tool), ("finish", finish)):
        builder.add_node(name, fn)
    builder.add_edge(START, "start")
    builder.add_edge("start", "llm")
    builder.add_conditional_edges("llm", route, ["tool", "finish"])
    builder.add_edge("tool", "llm")
    builder.add_edge("finish", END)
    return builder


def langgraph_peer(url: str | None, folder: Path, durability: str = "sync") -> Peer:
    """LangGraph with a Postgres checkpointer (``langgraph-checkpoint-postgres``), or its
    SQLite one; one thread per turn.

    Args:
        durability: ``sync`` (each step's checkpoint is written before the next step
            starts, as agent-platform does) or ``async`` (LangGraph's default: written
            while the next step runs).
    """
    if url:
        from langgraph.checkpoint.postgres import PostgresSaver

        manager: Any = PostgresSaver.from_conn_string(url)
    else:
        from langgraph.checkpoint.sqlite import SqliteSaver

        manager = SqliteSaver.from_conn_string(str(folder / "langgraph.sqlite"))
    saver = manager.__enter__()
    saver.setup()
    graph = _graph().compile(checkpointer=saver)

    def run(task: str) -> str:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        return graph.invoke({"task": task}, config, durability=durability)["output"]

    def close() -> None:
        manager.__exit__(None, None, None)

    store = ("PostgreSQL" if url else "SQLite (no PostgreSQL)") + f", durability={durability}"
    return Peer(f"LangGraph {_version('langgraph')}", store, run, close)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
