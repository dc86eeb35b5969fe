"""Test your agents against a scripted OpenAI-compatible model over real HTTP.

:class:`ScriptedModel` serves ``POST /v1/chat/completions`` from a script of replies on
a free local port; point the platform (or any ``openai`` client, in any process) at
``model.base_url``. Build replies with :func:`text`, :func:`tool_call`,
:func:`tool_calls`, :func:`error`, :func:`delay`, :func:`raw` and :func:`trickle`;
``ScriptedModel(validate_history=True)`` rejects requests as a strict server does. A
request with ``"stream": true`` gets the replies as streamed chunks (:func:`streamed` and
:class:`StreamStyle` for the quirks of other servers).

Example::

    from agent_platform.testing import ScriptedModel, error, text, tool_call

    with ScriptedModel([
        error(429, headers={"Retry-After": "1"}),
        tool_call("search_flights", {"destination": "Paris"}),
        text("There is a flight on Monday."),
    ]) as model:
        os.environ["OPENAI_BASE_URL"] = model.base_url
        ...  # run the agent
        model.wait_for_calls(3)
"""

from __future__ import annotations

from .replies import (
    Reply,
    ReplyLike,
    Responder,
    delay,
    error,
    raw,
    text,
    tool_call,
    tool_calls,
    trickle,
)
from .server import ScriptedModel
from .streaming import StreamStyle, streamed

__all__ = [
    "Reply",
    "ReplyLike",
    "Responder",
    "ScriptedModel",
    "StreamStyle",
    "delay",
    "error",
    "raw",
    "streamed",
    "text",
    "tool_call",
    "tool_calls",
    "trickle",
]
