"""Read a request's body up front, bounded in size and in time (C16).

Werkzeug caps a body at ``MAX_CONTENT_LENGTH`` only by its ``Content-Length``; a
chunked body (``Transfer-Encoding: chunked``) is cut silently at the limit
(``LimitedStream(is_max=True)`` stops reading without an error), so a 1.5 MB JSON body
looked like truncated JSON. A client that announces a body and then sends it slowly holds
whatever serves it (a thread of a gthread worker) for as long as it likes: gunicorn
bounds the wait for a request's headers (``--keep-alive`` on gevent workers), not the
reading of its body.

:func:`read_body` therefore reads the whole body before Flask does:

- at most ``max_bytes`` (``AGENT_PLATFORM_MAX_REQUEST_BYTES``): one byte more, with or
  without a ``Content-Length``, is a 413;
- within ``timeout`` seconds (``AGENT_PLATFORM_BODY_TIMEOUT``) of the first read: on a
  gevent worker (the Procfile's), a ``gevent.Timeout`` for the whole read, which cuts the
  greenlet wherever it waits; elsewhere each read gets the time left as its socket timeout
  (as gunicorn's own ``finish_body(deadline=...)`` drains a body), which a client that
  trickles a byte now and then stretches, since gunicorn's reader loops over ``recv``
  until it has what was asked. Past it, a 408, and the socket is shut for reading so the
  server drops the connection after the answer.

The client socket is the one gunicorn (``gunicorn.socket``) or werkzeug's development
server (``werkzeug.socket``) puts in the WSGI environ; under another server the size
limit holds and the time limit is the server's own. The body is then served from memory
(``wsgi.input`` becomes a ``BytesIO``, ``CONTENT_LENGTH`` its size).
"""

from __future__ import annotations

import io
import logging
import socket
import time
from typing import Any

from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, RequestTimeout

from agent_platform.llm.green import patched as gevent_patched

log = logging.getLogger("agent_platform.web")

CHUNK = 64 * 1024


def has_body(environ: dict[str, Any]) -> bool:
    """True when the request announces a body (``Content-Length`` > 0, or chunked)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False  # werkzeug answers a malformed Content-Length itself


def read_body(environ: dict[str, Any], max_bytes: int, timeout: float) -> None:
    """Read the request body into memory, replacing ``wsgi.input`` (see the module doc).

    Args:
        environ: the WSGI environ (changed in place).
        max_bytes: the largest body accepted, in bytes.
        timeout: seconds the whole body may take to arrive (0: no limit).

    Raises:
        RequestEntityTooLarge: the body is (or announces to be) larger than ``max_bytes`` (413).
        RequestTimeout: the body did not arrive in time (408).
        BadRequest: the client closed the connection before the announced length (400).
    """
    length = None if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() else _length(environ)
    if length is not None and length > max_bytes:
        raise RequestEntityTooLarge(f"the body has {length} bytes; at most {max_bytes} are accepted")
    sock: Any = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    deadline = time.monotonic() + timeout if timeout > 0 and sock is not None else None
    previous = sock.gettimeout() if deadline is not None else None
    stream = environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    whole = _whole_read_deadline(timeout) if deadline is not None else None
    try:
        while length is None or size < length:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
            want = CHUNK if length is None else min(CHUNK, length - size)
            chunk = stream.read(min(want, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise RequestEntityTooLarge(f"the body is larger than {max_bytes} bytes")
    except TimeoutError:
        _drop(sock)
        log.warning("dropped a request whose body did not arrive within %s s (%d bytes read)", timeout, size)
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except RequestEntityTooLarge:
        raise
    except Exception as exc:  # a reset connection, a malformed chunk (gunicorn's InvalidChunkSize...)
        raise BadRequest(f"the request body could not be read: {type(exc).__name__}") from exc
    finally:
        if whole is not None:
            whole.close()
        if deadline is not None:
            _restore(sock, previous)
    if length is not None and size < length:
        raise BadRequest(f"the body ended after {size} of {length} bytes")
    body = b"".join(chunks)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ.pop("wsgi.input_terminated", None)


def _whole_read_deadline(timeout: float) -> Any:
    """A started ``gevent.Timeout`` that raises :class:`TimeoutError` in this greenlet
    after ``timeout`` seconds, in a gevent-patched process; None elsewhere."""
    if not gevent_patched():
        return None
    import gevent

    timer = gevent.Timeout(timeout, TimeoutError)
    timer.start()
    return timer


def _length(environ: dict[str, Any]) -> int:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def _drop(sock: Any) -> None:
    """Shut the connection for reading: the server sends the 408 and then sees the end
    of the stream, so it closes the connection instead of waiting for the rest."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def _restore(sock: Any, previous: float | None) -> None:
    try:
        sock.settimeout(previous)
    except OSError:
        pass
