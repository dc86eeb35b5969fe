"""Tools: Python functions the model may call, wrapped by :func:`tool`.

A tool's ``args_model`` (a pydantic v2 model) is the JSON schema the model sees and the
validator of the arguments it sends. Bad arguments never reach the function: the
validation error goes back to the model as the tool result (DESIGN section 3, rule 4).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python

from .errors import ConfigurationError, ToolArgumentsError, ToolError


@dataclass(frozen=True)
class ToolContext:
    """What a tool may learn about the call it serves; pass a ``context`` parameter to get it.

    Attributes:
        workflow_id: the workflow instance id.
        call_id: the model's tool call id.
        idempotency_key: ``"<workflow_id>:<call_id>"``, the same in every attempt, so the
            tool can make its own side effects exactly-once.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        agent: the agent's name.
        session_id: the conversation session.
    """

    workflow_id: str
    call_id: str
    idempotency_key: str
    attempt: int
    agent: str
    session_id: str


class Tool:
    """A callable tool with its schema and options. Build it with :func:`tool`.

    Attributes:
        name: the function name the model calls.
        description: from the docstring (first paragraph) unless given.
        args_model: pydantic model of the arguments.
        retries: how many times a raising tool is run again before its error goes to
            the model (so ``retries + 1`` attempts in all).
        timeout: seconds one attempt may run (Celery's soft time limit), or None.
        requires_approval: the turn suspends (SUSPENDED, ``pending_event``) until
            ``raise-event`` approves or denies the call; a denial goes to the model.
        approval_timeout: seconds to wait for the approval before it counts as denied
            (None: wait forever).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        args_model: type[pydantic.BaseModel] | None = None,
        name: str | None = None,
        description: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
        requires_approval: bool = False,
        approval_timeout: float | None = None,
    ) -> None:
        if retries < 0:
            raise ConfigurationError(f"tool {func.__name__}: retries must be >= 0")
        self.func = func
        self.name = name or func.__name__
        doc = inspect.getdoc(func) or ""
        self.description = description or doc.split("\n\n")[0].strip() or self.name
        signature = inspect.signature(func)
        self._wants_context = "context" in signature.parameters
        self.args_model = args_model or _model_from_signature(self.name, signature)
        self.retries = retries
        self.timeout = timeout
        self.requires_approval = requires_approval
        self.approval_timeout = approval_timeout
        self.__doc__ = func.__doc__
        self.__name__ = self.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly (no validation), as a plain function."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry: ``{"type": "function", "function": {name, description, parameters}}``."""
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        params.setdefault("properties", {})
        params.setdefault("type", "object")
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Validate the model's arguments against ``args_model``.

        Args:
            arguments: a dict, or a JSON string (as OpenAI sends it), or None/"" for none.

        Returns:
            The validated keyword arguments for the function.

        Raises:
            ToolArgumentsError: not JSON, not an object, or fails the model; the message
                names each failing field.
        """
        arguments = parse_arguments(arguments)
        try:
            validated = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolArgumentsError(f"invalid arguments for tool {self.name!r}: {problems}") from None
        return {name: getattr(validated, name) for name in type(validated).model_fields}

    def invoke(self, arguments: Any, context: ToolContext) -> Any:
        """Validate ``arguments`` and run the tool; return a JSON-serialisable result.

        Raises:
            ToolArgumentsError: the arguments fail validation (the function is not called).
            Exception: whatever the tool raises.
        """
        kwargs = self.validate(arguments)
        if self._wants_context:
            kwargs["context"] = context
        return to_jsonable(self.func(**kwargs))


def tool(
    func: Callable[..., Any] | None = None,
    *,
    args_model: type[pydantic.BaseModel] | None = None,
    name: str | None = None,
    description: str | None = None,
    retries: int = 0,
    timeout: float | None = None,
    requires_approval: bool = False,
    approval_timeout: float | None = None,
) -> Any:
    """Wrap a function as a :class:`Tool`; usable as ``@tool`` or ``@tool(args_model=...)``.

    Without ``args_model`` the arguments model is built from the signature's annotations.
    A parameter named ``context`` receives a :class:`ToolContext` and is hidden from the model.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            args_model=args_model,
            name=name,
            description=description,
            retries=retries,
            timeout=timeout,
            requires_approval=requires_approval,
            approval_timeout=approval_timeout,
        )

    return wrap(func) if func is not None else wrap


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Read a tool call's arguments defensively, as servers differ.

    OpenAI sends a JSON string; Ollama and some vLLM versions send an object; some
    servers send "" or null for no arguments, or a JSON string encoded twice.

    Raises:
        ToolArgumentsError: not JSON or not an object (the text is quoted in the message).
    """
    if arguments is None or arguments == "":
        return {}
    value = arguments
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(
                f"tool arguments are not valid JSON ({exc.msg} at position {exc.pos}): {arguments!r:.500}"
            ) from None
    if not isinstance(value, dict):
        raise ToolArgumentsError(f"tool arguments must be a JSON object, got: {arguments!r:.500}")
    return value


def to_jsonable(value: Any) -> Any:
    """Convert a tool's return value (pydantic models, lists of them, dataclasses...) to JSON types."""
    return to_jsonable_python(value, fallback=str)


def _model_from_signature(name: str, signature: inspect.Signature) -> type[pydantic.BaseModel]:
    fields_: dict[str, Any] = {}
    for pname, param in signature.parameters.items():
        if pname == "context" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields_[pname] = (annotation, default)
    return pydantic.create_model(f"{name}_arguments", **fields_)


class WaitingTool(Tool):
    """A tool whose result arrives later as an event: another agent's answer, a webhook.

    The ``tool`` step calls :meth:`begin` (which must be idempotent by
    ``context.idempotency_key``: it may run again after a crash), then the workflow is
    SUSPENDED with ``pending_event = {"name": "response.<stage>.<index>", ...}`` until
    ``raise-event`` delivers that event; the step then runs again and :meth:`complete`
    turns the payload into the tool result. After ``event_timeout`` seconds the sweeper
    delivers ``{"timeout": True, "error": ...}`` instead.

    Args:
        name: the tool name the model calls.
        description: what the model reads.
        args_model: pydantic model of the arguments.
        event_timeout: seconds to wait for the event (None: forever).
        target: what is awaited, for messages (e.g. an agent name).
    """

    waits_for_event = True

    def __init__(
        self,
        name: str,
        description: str,
        args_model: type[pydantic.BaseModel],
        event_timeout: float | None = None,
        target: str | None = None,
    ) -> None:
        super().__init__(self._not_callable, args_model=args_model, name=name, description=description)
        self.event_timeout = event_timeout
        self.target = target

    @staticmethod
    def _not_callable(**_: Any) -> Any:
        raise TypeError("a WaitingTool is run by the engine (begin/complete), not called")

    def begin(self, arguments: dict[str, Any], context: ToolContext, event_name: str) -> None:
        """Start the work whose answer will come back as event ``event_name``."""
        raise NotImplementedError

    def complete(self, payload: Any, arguments: dict[str, Any], context: ToolContext) -> Any:
        """The tool result from the event's payload.

        Raises:
            ToolError: the payload reports a timeout or an error (its text goes to the model).
        """
        if isinstance(payload, dict) and (payload.get("timeout") or payload.get("error")):
            raise ToolError(str(payload.get("error") or "timed out"))
        if isinstance(payload, dict) and "result" in payload:
            return to_jsonable(payload["result"])
        return to_jsonable(payload)
