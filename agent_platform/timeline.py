"""A workflow's live timeline: its step records and its model's tokens, in the order they
happened, with ids to resume from (``GET /workflows/<id>/events``, ``agent-platform run``).

Event ids: a step's id is its ``seq`` (``"4"``); a token event's id is ``"<seq>:<entry>"``,
the seq of the step it follows and its token stream entry id (``"4:1718000000123-0"``).
Ids order every event of a workflow, so ``Last-Event-ID`` with either kind resumes with
nothing skipped and nothing sent twice: step ``n`` resumes after that step (with the
tokens that followed it), ``n:<entry>`` after that token. Token entries carry the seq of
the last step record when they were written (see :mod:`agent_platform.store.tokens`),
which puts them between the right steps; a token of a step whose record was already
sent is dropped (a late writer: the record holds the complete reply).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ValidationError
from .status import public_status
from .store.tokens import TokenChannel, TokenEntry
from .store.workflows import WorkflowStore

#: Token entries read per round trip; a full batch means there may be more.
READ_COUNT = 1000
_ID = re.compile(r"(-1|[0-9]{1,15})(?::([0-9]{1,20}-[0-9]{1,20}))?")


@dataclass(frozen=True)
class Position:
    """Where a client is: after step ``step`` and, when set, after token entry ``token``."""

    step: int = -1
    token: str | None = None

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read an event id (``"4"`` or ``"4:1718000000123-0"``).

        Raises:
            ValidationError: not an event id of this API.
        """
        match = _ID.fullmatch(text.strip())
        if not match:
            raise ValidationError(f"Last-Event-ID must be a step seq or <seq>:<token id>, got {text[:40]!r}")
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return str(self.step) if self.token is None else f"{self.step}:{self.token}"


@dataclass(frozen=True)
class TimelineEvent:
    """One event: ``kind`` is ``step``, ``token``, ``retry`` or ``status`` (the last one).

    Attributes:
        data: the step record, the token data (``seq``, ``attempt``, ``text``?,
            ``tool_calls``?, ``finish_reason``?), the retry (``seq``, ``attempt``), or the
            status of ``GET /workflows/<id>``.
        id: the event id (None for ``status``).
    """

    kind: str
    data: dict[str, Any]
    id: str | None


