"""agent-platform: durable AI agents on Celery and Redis.

Public API, grouped like Dramatiq's: agents and tools, models, memory, runtime, errors.
"""

from .agent import AssistantAgent
from .agent_runner import AgentRunner
from .bus.messages import AgentTaskResponse, BroadcastMessage, TriggerAction
from .durable import (
    AgentExecutionConfig,
    AgentMemoryConfig,
    AgentPubSubConfig,
    AgentRegistryConfig,
    AgentStateConfig,
    DurableAgent,
    StateStoreService,
)
from .errors import (
    AgentNotFound,
    AgentPlatformError,
    BusError,
    CallbackNotAllowed,
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
    TooManyEvents,
    ValidationError,
    WorkerLost,
    WorkflowNotFound,
)
from .llm import OpenAIChatClient
from .memory import ConversationDaprStateMemory, ConversationListMemory, ConversationRedisMemory
from .orchestrators import LLMOrchestrator, PolicyOrchestrator, RandomOrchestrator, RoundRobinOrchestrator
from .settings import Settings
from .tool import Tool, ToolContext, tool

__version__ = "0.1.0"

__all__ = [
    # agents and tools
    "AssistantAgent",
    "DurableAgent",
    "Tool",
    "ToolContext",
    "tool",
    # Dapr Agents 1.x configuration and runner
    "AgentExecutionConfig",
    "AgentMemoryConfig",
    "AgentPubSubConfig",
    "AgentRegistryConfig",
    "AgentRunner",
    "AgentStateConfig",
    "StateStoreService",
    # orchestrators and the messages between agents
    "AgentTaskResponse",
    "BroadcastMessage",
    "LLMOrchestrator",
    "PolicyOrchestrator",
    "RandomOrchestrator",
    "RoundRobinOrchestrator",
    "TriggerAction",
    # models
    "OpenAIChatClient",
    # memory
    "ConversationDaprStateMemory",
    "ConversationListMemory",
    "ConversationRedisMemory",
    # configuration
    "Settings",
    # errors
    "AgentNotFound",
    "AgentPlatformError",
    "BusError",
    "CallbackNotAllowed",
    "ComponentError",
    "ConfigurationError",
    "IdempotencyConflict",
    "InvalidTransition",
    "LLMError",
    "MalformedReply",
    "RetryableLLMError",
    "StepFenced",
    "TooManyEvents",
    "ToolArgumentsError",
    "ToolError",
    "ValidationError",
    "WorkerLost",
    "WorkflowNotFound",
]
