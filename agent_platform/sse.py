"""Server-Sent Events: one incremental parser, for the model's stream and for ``/events`` clients.

The parsing rules are the WHATWG HTML standard's "event stream interpretation": lines end
with LF or CRLF, a line starting with ``:`` is a comment, ``data`` lines of one event are
joined with LF, a blank line dispatches the event, an event without ``data`` is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event.

    Attributes:
        event: the ``event:`` field, ``"message"`` when absent (EventSource's default).
        data: the ``data:`` lines joined with LF.
        id: the ``id:`` field of this event, or None.
    """

    event: str
    data: str
    id: str | None = None


class SseParser:
    """Turns bytes of a ``text/event-stream`` body, in pieces of any size, into events.

    Example::

        parser = SseParser()
        for piece in response.iter_bytes():
            for event in parser.feed(piece):
                ...
        for event in parser.close():  # an event the server did not end with a blank line
            ...
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.comments = 0

    def feed(self, piece: bytes) -> list[SseEvent]:
        """The events completed by ``piece`` (bytes split anywhere, even inside a UTF-8 character)."""
        self._buffer += piece
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        """The last event when the body ended without its blank line (lenient: servers do)."""
        events = self.feed(b"\n") if self._buffer else []
        event = self._line("")
        return [*events, event] if event is not None else events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event, self._id = "", None
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._data, self._event, self._id = [], "", None
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def parse_sse(pieces: Iterable[bytes]) -> Iterator[SseEvent]:
    """Every event of a body given as byte pieces (e.g. ``httpx.Response.iter_bytes()``)."""
    parser = SseParser()
    for piece in pieces:
        yield from parser.feed(piece)
    yield from parser.close()