def follow_timeline(
    store: WorkflowStore,
    workflow_id: str,
    after: Position = Position(),
    tokens: bool = True,
    block_ms: int = 1000,
    channel: TokenChannel | None = None,
    timeout: float | None = None,
) -> Iterator[TimelineEvent | None]:
    """Yield the events after ``after`` as they happen, then the final ``status`` event.

    Yields None after each ``block_ms`` wait with nothing new (time for a keep-alive).

    Args:
        tokens: also yield ``token`` and ``retry`` events.
        channel: the token channel (default: one on ``store``).
        timeout: seconds to follow at most (None: until the workflow ends).

    Raises:
        WorkflowNotFound: the workflow does not exist (or was purged meanwhile).
        TimeoutError: ``timeout`` passed before the workflow ended.
        redis.RedisError: Redis stopped answering.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    channel = channel or TokenChannel(store)
    last_step, last_token = after.step, after.token or "0-0"
    pending: deque[TokenEntry] = deque()
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"workflow {workflow_id} did not end within {timeout} s")
        # Steps first, tokens second: a token written before step n is readable once step n is.
        records = store.steps(workflow_id, after=last_step)
        horizon = None
        if tokens:
            entries = channel.read(workflow_id, last_token, READ_COUNT)
            if entries:
                last_token = entries[-1].id
                pending.extend(entries)
            if len(entries) == READ_COUNT:
                horizon = entries[-1].after  # not every token is read: no step beyond them yet
        emitted = False
        for record in records:
            if horizon is not None and record["seq"] > horizon:
                break
            for event in _due(pending, record["seq"] - 1, last_step):
                yield event
            last_step = record["seq"]
            emitted = True
            yield TimelineEvent("step", record, str(last_step))
        for event in _due(pending, last_step, last_step):
            emitted = True
            yield event
        if emitted or horizon is not None:
            continue
        # The final status is checkpointed with the last record: once it is final and no
        # record is left, the timeline is complete.
        state = store.state(workflow_id)
        if state.finished and not store.steps(workflow_id, after=last_step, count=1):
            yield TimelineEvent("status", public_status(state), None)
            return
        if not channel.wait(workflow_id, last_step, last_token if tokens else None, block_ms):
            yield None


def _due(pending: deque[TokenEntry], upto: int, last_step: int) -> Iterator[TimelineEvent]:
    """Pop the token entries written before step ``upto + 1``; drop those of steps already sent."""
    while pending and pending[0].after <= upto:
        entry = pending.popleft()
        if entry.after >= last_step:
            kind = "token" if entry.type == "delta" else entry.type
            yield TimelineEvent(kind, entry.event_data(), f"{entry.after}:{entry.id}")


def print_live(
    store: WorkflowStore,
    workflow_id: str,
    after: int = -1,
    tokens: bool = True,
    timeout: float | None = None,
    live: TextIO | None = None,
) -> None:
    """Print a workflow's steps (stdout) and its model's text as it is written (``live``,
    default stdout) until the workflow ends: what ``agent-platform run``/``tail`` and the
    demo show. Raises what :func:`follow_timeline` raises."""
    show = LivePrinter(describe_step, sys.stdout, live)
    for event in follow_timeline(store, workflow_id, Position(after), tokens=tokens, timeout=timeout):
        if event is not None:
            show(event)


class LivePrinter:
    """Prints a timeline for people: one line per step on ``out``, and the model's text
    (and tool call arguments) on ``live`` as it is written, ended before the step that
    records it.

    Args:
        describe: one line for a step record (e.g. :func:`agent_platform.follow.describe_step`).
        out: where step lines go (default ``sys.stdout``).
        live: where the streamed text goes (default ``out``; the CLI uses stderr, so that
            stdout holds only the durable record).
    """

    def __init__(
        self, describe: Callable[[dict[str, Any]], str], out: TextIO | None = None, live: TextIO | None = None
    ) -> None:
        self.describe = describe
        self.out = out or sys.stdout
        self.live = live or self.out
        self._open = False  # a line of streamed text is open
        self._calls: set[tuple[int, int]] = set()

    def __call__(self, event: TimelineEvent) -> None:
        """Print one event (``status`` prints nothing: the caller reports the outcome)."""
        if event.kind == "token":
            self._token(event.data)
        elif event.kind == "retry":
            self._end_line()
            _write(self.live, "  (the model call is made again: the text above is void)\n")
        elif event.kind == "step":
            self._end_line()
            _write(self.out, self.describe(event.data) + "\n")

    def _token(self, data: dict[str, Any]) -> None:
        text = "" if self._open else "  > "
        self._open = True
        text += data.get("text") or ""
        for call in data.get("tool_calls") or []:
            key = (data["seq"], call["index"])
            if key not in self._calls and call.get("name"):
                self._calls.add(key)
                text += f"{call['name']} "
            text += call.get("arguments") or ""
        _write(self.live, text.replace("\n", "\n    "))

    def _end_line(self) -> None:
        if self._open:
            _write(self.live, "\n")
            self._open = False


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def describe_step(record: dict[str, Any]) -> str:
    """One human line for a step record, e.g. ``[1] llm ok  search_flights({"destination": "Paris"})``."""
    data = record.get("data") or {}
    kind, status = record["kind"], record["status"]
    if kind == "llm":
        calls = data.get("tool_calls") or []
        summary = ", ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in calls)
        summary = summary or repr(_short(data.get("content") or ""))
    elif kind == "tool":
        outcome = f"error: {data['error']}" if "error" in data else json.dumps(data.get("result"))
        summary = f"{data.get('name')}({data.get('arguments')}) -> {_short(outcome, 300)}"
    elif kind == "finish":
        summary = repr(_short(data.get("output") or ""))
    elif kind == "start":
        summary = f"session={data.get('session_id')} history={data.get('history_len')}"
    else:
        summary = _short(json.dumps(data))
    if "error" in data and kind != "tool":
        summary = f"error: {data['error']}"
    head = f"[{record['seq']}] {kind:<6} {status:<5}"
    return f"{head} attempt={record.get('attempt', 1)} {record.get('duration_ms', 0):.0f}ms {summary}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
