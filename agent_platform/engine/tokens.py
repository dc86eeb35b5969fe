"""An ``llm`` step's model call, streamed to the token side channel (DESIGN section 3, rule 12).

The step's record is the reply the client returns, the same as without streaming; the
deltas go, batched, to :class:`~agent_platform.store.tokens.TokenChannel` for live
clients (``GET /workflows/<id>/events``, ``agent-platform run``/``tail``). The side
channel never fails a step: a Redis error while publishing stops the publishing only.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis

from ..llm.reply import AssistantReply
from ..store.plans import ScriptCall
from ..store.tokens import TokenChannel

if TYPE_CHECKING:
    from .context import StepContext

log = logging.getLogger("agent_platform.engine")

#: A batch goes out once it holds this many characters...
BATCH_CHARS = 64
#: ...or this many seconds after the previous one (and at the end of the call).
BATCH_SECONDS = 0.1


class TokenPublisher:
    """Batches a model call's deltas onto the token channel: a ``DeltaSink``.

    Deltas (see :mod:`agent_platform.llm.streaming`) are merged into one entry
    ``{"text", "tool_calls": [{"index", "id"?, "name"?, "arguments"}], "finish_reason"}``
    (empty parts left out) that is written when it holds ``max_chars`` characters, or
    ``interval`` seconds after the last write (the call's start, for the first). A model
    that takes longer than ``interval`` to its first token (any real one: hundreds of ms)
    has that token written at once; a call that ends sooner leaves everything in one last
    batch, which :meth:`close_pending` hands to the step's checkpoint to write in its own
    round trip: a fast call costs no round trip for its tokens.

    Args:
        channel: where to publish.
        workflow_id, stage, attempt: the step.
        max_chars: characters (text and arguments) that trigger a write.
        interval: seconds between writes at most while deltas are pending.
    """

    def __init__(
        self,
        channel: TokenChannel,
        workflow_id: str,
        stage: int,
        attempt: int,
        max_chars: int = BATCH_CHARS,
        interval: float = BATCH_SECONDS,
    ) -> None:
        self.channel = channel
        self.workflow_id = workflow_id
        self.stage = stage
        self.attempt = attempt
        self.max_chars = max_chars
        self.interval = interval
        self.run = uuid.uuid4().hex
        self.published = 0
        self.closed = False
        self._text: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self._finish: str | None = None
        self._chars = 0
        self._last_write = time.monotonic()  # the call's start

    def __call__(self, delta: dict[str, Any] | None) -> None:
        """Take one delta (None: nothing new, write a batch that is due)."""
        if self.closed:
            return
        if delta:
            self._add(delta)
        due = self._chars >= self.max_chars or time.monotonic() - self._last_write >= self.interval
        if self._pending() and due:
            self.flush()

    def _add(self, delta: dict[str, Any]) -> None:
        if delta.get("text"):
            self._text.append(delta["text"])
            self._chars += len(delta["text"])
        fragment = delta.get("tool_call")
        if fragment:
            last = self._calls[-1] if self._calls else None
            if last is not None and last["index"] == fragment["index"]:
                last.update({k: v for k, v in fragment.items() if k in ("id", "name") and v})
                last["arguments"] += fragment.get("arguments") or ""
            else:
                self._calls.append({**fragment, "arguments": fragment.get("arguments") or ""})
            self._chars += len(fragment.get("arguments") or "")
        if delta.get("finish_reason"):
            self._finish = delta["finish_reason"]

    def _pending(self) -> bool:
        return bool(self._text or self._calls or self._finish)

    def _take(self) -> dict[str, Any]:
        """The pending batch as an entry's delta; nothing is pending afterwards."""
        data: dict[str, Any] = {}
        if self._text:
            data["text"] = "".join(self._text)
        if self._calls:
            data["tool_calls"] = self._calls
        if self._finish:
            data["finish_reason"] = self._finish
        self._text, self._calls, self._finish, self._chars = [], [], None, 0
        self._last_write = time.monotonic()
        return data

    def flush(self) -> None:
        """Write the pending batch now (nothing when none is pending)."""
        if self.closed or not self._pending():
            return
        data = self._take()
        try:
            result = self.channel.publish(
                self.workflow_id, self.run, self.stage, self.attempt, data, first=not self.published
            )
        except redis.RedisError as exc:
            log.warning("token stream of %s stopped: %s: %s", self.workflow_id, type(exc).__name__, exc)
            result = 0
        if result == 1:
            self.published += 1
        else:  # a newer run of the step owns the channel, or the workflow is gone
            self.closed = True

    def close(self) -> None:
        """The call returned: write what is pending, then publish nothing more."""
        self.flush()
        self.closed = True

    def close_pending(self) -> ScriptCall | None:
        """The call returned: publish nothing more, and return the pending batch as a
        script call for the step's checkpoint to run just before its own script (one
        round trip for both); None when nothing is pending or the channel is not ours."""
        if self.closed or not self._pending():
            self.closed = True
            return None
        self.closed = True
        data = self._take()
        call = self.channel.batch(self.workflow_id, self.run, self.stage, self.attempt, data, first=not self.published)
        self.published += 1
        return call

    def abandon(self) -> None:
        """The call failed: its partial output is void (a ``retry`` entry if any was published)."""
        was_closed, self.closed = self.closed, True
        if self.published and not was_closed:
            try:
                self.channel.abandon(self.workflow_id, self.run, self.stage, self.attempt)
            except redis.RedisError as exc:
                log.warning("token stream of %s: %s: %s", self.workflow_id, type(exc).__name__, exc)


def chat_streaming(
    ctx: StepContext,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    tool_choice: str | None,
    config: dict[str, Any] | None = None,
) -> AssistantReply:
    """``ctx.agent.llm.chat(...)``, with the deltas published while the model writes.

    ``config`` (the client's ``resolved()``, read once by the step) is passed to a client
    whose ``chat`` takes it. A client without an ``on_delta`` parameter (an orchestration
    policy, a user's own client) is called without streaming. Raises what the client raises.
    """
    llm = ctx.agent.llm
    options: dict[str, Any] = {"config": config} if config is not None and _takes(type(llm), "config") else {}
    if not _takes(type(llm), "on_delta"):
        return llm.chat(messages, tools, tool_choice, **options)
    settings = ctx.settings
    channel = TokenChannel(ctx.store, settings.token_stream_ttl, settings.token_stream_maxlen)
    publisher = TokenPublisher(channel, ctx.workflow_id, ctx.step_seq, ctx.attempt)
    try:
        reply = llm.chat(messages, tools, tool_choice, on_delta=publisher, **options)
    except BaseException:
        publisher.abandon()
        raise
    # the last batch rides with the step's checkpoint (runner._checkpoint)
    ctx.carry["token_batch"] = publisher.close_pending()
    return reply


#: Whether a client class's ``chat`` takes a keyword (inspected once per class and name).
_TAKES: dict[tuple[type, str], bool] = {}


def _takes(client_type: type, name: str) -> bool:
    if (client_type, name) not in _TAKES:
        chat = getattr(client_type, "chat", None)
        try:
            _TAKES[client_type, name] = chat is not None and name in inspect.signature(chat).parameters
        except (TypeError, ValueError):
            _TAKES[client_type, name] = False
    return _TAKES[client_type, name]
