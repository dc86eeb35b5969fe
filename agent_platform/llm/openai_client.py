"""OpenAI-compatible chat client on the official ``openai`` SDK.

The SDK's own retries are off (``max_retries=0``): the engine retries a failed call as a
new attempt of the ``llm`` step, so every attempt is recorded in the step log and the
wait between attempts is a Celery countdown, not a sleeping worker (DESIGN section 3, rule 4).
The ``timeout`` is a deadline for the whole call (DESIGN section 3, rule 11): the SDK's
async client runs on the calling thread's event loop (:mod:`.deadline`) and is cancelled,
its connection closed, when the deadline passes, whatever the server sends meanwhile.
In a process that gevent has monkey-patched (``celery worker -P gevent``), where that
loop cannot work, the SDK's synchronous client makes the call and gevent keeps its
deadline (:mod:`.green`); the request, the reply and the errors are the same.

Requests go through the SDK's generic ``post`` (its documented way to send a body as
is, "Making custom/undocumented requests"), not ``chat.completions.create``: ``create``
first walks every message and tool schema through the SDK's typed-parameter transform,
which costs ~0.4 ms of CPU per message on each call (measured: 42 ms for a history of
100 messages), so an ``llm`` step would cost more with each step before it. The
messages here are already the JSON the API takes; auth, headers, status errors and
timeouts are the SDK's either way.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

from ..errors import ConfigurationError, LLMError, RetryableLLMError
from . import green
from .deadline import MODEL_CALLS, DeadlineExceeded
from .reply import AssistantReply, parse_chat_completion
from .streaming import DeltaSink, stream_chat, stream_chat_green

log = logging.getLogger("agent_platform.llm")

DEFAULT_MODEL = "gpt-4o-mini"
#: Seconds a whole model call may take unless ``timeout`` or ``AGENT_PLATFORM_LLM_TIMEOUT`` says.
DEFAULT_TIMEOUT = 60.0
#: HTTP statuses worth another attempt: request timeout, conflict, rate limit, server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
#: The chat completions endpoint, relative to ``base_url``.
CHAT_PATH = "/chat/completions"


class OpenAIChatClient:
    """A chat-completions client for OpenAI and compatible servers (vLLM, llama.cpp, Ollama...).

    Every argument left None is read from the environment when the first call is made
    (not at import): ``OPENAI_MODEL``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
    ``AGENT_PLATFORM_LLM_TEMPERATURE``, ``AGENT_PLATFORM_LLM_MAX_TOOL_ROUNDS``,
    ``AGENT_PLATFORM_LLM_MAX_TOKENS``, ``AGENT_PLATFORM_LLM_TOOL_RESULT_ROLE``,
    ``AGENT_PLATFORM_LLM_TIMEOUT``, ``AGENT_PLATFORM_LLM_STREAM`` (dev mode sets some of
    these for the embedded model).

    Args:
        model: model name sent as ``model`` (default ``$OPENAI_MODEL`` or gpt-4o-mini).
        base_url: API root ending in ``/v1`` (default ``$OPENAI_BASE_URL`` or OpenAI's).
        api_key: bearer key (default ``$OPENAI_API_KEY``; a placeholder for local servers).
        timeout: the deadline of one model call in seconds, from sending the request to
            the last byte of the reply (default ``$AGENT_PLATFORM_LLM_TIMEOUT`` or 60). Not
            httpx's per-read timeout (which a server trickling bytes never trips,
            openai/openai-python#2599): past it the request is cancelled, its connection
            closed, and the call raises :class:`RetryableLLMError`, so the engine records a
            ``retry`` and tries again.
        temperature: sampling temperature, or None for the server's default.
        max_tool_rounds: after this many tool rounds in a turn the model is called with
            ``tool_choice="none"`` (a profile for small models that call tools forever).
        max_tokens: the completion's token limit, or None for the server's default.
        tool_result_role: ``"tool"`` (OpenAI's protocol) or ``"user"``: send tool results
            as user messages, for servers whose chat template drops ``tool`` messages
            (llama-cpp-python's ``chatml-function-calling`` does).
        extra_body: extra JSON fields for every request (server-specific options).
        stream: when a call with a delta listener is made with ``stream=True``: ``"on"``
            (default: always), ``"text"`` (only calls that cannot call tools: for servers
            that cannot stream tool calls, like llama-cpp-python's chatml-function-calling)
            or ``"off"``. The reply is the same either way (:mod:`.streaming`).
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        temperature: float | None = None,
        max_tool_rounds: int | None = None,
        max_tokens: int | None = None,
        tool_result_role: str | None = None,
        extra_body: dict[str, Any] | None = None,
        stream: str | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.temperature = temperature
        self.max_tool_rounds = max_tool_rounds
        self.max_tokens = max_tokens
        self.tool_result_role = tool_result_role
        self.extra_body = extra_body or {}
        self.stream = stream
        #: Values of a ``conversation.openai`` component (``key``, ``model``, ``endpoint``,
        #: ``temperature``), used where neither an argument nor the environment sets one.
        self.component_defaults: dict[str, str] = {}
        #: One SDK client per event loop (so per thread making calls), in this process.
        self._clients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = {}
        self._clients_pid = os.getpid()
        self._lock = threading.Lock()
        #: The synchronous SDK client of a gevent process's calls (:mod:`.green`).
        self._green: green.SharedClient[openai.OpenAI] = green.SharedClient()
        #: The server refused a streamed call with tools: later ones are not streamed.
        self._no_stream_with_tools = False

    def __repr__(self) -> str:  # never show the key
        return f"<OpenAIChatClient model={self.model!r} base_url={self.base_url!r}>"

    def resolved(self) -> dict[str, Any]:
        """The effective settings of the next call: ``model``, ``base_url``, ``api_key``
        (a placeholder when none is set: never log this dict), ``temperature``,
        ``max_tool_rounds``, ``max_tokens``, ``tool_result_role`` and ``timeout``.

        Raises:
            ConfigurationError: no API key and no base URL are configured anywhere, or a
                timeout that is not a positive number of seconds.
        """
        env = os.environ
        comp = self.component_defaults
        base_url = self.base_url or env.get("OPENAI_BASE_URL") or comp.get("endpoint") or None
        api_key = self.api_key or env.get("OPENAI_API_KEY") or comp.get("key")
        if not api_key and not base_url:
            raise ConfigurationError(
                "no model configured: set OPENAI_API_KEY (and OPENAI_MODEL), or OPENAI_BASE_URL "
                "for an OpenAI-compatible server, or run dev mode for the embedded model"
            )
        temperature = self.temperature
        if temperature is None and (env.get("AGENT_PLATFORM_LLM_TEMPERATURE") or comp.get("temperature")):
            temperature = float(env.get("AGENT_PLATFORM_LLM_TEMPERATURE") or comp["temperature"])
        rounds = self.max_tool_rounds
        if rounds is None and env.get("AGENT_PLATFORM_LLM_MAX_TOOL_ROUNDS"):
            rounds = int(env["AGENT_PLATFORM_LLM_MAX_TOOL_ROUNDS"])
        max_tokens = self.max_tokens
        if max_tokens is None and env.get("AGENT_PLATFORM_LLM_MAX_TOKENS"):
            max_tokens = int(env["AGENT_PLATFORM_LLM_MAX_TOKENS"])
        role = self.tool_result_role or env.get("AGENT_PLATFORM_LLM_TOOL_RESULT_ROLE") or "tool"
        if role not in ("tool", "user"):
            raise ConfigurationError(f"tool_result_role must be 'tool' or 'user', not {role!r}")
        timeout = self.timeout
        if timeout is None:
            timeout = _seconds("AGENT_PLATFORM_LLM_TIMEOUT", env.get("AGENT_PLATFORM_LLM_TIMEOUT"), DEFAULT_TIMEOUT)
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError(f"the model call timeout must be a positive number of seconds, not {timeout!r}")
        stream = self.stream or env.get("AGENT_PLATFORM_LLM_STREAM") or "on"
        if stream not in ("on", "text", "off"):
            raise ConfigurationError(f"stream must be 'on', 'text' or 'off', not {stream!r}")
        return {
            "stream": stream,
            "model": self.model or env.get("OPENAI_MODEL") or comp.get("model") or DEFAULT_MODEL,
            "base_url": base_url,
            "api_key": api_key or "not-needed",
            "temperature": temperature,
            "max_tool_rounds": rounds,
            "max_tokens": max_tokens,
            "tool_result_role": role,
            "timeout": float(timeout),
        }

    def _sdk(self, cfg: dict[str, Any], loop: asyncio.AbstractEventLoop) -> openai.AsyncOpenAI:
        # One SDK client per event loop, keeping its connections between calls; a forked
        # child makes its own (its parent's belong to the parent's loops).
        with self._lock:
            if self._clients_pid != os.getpid():
                self._clients, self._clients_pid = {}, os.getpid()
            client = self._clients.get(loop)
            if client is None:
                # the loops of threads that ended are closed: their clients go too
                self._clients = {known: c for known, c in self._clients.items() if not known.is_closed()}
                client = self._clients[loop] = openai.AsyncOpenAI(**_sdk_settings(cfg))
            return client

    def _stream_refused(self, cfg: dict[str, Any], with_tools: bool) -> None:
        """The server refused ``stream=True``: remember it for calls with tools (a server
        that cannot stream a tool choice), and drop the SDK client (the refused stream's
        connection may be closing: it must not be reused)."""
        if with_tools and not self._no_stream_with_tools:
            self._no_stream_with_tools = True
            log.warning("%s refused a streamed call with tools: such calls are no longer streamed", cfg["base_url"])
        self.close()

    def close(self) -> None:
        """Close the SDK clients and their kept-alive connections (the next call opens new
        ones). Call it while no call of this client is in progress: a client whose loop
        is running (a call in another thread) is dropped without closing, and so is a
        gevent process's client while calls use it (it is closed after the last one)."""
        self._green.retire()
        with self._lock:
            clients = self._clients if self._clients_pid == os.getpid() else {}
            self._clients = {}
        for loop, client in clients.items():
            if loop.is_closed() or loop.is_running():
                continue
            try:
                loop.run_until_complete(client.close())
            except Exception:  # noqa: BLE001 - closing what is already broken
                log.debug("closing the model client's connections failed", exc_info=True)

    def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        config: dict[str, Any] | None = None,
        on_delta: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> AssistantReply:
        """Make one chat completion.

        Args:
            messages: OpenAI-shaped messages.
            tools: OpenAI ``tools`` entries (omitted from the request when empty).
            tool_choice: ``"none"`` to forbid tool calls, ``"auto"``, or None.
            config: what :meth:`resolved` returned, when the caller has it already
                (the engine reads ``max_tool_rounds`` first): not resolved twice.
            on_delta: a listener of the model's deltas: the call is then streamed
                (``stream=True``, unless ``stream`` says otherwise) within the same
                deadline, and the reply is the same as unstreamed (:mod:`.streaming`).

        Returns:
            The parsed reply (see :func:`parse_chat_completion` for the servers' quirks).

        Raises:
            RetryableLLMError: the deadline passed (``timeout``), a connection error,
                408/409/429/5xx (with the server's ``Retry-After`` in seconds when it sent one).
            LLMError: any other error status, or a body that is not a chat completion.
            ConfigurationError: no model is configured.
        """
        cfg = config if config is not None else self.resolved()
        if cfg["tool_result_role"] == "user":
            messages = tool_results_as_user(messages)
        request: dict[str, Any] = {"model": cfg["model"], "messages": messages}
        if tools:
            # Sent explicitly: llama-cpp-python leaves the tools out of the prompt without it.
            request["tools"] = tools
            request["tool_choice"] = tool_choice or "auto"
        if cfg["temperature"] is not None:
            request["temperature"] = cfg["temperature"]
        if cfg["max_tokens"] is not None:
            request["max_tokens"] = cfg["max_tokens"]
        request.update(self.extra_body)
        deadline = time.monotonic() + cfg["timeout"]
        try:
            mode = "text" if self._no_stream_with_tools and cfg["stream"] == "on" else cfg["stream"]
            if on_delta is not None and _streams(mode, tools, request.get("tool_choice")):
                body = {**request, "stream": True, "stream_options": {"include_usage": True}}
                streamed = self._stream(cfg, body, on_delta)
                if streamed is not None:
                    return streamed
                self._stream_refused(cfg, bool(tools))  # asked again, unstreamed, within the deadline
            raw = self._post(cfg, request, max(0.001, deadline - time.monotonic()))
        except (DeadlineExceeded, openai.APITimeoutError) as exc:
            raise RetryableLLMError(
                f"the model call did not finish within its deadline of {cfg['timeout']:g} s"
            ) from exc
        except openai.APIConnectionError as exc:
            raise RetryableLLMError(f"cannot reach the model server: {exc}") from exc
        except openai.APIStatusError as exc:
            message = f"model server answered {exc.status_code}: {_error_text(exc)}"
            if exc.status_code in RETRYABLE_STATUSES:
                raise RetryableLLMError(message, retry_after(exc.response.headers)) from exc
            raise LLMError(message) from exc
        try:
            body = json.loads(raw.text)
        except ValueError as exc:
            raise RetryableLLMError(f"the model server sent a body that is not JSON: {raw.text[:200]!r}") from exc
        return parse_chat_completion(body)

    def _post(self, cfg: dict[str, Any], body: dict[str, Any], deadline: float) -> httpx.Response:
        """POST ``body`` and read the whole answer within ``deadline`` seconds: on this
        thread's event loop, or with the synchronous client in a gevent process.

        Raises:
            DeadlineExceeded: the deadline passed (the request was ended, its connection closed).
            openai.APIError: as the SDK raises them.
        """
        options = _options(cfg)
        if green.patched():
            with self._green.use(lambda: openai.OpenAI(**_sdk_settings(cfg))) as sync:
                send = functools.partial(sync.post, CHAT_PATH, body=body, cast_to=httpx.Response, options=options)
                return green.run(send, deadline)

        async def call() -> httpx.Response:  # the body read whole
            client = self._sdk(cfg, asyncio.get_running_loop())
            return await client.post(CHAT_PATH, body=body, cast_to=httpx.Response, options=options)

        return MODEL_CALLS.run(call, deadline)

    def _stream(self, cfg: dict[str, Any], body: dict[str, Any], on_delta: DeltaSink) -> AssistantReply | None:
        """POST ``body`` (``stream=True``) and read the answer as it arrives, within the
        call's deadline: :func:`stream_chat`, or :func:`stream_chat_green` in a gevent process."""
        options = _options(cfg)
        if green.patched():
            with self._green.use(lambda: openai.OpenAI(**_sdk_settings(cfg))) as sync:
                send = functools.partial(
                    sync.post, CHAT_PATH, body=body, cast_to=httpx.Response, options=options, stream=True
                )
                return stream_chat_green(send, on_delta, cfg["timeout"])

        async def open_stream() -> httpx.Response:  # the body left to read
            client = self._sdk(cfg, asyncio.get_running_loop())
            return await client.post(CHAT_PATH, body=body, cast_to=httpx.Response, options=options, stream=True)

        return stream_chat(open_stream, on_delta, cfg["timeout"])


def _sdk_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The SDK client's settings (``OpenAI`` and ``AsyncOpenAI`` alike): no retries of its own."""
    return {"api_key": cfg["api_key"], "base_url": cfg["base_url"], "timeout": cfg["timeout"], "max_retries": 0}


def _options(cfg: dict[str, Any]) -> openai.RequestOptions:
    """A request's options: httpx's per-phase timeouts no longer than the deadline (which bounds them all)."""
    return {"timeout": cfg["timeout"]}


def _streams(mode: str, tools: list[dict[str, Any]] | None, tool_choice: str | None) -> bool:
    """Whether a call is streamed under ``mode`` (``on``, ``text``: only without tools, ``off``)."""
    return mode == "on" or (mode == "text" and (not tools or tool_choice == "none"))


def tool_results_as_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite ``tool`` messages as ``user`` messages naming the tool call, for servers
    whose chat template drops tool messages; the assistant's tool calls stay as they are."""
    names = {
        call["id"]: call["function"]["name"]
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    }
    out = []
    for m in messages:
        if m.get("role") == "tool":
            name = names.get(m.get("tool_call_id"), "the tool")
            out.append({"role": "user", "content": f"Result of {name}: {m.get('content')}"})
        else:
            out.append(m)
    return out


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            seconds = float(value) / 1000.0
            if math.isfinite(seconds):
                return max(0.0, seconds)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _seconds(name: str, raw: str | None, default: float) -> float:
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number of seconds") from None


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
    return str(exc.message)[:500]
