"""The one error tree of agent-platform.

Every error the library raises on purpose derives from :class:`AgentPlatformError`.
The web layer maps each class to one HTTP status in one place (``web/errors.py``).
"""

from __future__ import annotations


class AgentPlatformError(Exception):
    """Raised for any error agent-platform reports on purpose (the root of the tree)."""


class ConfigurationError(AgentPlatformError):
    """Raised when settings, environment variables or an agent definition are invalid."""


class ComponentError(ConfigurationError):
    """Raised when a component YAML file is malformed, incomplete or unknown (names file and field)."""


class ValidationError(AgentPlatformError):
    """Raised when caller input (an id, a request body, an argument) fails validation."""


class CallbackNotAllowed(ValidationError):
    """Raised when a ``callback_url`` points at an address the platform does not contact
    (loopback, private, link-local...) and ``AGENT_PLATFORM_CALLBACK_ALLOW`` does not permit it."""


class WorkflowNotFound(AgentPlatformError):
    """Raised when no workflow exists under the given instance id."""


class AgentNotFound(AgentPlatformError):
    """Raised when an agent name is not loaded in this process or not in the registry."""


class InvalidTransition(AgentPlatformError):
    """Raised when a control action does not apply to the workflow's current status."""

    def __init__(self, message: str, current_status: str | None = None) -> None:
        super().__init__(message)
        self.current_status = current_status


class TooManyEvents(AgentPlatformError):
    """Raised when a workflow already holds ``max_events_per_workflow`` events it did not wait for."""


class IdempotencyConflict(AgentPlatformError):
    """Raised when an Idempotency-Key is reused with a different request body."""


class StepFenced(AgentPlatformError):
    """Raised when a checkpoint is refused because the workflow's cursor moved on or it was terminated."""


class WorkerLost(AgentPlatformError):
    """Raised (as a step's failure) when the workers running one step died ``max_lost_attempts`` times."""


class ToolError(AgentPlatformError):
    """Raised when a tool call fails: unknown tool, invalid arguments, or the tool raised."""


class ToolArgumentsError(ToolError):
    """Raised when a tool call's arguments are not JSON or fail the tool's ``args_model``."""


class LLMError(AgentPlatformError):
    """Raised when the language model call fails for good or returns an unusable reply."""


class RetryableLLMError(LLMError):
    """Raised when a language model call failed in a way worth retrying (timeout, 429, 5xx).

    Attributes:
        retry_after: seconds the server asked us to wait (``Retry-After``), or None.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MalformedReply(RetryableLLMError):
    """Raised when a model server answers 200 with something that is not a usable chat completion."""


class BusError(AgentPlatformError):
    """Raised when the message bus cannot publish or consume a message."""
