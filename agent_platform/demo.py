"""``python -m agent_platform.demo``: one TravelBuddy turn end to end, on the embedded defaults.

Starts dev mode (embedded Redis and local model unless REDIS_URL / OPENAI_* are set), sends
"I want to find flights to Paris" over HTTP, follows ``GET /workflows/<id>/events`` (the
model's text as it is written, each step as it is checkpointed), prints the answer, then
stops everything. Exit status 0 only when the turn is COMPLETED.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx

from .devmode import DevMode
from .follow import describe_step
from .sse import SseParser
from .timeline import LivePrinter, TimelineEvent

TASK = "I want to find flights to Paris"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    from examples.travel_planner import travel_planner  # the repository's example agent

    with DevMode([travel_planner], port=_port(), agent_app="examples.travel_planner:travel_planner") as dev:
        with httpx.Client(base_url=dev.base_url, timeout=30.0) as http:
            reply = http.post("/start-workflow", json={"task": TASK, "session_id": f"demo-{int(time.time())}"})
            reply.raise_for_status()
            wf = reply.json()["workflow_instance_id"]
            print(f"\nPOST /start-workflow {{'task': {TASK!r}}} -> 202, workflow {wf}\n", flush=True)
            status = _follow(http, wf)
            if status is None:
                print("the turn did not end within 300 s", file=sys.stderr)
                return 1
    print(f"\nstatus: {status['runtime_status']}")
    if status.get("failure_details"):
        print(f"failure: {status['failure_details']}")
    print(f"answer: {status.get('output')}")
    return 0 if status["runtime_status"] == "COMPLETED" else 1


def _follow(http: httpx.Client, wf: str, timeout: float = 300.0) -> dict[str, Any] | None:
    """Print the turn's events live (the model's text, the steps); return the final status,
    or None when the turn did not end within ``timeout`` seconds."""
    show = LivePrinter(describe_step)
    parser = SseParser()
    deadline = time.monotonic() + timeout
    # The server sends a comment every ~15 s while nothing happens: a read waits less than 60 s.
    with http.stream("GET", f"/workflows/{wf}/events", timeout=httpx.Timeout(30.0, read=60.0)) as response:
        response.raise_for_status()
        for piece in response.iter_bytes():
            for event in parser.feed(piece):
                data = json.loads(event.data)
                if event.event == "status":
                    return data
                if event.event == "stream_error":
                    print(f"event stream error: {data['error']['message']}", file=sys.stderr)
                    return http.get(f"/workflows/{wf}").json()
                show(TimelineEvent(event.event, data, event.id))
            if time.monotonic() > deadline:
                return None
    return None


def _port() -> int:
    from .processes import free_port

    return free_port()


if __name__ == "__main__":
    sys.exit(main())
