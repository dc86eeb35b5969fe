"""The turn's messages a worker process read last, so a model call reads only what is new.

A workflow's ``messages`` list (DESIGN section 3, rule 9) is append-only: each ``llm``
checkpoint adds the tool results before it and its reply. Reading the whole list at each
model call made a step's cost grow with the turn (``LRANGE 0 -1`` and one ``json.loads``
per message: about 2 ms a model call at 200 tool rounds, against 0.1 ms at 10). So a
process keeps, per workflow, the messages it read last; opening the next ``llm`` step asks
only for the messages from the last one it holds on (``store/lua/_open.lua``, ``have``),
and that first message returned is checked against the copy held before the new ones are
appended (a purged workflow whose id was used again cannot mix two lists). Bounded: the
:data:`CAPACITY` workflows used most recently, per store.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

#: Workflows whose messages a process keeps (least recently used dropped first).
CAPACITY = 64


class TurnMessages:
    """Per workflow: the decoded messages read last and the JSON text of the last one.

    Thread-safe (a threads or gevent pool shares one store between its tasks).
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._held: OrderedDict[str, tuple[list[dict[str, Any]], str]] = OrderedDict()
        self._lock = threading.Lock()

    def have(self, workflow_id: str) -> int:
        """How many messages of ``workflow_id`` are held (the script's ``have``)."""
        with self._lock:
            held = self._held.get(workflow_id)
        return len(held[0]) if held else 0

    def merge(self, workflow_id: str, start: int, texts: list[str]) -> list[dict[str, Any]] | None:
        """The turn's messages, from ``texts`` (the stored list from index ``start`` on)
        and the copy held; None when the copy does not match (the caller reads the turn
        another way). The result is a new list: callers may not change the dicts in it."""
        with self._lock:
            held = self._held.get(workflow_id)
        if start == 0:
            messages = [json.loads(text) for text in texts]
        elif held is not None and len(held[0]) == start + 1 and texts and texts[0] == held[1]:
            messages = held[0] + [json.loads(text) for text in texts[1:]]
        else:
            self.forget(workflow_id)
            return None
        with self._lock:
            if texts:
                self._held[workflow_id] = (messages, texts[-1])
                self._held.move_to_end(workflow_id)
                while len(self._held) > self.capacity:
                    self._held.popitem(last=False)
            else:
                self._held.pop(workflow_id, None)
        return list(messages)

    def forget(self, workflow_id: str) -> None:
        """Drop the copy of ``workflow_id`` (its turn ended)."""
        with self._lock:
            self._held.pop(workflow_id, None)
