"""The messages agents exchange, and their CloudEvents-shaped envelope (DESIGN section 5).

An envelope is the JSON form of a CloudEvents 1.0 event (https://cloudevents.io,
"JSON Event Format"): ``specversion``, ``id``, ``source``, ``type``, ``time``,
``datacontenttype`` and ``data``. ``type`` is the message class name
(``TriggerAction``, ``BroadcastMessage``, ``AgentTaskResponse``), as dapr-agents names
its message types; ``data`` is the message as JSON. ``id`` identifies the message for
deduplication: a message published twice with one id has its effect once.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BusError
from ..store.workflows import now_iso


class ReplyTo(BaseModel):
    """Where the answer to a :class:`TriggerAction` goes.

    Attributes:
        agent: the calling agent (its topic receives the :class:`AgentTaskResponse`).
        workflow_id: the caller's workflow, suspended until the answer arrives.
        event: the event that wakes it (``response.<stage>.<index>``).
    """

    agent: str
    workflow_id: str
    event: str


class TriggerAction(BaseModel):
    """Ask an agent to run one turn.

    Attributes:
        task: the user message of the turn.
        session_id: the agent's conversation session (default: its memory's).
        metadata: stored in the workflow's ``metadata``.
        reply_to: set when another agent waits for the answer.
    """

    model_config = ConfigDict(extra="ignore")

    task: str
    session_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    reply_to: ReplyTo | None = None


class BroadcastMessage(BaseModel):
    """A message for every agent (the broadcast topic); each stores it in its memory.

    Attributes:
        content: the text.
        sender: the agent (or person) that sent it; an agent ignores its own broadcasts.
        session_id: the session whose memory receives it (default: each agent's default).
    """

    model_config = ConfigDict(extra="ignore")

    content: str
    sender: str = "user"
    session_id: str | None = None


class AgentTaskResponse(BaseModel):
    """The end of a triggered turn, sent to the caller's topic.

    Attributes:
        workflow_id: the caller's workflow (to wake).
        event: the event name the caller waits for.
        agent: the agent that answers.
        source_workflow_id: the answering turn's workflow id.
        status: its final runtime status (COMPLETED, FAILED, TERMINATED).
        result: its output (None unless COMPLETED).
        error: why there is no result (a failed or terminated turn), else None.
    """

    model_config = ConfigDict(extra="ignore")

    workflow_id: str
    event: str
    agent: str
    source_workflow_id: str | None = None
    status: str = "COMPLETED"
    result: Any = None
    error: str | None = None

    def payload(self) -> dict[str, Any]:
        """The event payload the caller's waiting tool reads (``result``/``error``, ``agent``)."""
        body: dict[str, Any] = {
            "result": self.result,
            "agent": self.agent,
            "status": self.status,
            "workflow_id": self.source_workflow_id,
        }
        if self.error:
            body["error"] = self.error
        return body


MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    "TriggerAction": TriggerAction,
    "BroadcastMessage": BroadcastMessage,
    "AgentTaskResponse": AgentTaskResponse,
}


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in its JSON format (required attributes plus ``time`` and
    ``datacontenttype``; unknown extension attributes are kept)."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=512)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: str = Field(default_factory=now_iso)
    datacontenttype: str = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)

    def message(self) -> BaseModel:
        """The typed message in ``data``.

        Raises:
            BusError: ``type`` is not a known message type, or ``data`` does not fit it.
        """
        model = MESSAGE_TYPES.get(self.type)
        if model is None:
            raise BusError(f"unknown message type {self.type!r}; known: {', '.join(MESSAGE_TYPES)}")
        try:
            return model.model_validate(self.data)
        except ValueError as exc:
            raise BusError(f"invalid {self.type} message {self.id!r}: {exc}") from None


def envelope(message: BaseModel, source: str, message_id: str | None = None) -> CloudEvent:
    """Wrap ``message`` in a CloudEvent.

    Args:
        message: a TriggerAction, BroadcastMessage or AgentTaskResponse.
        source: who sends it (e.g. ``agent-platform/<agent>``).
        message_id: the deduplication id (default: a new UUID).
    """
    return CloudEvent(
        id=message_id or uuid.uuid4().hex,
        source=source,
        type=type(message).__name__,
        data=message.model_dump(mode="json"),
    )


def parse_envelope(raw: str | bytes) -> CloudEvent:
    """Read an envelope from its JSON text.

    Raises:
        BusError: not JSON, or not a CloudEvents 1.0 event.
    """
    try:
        return CloudEvent.model_validate(json.loads(raw))
    except ValueError as exc:
        raise BusError(f"not a CloudEvents 1.0 JSON envelope: {exc}"[:500]) from None
