"""The scripted OpenAI-compatible chat-completions server (:class:`ScriptedModel`).

It runs in the test process, on a werkzeug threaded server in a background thread, and
answers ``POST /v1/chat/completions`` from a FIFO script of replies, so that Celery
worker subprocesses (or any ``openai`` client) can call it over real HTTP.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from .http import QuietHandler, json_response
from .replies import Reply, ReplyLike, Responder, coerce_reply, error_body, usage_for
from .streaming import StreamStyle, sse_response
from .trickle import body_chunks, client_left, endless_headers, padded
from .validation import request_problem

__all__ = ["ScriptedModel"]

_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})


class ScriptedModel:
    """A scripted OpenAI-compatible chat-completions server on a free local port.

    Each ``POST /v1/chat/completions`` takes the next reply from the FIFO script; when
    the script is empty it asks the responder (:meth:`set_responder`), then ``default``;
    with none of them it answers HTTP 500 ``"ScriptedModel: script exhausted (N calls)"``
    so that the test fails loudly. ``GET /v1/models`` lists ``model_name``. Requests
    with ``"stream": true`` get the same reply as Server-Sent Events chunks (see
    :mod:`agent_platform.testing.streaming`; errors stay JSON, as OpenAI answers them).
    Every request to ``/chat/completions`` is counted and recorded on arrival.

    Example::

        from agent_platform.testing import ScriptedModel, text, tool_call

        with ScriptedModel([tool_call("search_flights", {"destination": "Paris"}),
                            text("Fly on Monday.")]) as model:
            client = openai.OpenAI(base_url=model.base_url, api_key="x", max_retries=0)
            ...
            model.wait_for_calls(2)
            assert model.requests[1]["messages"][-1]["role"] == "tool"

    Args:
        replies: the initial script: Reply objects, str (:func:`text`), dict
            (:func:`raw`) or callables given the request body (a dict) that return one.
        host: the interface to bind.
        port: the TCP port; 0 picks a free one (kept across :meth:`stop`/:meth:`start`).
        model_name: the ``model`` in responses and in ``/v1/models``.
        default: the reply (or callable) used whenever the script is empty and no
            responder is set; None means "fail loudly".
        validate_history: check each request as a strict server (OpenAI) does and answer
            400 ``invalid_request_error`` to one that fails, without taking a reply: the
            body is strict JSON, every ``tool_calls[].function.arguments`` a JSON object
            text, every tool call answered (see :mod:`agent_platform.testing.validation`).
            An attribute a test may set; :meth:`reset` restores the constructor's value.
        stream: how replies are streamed (a reply's own :func:`streamed` style wins);
            None: OpenAI's way. Settable as the ``stream`` attribute; :meth:`reset` clears it.

    Attributes:
        requests: the JSON bodies received, in arrival order (a body that is not a JSON
            object is recorded as ``{"_invalid_json": "<text>"}``). Appended under a lock.
        request_times: ``time.monotonic()`` at each request's arrival, aligned with
            ``requests``.
        errors: exceptions raised by scripted callables, responder or default (each
            answered HTTP 500), so a test can re-raise them.
        rejections: the messages of the 400s that ``validate_history`` answered.
        max_in_flight: the most ``/chat/completions`` requests being answered at one
            time (a request counts until its answer is sent, or its client has left:
            each arrival first looks whether the clients of the others closed their
            connections, so a server thread that has not run yet does not count twice).

    Raises:
        TypeError: if a reply is neither a Reply, str, dict nor callable.
    """

    def __init__(
        self,
        replies: Iterable[ReplyLike] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str = "scripted-model",
        default: Reply | Responder | None = None,
        validate_history: bool = False,
        stream: StreamStyle | None = None,
    ) -> None:
        self.host = host
        self.model_name = model_name
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self.errors: list[BaseException] = []
        self.rejections: list[str] = []
        self.validate_history = self._validate_default = validate_history
        self.stream = stream
        self.max_in_flight = 0
        self._in_flight: dict[int, socket.socket | None] = {}
        self._in_flight_keys = itertools.count()
        self._port = port
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._script: deque[Reply | Responder] = deque()
        self._responder: Responder | None = None
        self._calls = 0
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(6)
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.add(*replies)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The ``openai`` client's ``base_url``: ``"http://<host>:<port>/v1"``.

        Raises:
            RuntimeError: if the server is not started.
        """
        if self._server is None:
            raise RuntimeError("ScriptedModel is not started: use `with ScriptedModel() as model` or .start()")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/v1"

    @property
    def port(self) -> int:
        """The bound TCP port (0 before the first :meth:`start` when a free port was asked)."""
        return self._port

    def start(self) -> Self:
        """Bind the port and serve in a daemon thread; does nothing if already serving.

        Returns:
            self, so that ``model = ScriptedModel().start()`` works.

        Raises:
            OSError: if the port cannot be bound (for example it is in use).
        """
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # Bind here so a busy port raises OSError (werkzeug would print and sys.exit).
        sock = socket.create_server((self.host, self._port), family=family)
        try:
            server = make_server(
                self.host,
                sock.getsockname()[1],
                self._app,  # type: ignore[arg-type,misc]  # werkzeug's Request.application on a method
                threaded=True,
                request_handler=QuietHandler,
                fd=sock.fileno(),
            )
        finally:
            sock.close()  # the server holds its own duplicate of the descriptor
        self._port = server.port
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ScriptedModel:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; the script and records are kept.

        Requests waiting in a :func:`~agent_platform.testing.delay` are answered 503 at
        once. :meth:`start` serves again on the same port.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"serving on port {self._port}" if self._server else "stopped"
        return f"<ScriptedModel {state}, {self.calls} calls, {len(self._script)} replies left>"

    # -- script ------------------------------------------------------------------

    def add(self, *replies: ReplyLike) -> None:
        """Append replies to the FIFO script (str -> text, dict -> raw, callables as is).

        Raises:
            TypeError: if a reply is neither a Reply, str, dict nor callable.
        """
        items = [r if callable(r) else coerce_reply(r) for r in replies]
        with self._lock:
            self._script.extend(items)

    def set_responder(self, fn: Responder | None) -> None:
        """Answer every request that finds the script empty with ``fn(request_body)``.

        ``fn`` runs in the server's request threads, possibly several at once, and may
        return a Reply, str or dict (for example echo a token found in the messages).
        None removes the responder.
        """
        with self._lock:
            self._responder = fn

    @property
    def calls(self) -> int:
        """The number of ``/chat/completions`` requests received, error answers included."""
        with self._lock:
            return self._calls

    def wait_for_calls(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least ``n`` requests have arrived in total.

        Args:
            n: the number of calls to wait for (counted since construction or reset).
            timeout: seconds to wait at most.

        Raises:
            TimeoutError: if fewer than ``n`` calls arrived within ``timeout``.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._calls >= n, timeout):
                raise TimeoutError(
                    f"ScriptedModel: expected at least {n} calls within {timeout} s, "
                    f"got {self._calls} ({len(self._script)} scripted replies left)"
                )

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no chat request is being answered (a client that left does not
        count), at most ``timeout`` seconds; True when idle.

        Between two tests: a test that ends while a model call of its turn is held (a
        :func:`~agent_platform.testing.delay`) must not leave that call to take the next
        test's replies when it comes back for more.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for key, sock in list(self._in_flight.items()):
                    if sock is not None and client_left(sock):
                        del self._in_flight[key]
                if not self._in_flight:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def reset(self) -> None:
        """Empty the script, drop the responder and forget recorded requests and errors."""
        with self._lock:
            self._script.clear()
            self._responder = None
            self._calls = 0
            self.requests.clear()
            self.request_times.clear()
            self.errors.clear()
            self.rejections.clear()
            self.validate_history = self._validate_default
            self.stream = None
            self.max_in_flight = len(self._in_flight)

    # -- HTTP --------------------------------------------------------------------

    @Request.application  # type: ignore[arg-type]
    def _app(self, request: Request) -> Response:  # type: ignore[misc]
        path = request.path.rstrip("/")
        if path in _CHAT_PATHS and request.method == "POST":
            key = self._arrived_in_flight(request.environ.get("werkzeug.socket"))
            try:
                response = self._chat(request)
            except BaseException:
                self._answered(key)
                raise
            response.call_on_close(lambda: self._answered(key))
            return response
        if path in _MODELS_PATHS and request.method == "GET":
            model = {
                "id": self.model_name,
                "object": "model",
                "created": 0,
                "owned_by": "agent-platform",
            }
            return json_response({"object": "list", "data": [model]})
        return json_response(
            error_body(404, f"ScriptedModel: no route for {request.method} {request.path}"),
            404,
        )

    def _arrived_in_flight(self, sock: socket.socket | None) -> int:
        with self._lock:
            for key, other in list(self._in_flight.items()):
                if other is not None and client_left(other):
                    del self._in_flight[key]
            key = next(self._in_flight_keys)
            self._in_flight[key] = sock
            self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
            return key

    def _answered(self, key: int) -> None:
        with self._lock:
            self._in_flight.pop(key, None)

    def _chat(self, request: Request) -> Response:
        arrived = time.monotonic()
        data = request.get_data(as_text=True)
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        problem = request_problem(data, body) if self.validate_history and isinstance(body, dict) else None
        item: Reply | Responder | None = None
        with self._lock:
            self._calls += 1
            n = self._calls
            valid = isinstance(body, dict)
            self.requests.append(body if valid else {"_invalid_json": data})
            self.request_times.append(arrived)
            self._arrived.notify_all()
            if problem is not None:
                self.rejections.append(problem[0])
            elif valid:
                item = self._script.popleft() if self._script else (self._responder or self.default)
        if not valid:
            return json_response(
                error_body(400, "ScriptedModel: the request body is not a JSON object"),
                400,
            )
        if problem is not None:
            rejection = error_body(400, problem[0])
            rejection["error"]["param"] = problem[1]
            return json_response(rejection, 400)
        if item is None:
            message = f"ScriptedModel: script exhausted ({n} calls); add replies or set a responder or default"
            return json_response(error_body(500, message), 500)
        try:
            reply = self._resolve(item, body)
            while reply.delay or reply.deferred is not None:
                if reply.delay and self._stopping.wait(reply.delay):
                    return json_response(
                        error_body(503, "ScriptedModel: stopped during a scripted delay"),
                        503,
                    )
                if reply.deferred is None:
                    break
                reply = self._resolve(reply.deferred, body)
        except Exception as exc:  # noqa: BLE001 - reported to the client and kept in .errors
            with self._lock:
                self.errors.append(exc)
            message = f"ScriptedModel: scripted callable raised {type(exc).__name__}: {exc}"
            return json_response(error_body(500, message), 500)
        response = self._render(reply, body)
        if reply.trickle is None:
            return response
        plan, sock = reply.trickle, request.environ.get("werkzeug.socket")
        if plan.in_headers and sock is not None:
            endless_headers(sock, plan, self._stopping)  # raises when the client leaves
        payload = padded(response.get_data(), plan.content_length)
        response.response = body_chunks(payload, plan, sock, self._stopping)
        response.headers["Content-Length"] = str(len(payload))
        return response

    @staticmethod
    def _resolve(item: Reply | Responder, body: dict[str, Any]) -> Reply:
        return item if isinstance(item, Reply) else coerce_reply(item(body))  # type: ignore[arg-type]

    def _render(self, reply: Reply, request: dict[str, Any]) -> Response:
        headers = {
            "x-request-id": f"req_{self._id_prefix}{next(self._ids):06d}",
            **reply.headers,
        }
        if reply.body is not None:
            return self._answer(reply, reply.body, request, headers)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            **(reply.message or {}),
        }
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {
                    **call,
                    "id": call.get("id") or f"call_{self._id_prefix}{next(self._ids):06d}",
                }
                for call in message["tool_calls"]
            ]
        completion = {
            "id": f"chatcmpl-{self._id_prefix}{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": usage_for(reply.usage, request, message),
            "system_fingerprint": "fp_scripted",
        }
        return self._answer(reply, completion, request, headers)

    def _answer(
        self, reply: Reply, body: Mapping[str, Any], request: dict[str, Any], headers: dict[str, str]
    ) -> Response:
        """The body as JSON, or as SSE chunks to a ``"stream": true`` request (a 200 with choices)."""
        style = reply.stream or self.stream or StreamStyle()
        if not request.get("stream") or style.ignore_stream or reply.status != 200 or not body.get("choices"):
            return json_response(body, reply.status, headers)
        return sse_response(dict(body), style, request, headers, self._stopping)
