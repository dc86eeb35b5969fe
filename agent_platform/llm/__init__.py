"""Language model clients (OpenAI-compatible chat completions)."""

from .openai_client import OpenAIChatClient
from .reply import AssistantReply, ToolCall, parse_chat_completion

__all__ = ["AssistantReply", "OpenAIChatClient", "ToolCall", "parse_chat_completion"]
