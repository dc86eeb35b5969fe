"""Screenshots of the run inspector for the README, taken in Chromium.

    .venv/bin/python -m tests.inspector_screenshots [output folder, default docs/]

Starts what the tests start (a private redis-server, the scripted model, a Celery worker
and the web app), runs a few turns that end in every status, and saves
``inspector-list.png`` (the workflow list), ``inspector-run.png`` (the Paris turn) and
``inspector-approval.png`` (a tool call waiting for approval). Takes about 30 s.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from agent_platform.embedded_redis import EmbeddedRedis
from agent_platform.testing import ScriptedModel, delay, error, text, tool_call, tool_calls

from .browser import chromium
from .helpers import platform_env, running_platform
from .workers import REPO

AGENT_APP = "tests.agents:travel_buddy,tests.agents_inspector:note_keeper"
PARIS = "I want to find flights to Paris"


def run_turns(api: Any, model: Any) -> dict[str, str]:
    """Turns in every status; returns the ids of the ones the screenshots show."""

    def turn(task: str, session: str, agent: str = "TravelBuddy", status: tuple[str, ...] = ("COMPLETED",)) -> str:
        workflow_id = api.start_turn(task, session_id=session, agent=agent)
        api.wait_status(workflow_id, status)
        return workflow_id

    model.add(delay(0.4, error(400, None)))
    turn("Book the cheapest flight to Atlantis", "bob", status=("FAILED",))
    model.add(
        delay(
            0.7, tool_calls(("search_flights", {"destination": "Tokyo"}), ("search_flights", {"destination": "Osaka"}))
        ),
        delay(0.9, text("To Tokyo and Osaka: GlobalWings from $375.50, SkyHighAir from $450.00.")),
    )
    turn("Flights to Tokyo or Osaka, whichever is cheaper", "alice")
    model.add(tool_call("publish_note", {"text": "Deploy freeze lifted"}))
    stopped = turn("Publish: Deploy freeze lifted", "ops-7", agent="NoteKeeper", status=("SUSPENDED",))
    api.http.post(f"/workflows/{stopped}/terminate", json={"reason": "published by hand"})
    model.add(delay(0.5, tool_call("save_note", {"text": "Renew the TLS certificate on Friday"})), text("Saved."))
    turn("Note: renew the TLS certificate on Friday", "ops-7", agent="NoteKeeper")
    model.add(
        delay(0.8, tool_call("search_flights", {"destination": "Paris"})),
        delay(1.1, text("I found two flights to Paris: GlobalWings at $375.50 and SkyHighAir at $450.00.")),
    )
    paris = turn(PARIS, "alice")
    model.add(delay(0.3, tool_call("publish_note", {"text": "Maintenance window: Sunday 02:00-04:00 UTC"})))
    waiting = turn("Publish the maintenance window", "ops-7", agent="NoteKeeper", status=("SUSPENDED",))
    model.add(delay(60, text("...")))
    api.start_turn("Flights to Lisbon next week", session_id="carol", agent="TravelBuddy")
    return {"paris": paris, "waiting": waiting}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else REPO / "docs"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ScriptedModel() as model:
        redis = EmbeddedRedis(data_dir=Path(tmp) / "redis").start()
        try:
            env = platform_env(redis.url, model.base_url, AGENT_APP, FLOWER_URL="http://localhost:5555")
            with running_platform(env, Path(tmp) / "workers") as platform, chromium() as browser:
                api = platform.api
                ids = run_turns(api, model)
                page = browser.new_page(viewport={"width": 1280, "height": 560}, device_scale_factor=1)
                page.goto(f"{api.base_url}/ui/")
                page.wait_for_selector("tr[data-workflow]")
                page.screenshot(path=str(out / "inspector-list.png"))
                page.set_viewport_size({"width": 1280, "height": 900})
                page.goto(f"{api.base_url}/ui/workflows/{ids['paris']}")
                page.click("#s3-sent > summary")
                page.screenshot(path=str(out / "inspector-run.png"), full_page=True)
                page.goto(f"{api.base_url}/ui/workflows/{ids['waiting']}")
                page.click("#act-deny > summary")
                page.screenshot(
                    path=str(out / "inspector-approval.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 800}
                )
                # Let the waiting turn end, so that the page's event stream ends before the web app stops.
                model.add(text("The note was not published."))
                pending = api.status(ids["waiting"])["pending_event"]["name"]
                api.http.post(f"/workflows/{ids['waiting']}/raise-event/{pending}", json={"approved": False})
                api.wait_status(ids["waiting"])
                page.wait_for_selector("[data-live].ended")
                page.close()
        finally:
            redis.stop()
    print(f"saved inspector-list.png, inspector-run.png and inspector-approval.png in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
