"""agent-platform: durable AI agents on Celery and Redis.

Public API, grouped like Dramatiq's: agents and tools, models, memory, runtime, errors.
"""

from .agent import AssistantAgent
from .errors import (
    AgentNotFound,
    AgentPlatformError,
    BusError,
    ComponentError,
    ConfigurationError,
    IdempotencyConflict,
    InvalidTransition,
    LLMError,
    MalformedReply,
    RetryableLLMError,
    StepFenced,
    ToolArgumentsError,
    ToolError,
    ValidationError,
    WorkerLost,
    WorkflowNotFound,
)
from .llm import OpenAIChatClient
from .memory import ConversationListMemory, ConversationRedisMemory
from .settings import Settings
from .tool import Tool, ToolContext, tool

__version__ = "0.1.0"

__all__ = [
    # agents and tools
    "AssistantAgent",
    "Tool",
    "ToolContext",
    "tool",
    # models
    "OpenAIChatClient",
    # memory
    "ConversationListMemory",
    "ConversationRedisMemory",
    # configuration
    "Settings",
    # errors
    "AgentNotFound",
    "AgentPlatformError",
    "BusError",
    "ComponentError",
    "ConfigurationError",
    "IdempotencyConflict",
    "InvalidTransition",
    "LLMError",
    "MalformedReply",
    "RetryableLLMError",
    "StepFenced",
    "ToolArgumentsError",
    "ToolError",
    "ValidationError",
    "WorkerLost",
    "WorkflowNotFound",
]
