"""Conversation memory: the history of a session, outliving processes."""

from .base import ConversationMemory, SessionHistory
from .list_memory import ConversationListMemory
from .redis_memory import ConversationDaprStateMemory, ConversationRedisMemory

__all__ = [
    "ConversationDaprStateMemory",
    "ConversationListMemory",
    "ConversationMemory",
    "ConversationRedisMemory",
    "SessionHistory",
]
