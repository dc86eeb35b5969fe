"""Messages between agents over Redis Streams (DESIGN section 5).

- :mod:`.messages`: ``TriggerAction``, ``BroadcastMessage``, ``AgentTaskResponse`` and
  their CloudEvents-shaped envelope.
- :mod:`.streams`: topics as streams, one consumer group per subscribing agent.
- :mod:`.dedup`: message ids already handled, in Redis.
- :mod:`.consumer`: the ``agent-platform bus`` process.
- :mod:`.agent_tool`: call another agent from a workflow and wait for its answer.
- :mod:`.responses`: a triggered turn's answer goes back to its caller.
"""

from .agent_tool import AgentTool, call_agent_tool
from .messages import AgentTaskResponse, BroadcastMessage, CloudEvent, ReplyTo, TriggerAction, envelope
from .responses import install
from .streams import StreamBus, bus_for

__all__ = [
    "AgentTaskResponse",
    "AgentTool",
    "BroadcastMessage",
    "CloudEvent",
    "ReplyTo",
    "StreamBus",
    "TriggerAction",
    "bus_for",
    "call_agent_tool",
    "envelope",
    "install",
]
