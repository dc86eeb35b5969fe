"""Every Redis key and Celery queue name of agent-platform, built in one place (as rq's
``keys.py``): a key written twice would one day differ (a purge that misses a key, a
script that crosses a hash slot).

Keys of one workflow share the Redis Cluster hash tag ``{<workflow_id>}`` (DESIGN
section 3, rule 10), so every Lua script, which touches only keys of one workflow, runs
on a cluster::

    <base>:{<id>}:meta          hash: the status and the engine's fields (WorkflowState)
    <base>:{<id>}:steps         stream: the step log, entry id 0-<seq+1>
    <base>:{<id>}:done          hash: tool calls already checkpointed (<step_seq>:<index>)
    <base>:{<id>}:runs          hash: the run in progress of each step (lost-run detection)
    <base>:{<id>}:messages      list: the turn's chat messages after the user's message
    <base>:{<id>}:tokens        stream: the model's deltas for live clients (TTL)
    <base>:{<id>}:tokens:run    string: the model call that may publish tokens
    <base>:{<id>}:lease:<step_seq>:<index>   string with a TTL: a step's lease
    <base>:{<id>}:callback, :bus-response    markers: a finish hook ran once

with ``<base> = <component keyPrefix><state_key>``. Outside any one workflow:
``<base>:index`` (zset by creation time, in microseconds), ``<base>:active`` (zset of unfinished
workflows by when the sweeper should look), ``<base>:sweeper-lock``,
``<base>:session:{<agent>:<session>}`` and ``<base>:idem:<agent>:<sha256>``.
"""

from __future__ import annotations

import hashlib

from .ids import validate_id

#: Parts of a workflow deleted by a purge (leases are found by pattern: they have TTLs).
WORKFLOW_PARTS = ("meta", "steps", "done", "runs", "messages", "tokens", "tokens:run", "callback", "bus-response")


def queue_name(agent: str) -> str:
    """The Celery queue of an agent's steps: ``agent.<name>``."""
    return f"agent.{agent}"


class WorkflowKeys:
    """Keys of the workflows of one ``state.redis`` component and ``state_key``.

    Args:
        prefix: the component's key prefix ("" for none).
        state_key: the agent's ``state_key``.
    """

    def __init__(self, prefix: str = "", state_key: str = "workflow_state") -> None:
        self.base = f"{prefix}{state_key}"

    def part(self, workflow_id: str, part: str) -> str:
        """Key ``part`` of a workflow (one of :data:`WORKFLOW_PARTS`); the id is validated."""
        validate_id(workflow_id, "workflow id")
        return f"{self.base}:{{{workflow_id}}}:{part}"

    def lease(self, workflow_id: str, step_seq: int, call_index: int | None) -> str:
        """The lease of one step (``call_index`` for a tool call of a parallel group)."""
        return self.part(workflow_id, f"lease:{step_seq}:{'' if call_index is None else call_index}")

    def lease_pattern(self, workflow_id: str) -> str:
        """A SCAN pattern matching every lease of a workflow."""
        return self.part(workflow_id, "lease:*")

    @property
    def index(self) -> str:
        """Zset of all workflows, scored by creation time (ms)."""
        return f"{self.base}:index"

    @property
    def active(self) -> str:
        """Zset of unfinished workflows, scored by when the sweeper should look (ms)."""
        return f"{self.base}:active"

    @property
    def sweeper_lock(self) -> str:
        """A short lock: one worker sweeps this store per interval."""
        return f"{self.base}:sweeper-lock"

    def fault_fired(self, fault: str) -> str:
        """Crash tests: set once the fault injection ``fault`` fired (AGENT_PLATFORM_FAULT)."""
        return f"{self.base}:fault-fired:{fault}"

    def session(self, agent: str, session_id: str) -> str:
        """List of a session's unfinished turns in start order."""
        validate_id(session_id, "session_id")
        return f"{self.base}:session:{{{agent}:{session_id}}}"

    def idempotency(self, agent: str, idempotency_key: str) -> str:
        """The record of an ``Idempotency-Key`` (the key is hashed: any text is safe)."""
        return f"{self.base}:idem:{agent}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def conversation(prefix: str, agent: str, session_id: str) -> str:
    """The memory list of a session: ``<prefix>conversation:{<agent>:<session>}``."""
    validate_id(session_id, "session_id")
    return f"{prefix}conversation:{{{agent}:{session_id}}}"


def conversation_writers(prefix: str, agent: str, session_id: str) -> str:
    """The set of workflow ids that appended to a session (same hash tag as its list)."""
    return conversation(prefix, agent, session_id) + ":writers"


def registry(prefix: str, registry_key: str) -> str:
    """The agent registry hash: ``<prefix><agents_registry_key>``."""
    return f"{prefix}{registry_key}"


def topic(prefix: str, name: str) -> str:
    """The Redis Stream of a bus topic: ``<prefix>topic:<name>``."""
    return f"{prefix}topic:{name}"


def bus_fault_fired(prefix: str) -> str:
    """Crash tests: set once the bus's fault injection fired (``bus_exit_before_ack``)."""
    return f"{prefix}bus:fault-fired"


def bus_seen(prefix: str, agent: str, message_id: str) -> str:
    """The dedup record of a bus message for an agent: ``<prefix>bus:seen:<agent>:<id>``."""
    return f"{prefix}bus:seen:{agent}:{message_id}"
