"""Conversation memory: the history of a session, outliving processes."""

from .base import ConversationMemory, SessionHistory
from .list_memory import ConversationListMemory
from .redis_memory import ConversationRedisMemory

__all__ = ["ConversationListMemory", "ConversationMemory", "ConversationRedisMemory", "SessionHistory"]
