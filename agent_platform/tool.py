"""Tools: Python functions the model may call, wrapped by :func:`tool`.

A tool's ``args_model`` (a pydantic v2 model) is the JSON schema the model sees and the
validator of the arguments it sends. Bad arguments never reach the function: the
validation error goes back to the model as the tool result (DESIGN section 3, rule 4).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from .errors import ConfigurationError, ToolArgumentsError, ToolError
from .jsontext import to_jsonable

__all__ = ["Tool", "ToolContext", "WaitingTool", "arguments_text", "parse_arguments", "to_jsonable", "tool"]


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
        """The OpenAI ``tools`` entry: ``{"type": "function", "function": {name, description, parameters}}``.

        Built once per name, description and ``args_model`` (pydantic's
        ``model_json_schema`` took about 1 ms, at every model call); each call returns a
        copy of its own.
        """
        key = (self.name, self.description, self.args_model)
        built = getattr(self, "_schema", None)
        if built is None or built[0] != key:
            params = self.args_model.model_json_schema()
            params.pop("title", None)
            params.setdefault("properties", {})
            params.setdefault("type", "object")
            entry = {
                "type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": params},
            }
            built = self._schema = (key, entry)
        return copy.deepcopy(built[1])

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
        """Validate ``arguments`` and run the tool; return its result as JSON types.

        The result is converted by :func:`agent_platform.jsontext.to_jsonable` (NaN and
        infinities as null, bytes as UTF-8 text with invalid bytes replaced), which never
        fails: only the function itself can make a call count as failed.

        Raises:
            ToolArgumentsError: the arguments fail validation (the function is not called).
            Exception: whatever the tool raises.
        """
        kwargs = self.validate(arguments)
        if self._wants_context:
            kwargs["context"] = context
        result = self.func(**kwargs)
        return to_jsonable(result)


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

    The function may return any JSON-serialisable value or pydantic model(s). Its result is
    converted to strict JSON (RFC 8259) before it is checkpointed, by one rule
    (:mod:`agent_platform.jsontext`): a NaN or infinite float becomes ``null``; ``bytes``
    become text decoded as UTF-8 with each invalid byte replaced by U+FFFD (return base64
    yourself to keep binary data exact); dates, UUIDs, Decimals and models as pydantic
    serialises them; any other object as ``str()``. The conversion never fails, so a
    function that returned counts as successful and is not retried.
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

    OpenAI sends a JSON string; Ollama and some vLLM versions send an object; some servers
    send ``""``, whitespace, ``null`` (the JSON value or the text) for no arguments, or a
    JSON string encoded twice. All of those read as the object they stand for (``{}``
    for none). ``NaN`` and ``Infinity`` are not JSON (RFC 8259) and are refused.

    Raises:
        ToolArgumentsError: not JSON, or not an object (an array, a number, a string): the
            text is quoted in the message, which goes back to the model.
    """
    value = arguments
    if value is not None and not isinstance(value, str):  # an object: read as its JSON text
        try:
            value = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ToolArgumentsError(f"tool arguments are not valid JSON ({exc}): {arguments!r:.500}") from None
    for _ in range(3):  # the text, then a JSON string encoded once or twice
        if value is None or (isinstance(value, str) and not value.strip()):
            return {}
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value, parse_constant=_not_json)
        except ValueError as exc:
            where = f" ({exc.msg} at position {exc.pos})" if isinstance(exc, json.JSONDecodeError) else f" ({exc})"
            raise ToolArgumentsError(f"tool arguments are not valid JSON{where}: {arguments!r:.500}") from None
    if not isinstance(value, dict):
        raise ToolArgumentsError(f"tool arguments must be a JSON object, got: {arguments!r:.500}")
    return value


def arguments_text(arguments: Any) -> tuple[str, str | None]:
    """The arguments as the JSON object text to send back to the model, and the text
    that arrived when it differs.

    A strict server (OpenAI) answers 400 to a history whose ``tool_calls[].function.arguments``
    is not a JSON object text, so what goes back is always one, and it holds what the tool
    is given: the text as received when it is a JSON object already; ``"{}"`` for no
    arguments (``""``, whitespace, ``null``); the object itself when it came as an object
    or encoded twice; ``"{}"`` when the arguments cannot be read (the tool is not run and
    its error goes to the model). Nothing is dropped: the text that arrived is returned
    beside, for the step record.

    Returns:
        ``(object_text, received)``: ``received`` is None when it is ``object_text`` (or
        when nothing arrived), else the text as received (objects as JSON text).
    """
    received = arguments if isinstance(arguments, str) or arguments is None else _dumps_loosely(arguments)
    try:
        value = parse_arguments(arguments)
    except ToolArgumentsError:
        return "{}", received
    if isinstance(arguments, str):
        try:
            if isinstance(json.loads(arguments, parse_constant=_not_json), dict):
                return arguments, None
        except ValueError:
            pass
    text = json.dumps(value)
    return text, None if received in (None, text) else received


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (RFC 8259)")


def _dumps_loosely(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


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
