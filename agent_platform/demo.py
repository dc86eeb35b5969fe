"""``python -m agent_platform.demo``: one TravelBuddy turn end to end, on the embedded defaults.

Starts dev mode (embedded Redis and local model unless REDIS_URL / OPENAI_* are set), sends
"I want to find flights to Paris" over HTTP, prints each step as it is checkpointed and the
answer, then stops everything. Exit status 0 only when the turn is COMPLETED.
"""

from __future__ import annotations

import sys
import time

import httpx

from .devmode import DevMode
from .follow import describe_step

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
            seen = -1
            deadline = time.monotonic() + 300
            while True:
                status = http.get(f"/workflows/{wf}").json()  # read before the steps: none is missed
                for record in http.get(f"/workflows/{wf}/steps").json()["steps"]:
                    if record["seq"] > seen:
                        seen = record["seq"]
                        print(describe_step(record), flush=True)
                if status["runtime_status"] in ("COMPLETED", "FAILED", "TERMINATED"):
                    break
                if time.monotonic() > deadline:
                    print("the turn did not end within 300 s", file=sys.stderr)
                    return 1
                time.sleep(0.2)
    print(f"\nstatus: {status['runtime_status']}")
    if status.get("failure_details"):
        print(f"failure: {status['failure_details']}")
    print(f"answer: {status.get('output')}")
    return 0 if status["runtime_status"] == "COMPLETED" else 1


def _port() -> int:
    from .processes import free_port

    return free_port()


if __name__ == "__main__":
    sys.exit(main())
