"""The run inspector (``/ui/``) in a real Chromium, against real workers and the real web app.

Issue 12: the list shows a new run live; a run page shows the Paris turn's steps in
order; approving a tool call from the page completes the turn; Terminate asks first;
markup in a tool result is text; with a token the pages need a sign-in; a run page keeps
following its run across a restart of the web process.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent_platform.processes import free_port
from agent_platform.testing import delay, streamed, text, tool_call

from .browser import chromium, chromium_missing
from .helpers import WebServer, create_web_app
from .ops_helpers import Proc, process_env, wait_http
from .workers import REPO

AGENT_APP = "tests.agents:travel_buddy,tests.agents_inspector:note_keeper"
FLOWER = "http://flower.example:5555"
PLATFORM_ENV = {"FLOWER_URL": FLOWER}
PARIS = "I want to find flights to Paris"
TOKEN = "inspector-test-token"

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def paris_script(model: Any, first_delay: float = 0.0) -> None:
    """The TravelBuddy turn: search_flights(Paris), then an answer."""
    first = tool_call("search_flights", {"destination": "Paris"})
    model.add(delay(first_delay, first) if first_delay else first, text("GlobalWings flies to Paris for $375.50."))


def start(api: Any, task: str, agent: str = "TravelBuddy", session_id: str | None = None) -> str:
    return api.start_turn(task, session_id=session_id, agent=agent)


def run_url(api: Any, workflow_id: str) -> str:
    return f"{api.base_url}/ui/workflows/{workflow_id}"


def step_rows(page: Any) -> list[tuple[int, str]]:
    """(seq, kind) of every step card on the page, in page order."""
    return [
        (int(card.get_attribute("data-seq")), card.get_attribute("class").split()[1].removeprefix("k-"))
        for card in page.locator("article.step").all()
    ]


def test_list_shows_a_new_run_within_two_seconds_without_reload(page: Any, api: Any, model: Any) -> None:
    page.goto(f"{api.base_url}/ui/")
    expect(page.locator("h1")).to_have_text("Workflows")
    expect(page.locator("[data-live]")).to_have_text("live")
    paris_script(model)
    page.evaluate("window.__same_document = true")  # gone if the page reloads
    workflow_id = start(api, PARIS)
    row = page.locator(f'tr[data-workflow="{workflow_id}"]')
    expect(row).to_be_visible(timeout=2_000)
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=20_000)
    assert page.evaluate("window.__same_document") is True
    expect(page.locator('[data-count="COMPLETED"] b')).to_have_text("1")
    page.select_option("select[name=status]", "FAILED")
    page.click("form.filters button")
    expect(page.locator("td.empty")).to_contain_text("No workflow matches")


def test_run_page_follows_the_paris_turn_live_in_order_with_the_tool_result(page: Any, api: Any, model: Any) -> None:
    problems: list[str] = []  # script errors and Content-Security-Policy violations
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    paris_script(model, first_delay=1.5)
    workflow_id = start(api, PARIS)
    page.goto(run_url(api, workflow_id))
    status = page.locator("[data-region=head] [data-status]")
    expect(status).to_have_text("COMPLETED", timeout=30_000)  # no reload: the event stream
    expect(page.locator("article.step")).to_have_count(5)
    assert step_rows(page) == [(0, "start"), (1, "llm"), (2, "tool"), (3, "llm"), (4, "finish")]
    tool = page.locator("#step-2")
    expect(tool.locator(".f-arguments")).to_contain_text('"destination": "Paris"')
    expect(tool.locator(".f-result")).to_contain_text("SkyHighAir")
    expect(tool.locator(".f-result")).to_contain_text("375.5")
    expect(page.locator("#step-4 .f-output")).to_contain_text("GlobalWings flies to Paris")
    # The second model call was sent the tool's result, rebuilt as the engine builds it.
    page.click("#s3-sent > summary")
    sent = page.locator("#s3-sent .msg")
    expect(sent).to_have_count(4)
    expect(sent.nth(3)).to_have_class("msg role-tool")
    expect(sent.nth(3)).to_contain_text("SkyHighAir")
    expect(sent.nth(1)).to_contain_text(PARIS)
    # One waterfall bar per step, and each step names its Celery task, linked to Flower.
    expect(page.locator(".wf-row")).to_have_count(5)
    link = page.locator("#step-2 dd a[href*='/task/']")
    assert link.get_attribute("href").startswith(f"{FLOWER}/task/")
    task_id = link.inner_text().strip(" ↗")
    assert task_id == api.steps(workflow_id)[2]["task_id"]
    # A finished run offers Purge only.
    expect(page.locator(".actions summary.btn")).to_have_text(["Purge"])
    assert problems == []


def test_run_page_shows_the_answer_as_it_is_written(page: Any, api: Any, model: Any) -> None:
    """Issue 14: the page shows the model's text growing (token events), then the step."""
    answer = "GlobalWings flies to Paris for $375.50, SkyHighAir for $450.00."
    gate = threading.Event()
    try:
        model.add(
            tool_call("search_flights", {"destination": "Paris"}),
            streamed(text(answer), chunk_chars=3, hold=gate, hold_after=8),  # 7 pieces, then held
        )
        workflow_id = start(api, PARIS)
        page.goto(run_url(api, workflow_id))
        box = page.locator("[data-writing]")
        expect(box.locator("[data-writing-text]")).to_have_text(answer[:21], timeout=20_000)
        expect(box).to_be_visible()
        expect(box.locator("[data-writing-step]")).to_have_text("step 3, attempt 1")
        expect(page.locator("article.step")).to_have_count(3)  # the answer's record is not written yet
        gate.set()
        expect(page.locator("[data-region=head] [data-status]")).to_have_text("COMPLETED", timeout=20_000)
        expect(box).to_be_hidden()  # the step's record holds the whole answer now
        expect(page.locator("#step-4 .f-output")).to_contain_text(answer)
    finally:
        gate.set()


def test_pages_read_and_act_with_javascript_off(browser: Any, api: Any, model: Any) -> None:
    paris_script(model)
    workflow_id = start(api, PARIS)
    api.wait_status(workflow_id, ["COMPLETED"])
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(run_url(api, workflow_id))
        expect(page.locator("[data-region=head] [data-status]")).to_have_text("COMPLETED")
        assert step_rows(page) == [(0, "start"), (1, "llm"), (2, "tool"), (3, "llm"), (4, "finish")]
        expect(page.locator("#step-2 .f-result")).to_contain_text("SkyHighAir")
        page.click("#act-purge > summary")  # <details>: the confirmation needs no script
        page.click("#act-purge button[type=submit]")
        expect(page.locator(".notice.ok")).to_contain_text(f"Workflow {workflow_id} was purged.")
        expect(page.locator(f'tr[data-workflow="{workflow_id}"]')).to_have_count(0)
        assert api.http.get(f"/workflows/{workflow_id}").status_code == 404
    finally:
        context.close()


def test_a_tool_call_needing_approval_shows_approve_and_deny_and_approving_completes(
    page: Any, api: Any, model: Any
) -> None:
    model.add(tool_call("publish_note", {"text": "Ship it"}), text("Published your note."))
    workflow_id = start(api, "Publish: Ship it", agent="NoteKeeper")
    page.goto(run_url(api, workflow_id))
    pending = page.locator(".pending")
    expect(pending).to_contain_text("Approval needed", timeout=20_000)
    expect(pending).to_contain_text("publish_note")
    expect(pending.locator("summary.btn")).to_have_text(["Approve", "Deny"])
    expect(page.locator(".actions summary", has_text="Resume")).to_have_count(0)
    page.click("#act-approve > summary")
    page.click("#act-approve button[type=submit]")
    expect(page.locator("[data-region=head] [data-status]")).to_have_text("COMPLETED", timeout=20_000)
    expect(page.locator(".notice.ok")).to_have_text("Approved: the tool call runs.")
    expect(page.locator("article.step.k-tool .f-result")).to_contain_text('"published": "Ship it"')
    assert api.status(workflow_id)["output"] == "Published your note."


def test_a_pending_event_shows_its_name_and_a_form_for_its_json_payload(page: Any, api: Any, model: Any) -> None:
    model.add(tool_call("Archivist", {"task": "Find the 2019 notes"}), text("The archive has 3 notes from 2019."))
    workflow_id = start(api, "What did we note in 2019?", agent="NoteKeeper")
    pending = api.wait_status(workflow_id, ["SUSPENDED"])["pending_event"]
    page.goto(run_url(api, workflow_id))
    box = page.locator(".pending")
    expect(box).to_contain_text(f"Waiting for event {pending['name']}")
    expect(box).to_contain_text("from Archivist")
    page.click("#act-raise > summary")
    page.fill("#act-raise textarea[name=payload]", '{"result": "3 notes from')  # not JSON
    page.click("#act-raise button[type=submit]")
    expect(page.locator(".error-page")).to_contain_text("the payload is not valid JSON")
    assert api.status(workflow_id)["runtime_status"] == "SUSPENDED"
    page.go_back()
    page.click("#act-raise > summary")
    page.fill("#act-raise textarea[name=payload]", '{"result": "3 notes from 2019"}')
    page.click("#act-raise button[type=submit]")
    expect(page.locator("[data-region=head] [data-status]")).to_have_text("COMPLETED", timeout=20_000)
    expect(page.locator("article.step.k-tool .f-result")).to_contain_text("3 notes from 2019")


def test_terminate_asks_for_confirmation_then_reads_terminated(page: Any, api: Any, model: Any) -> None:
    model.add(tool_call("publish_note", {"text": "never"}))
    workflow_id = start(api, "Publish: never", agent="NoteKeeper")
    api.wait_status(workflow_id, ["SUSPENDED"])
    page.goto(run_url(api, workflow_id))
    page.click("#act-terminate > summary")
    confirm = page.locator("#act-terminate button[type=submit]")
    expect(confirm).to_be_visible()
    expect(confirm).to_have_text("Yes, terminate")
    assert api.status(workflow_id)["runtime_status"] == "SUSPENDED"  # nothing happened yet
    page.fill("#act-terminate textarea[name=reason]", "not today")
    confirm.click()
    expect(page.locator("[data-region=head] [data-status]")).to_have_text("TERMINATED")
    expect(page.locator(".summary")).to_contain_text("Terminated: not today")
    assert api.status(workflow_id)["runtime_status"] == "TERMINATED"
    expect(page.locator(".actions summary.btn")).to_have_text(["Purge"])
    # Same rules as the API: without the page's CSRF token a POST is refused before any
    # rule; with it, terminating again is a 409 that names the status.
    url = f"{api.base_url}/ui/workflows/{workflow_id}/terminate"
    assert page.request.post(url).status == 403
    token = page.locator("#act-purge input[name=csrf_token]").get_attribute("value")
    again = page.request.post(url, form={"csrf_token": token})
    assert again.status == 409
    assert "TERMINATED" in again.text()


def test_a_tool_result_holding_script_renders_as_text(page: Any, api: Any, model: Any) -> None:
    payload = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    model.add(tool_call("save_note", {"text": payload}), text(f"Saved {payload}"))
    workflow_id = start(api, f"Save {payload}", agent="NoteKeeper")
    api.wait_status(workflow_id, ["COMPLETED"])
    for url in (run_url(api, workflow_id), f"{api.base_url}/ui/"):
        page.goto(url)
        expect(page.locator("main")).to_contain_text("<script>window.__xss = 1</script>")
        if url != f"{api.base_url}/ui/":
            result = page.locator("article.step.k-tool .f-result")
            expect(result).to_contain_text('<img src=x onerror=\\"window.__xss = 2\\">')
        assert page.evaluate("window.__xss") is None
        assert page.locator("main script, main img").count() == 0


def test_with_a_token_a_page_without_the_cookie_is_the_sign_in_form(
    page: Any, api: Any, model: Any, platform: Any
) -> None:
    paris_script(model)
    workflow_id = start(api, PARIS)
    api.wait_status(workflow_id, ["COMPLETED"])
    settings = platform.runtime.settings.with_(api_token=TOKEN)
    web = WebServer(create_web_app({"SETTINGS": settings}))
    try:
        base = web.base_url
        response = page.goto(f"{base}/ui/workflows/{workflow_id}")
        assert response.status == 401
        expect(page.locator("h1")).to_have_text("Sign in")
        expect(page.locator("article.step")).to_have_count(0)
        assert httpx.get(f"{base}/workflows/{workflow_id}").status_code == 401
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        expect(page.locator(".notice.bad")).to_have_text("That is not the API token.")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{base}/ui/workflows/{workflow_id}")
        expect(page.locator("article.step")).to_have_count(5)
        cookie = next(c for c in page.context.cookies() if c["name"] == "agent_platform_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # The cookie reads (the run page's event stream) but never writes through the API.
        cookies = {"agent_platform_token": TOKEN}
        assert httpx.get(f"{base}/workflows/{workflow_id}", cookies=cookies).status_code == 200
        assert httpx.delete(f"{base}/workflows/{workflow_id}", cookies=cookies).status_code == 401
        # An action needs the CSRF token of the page, not only the cookie.
        forged = httpx.post(f"{base}/ui/workflows/{workflow_id}/purge", cookies=cookies)
        assert forged.status_code == 403
        page.click("text=Sign out")
        expect(page.locator("h1")).to_have_text("Sign in")
        page.goto(f"{base}/ui/")
        expect(page.locator("h1")).to_have_text("Sign in")
    finally:
        web.stop()


def test_agents_page_lists_the_registry_and_its_form_opens_the_new_run(page: Any, api: Any, model: Any) -> None:
    page.goto(f"{api.base_url}/ui/agents")
    row = page.locator('tr[data-agent="NoteKeeper"]')
    expect(row).to_contain_text("save_note")
    expect(row).to_contain_text("agent.NoteKeeper")
    expect(row.locator(".live-badge")).to_have_text("live", timeout=20_000)  # the worker's heartbeat
    paris_script(model)
    page.select_option("select[name=agent]", "TravelBuddy")
    page.fill("input[name=session_id]", "from-the-form")
    page.fill("textarea[name=task]", PARIS)
    page.click(".start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/workflows/[0-9a-f]{32}$"))
    expect(page.locator("[data-region=head] [data-status]")).to_have_text("COMPLETED", timeout=20_000)
    workflow_id = page.url.rsplit("/", 1)[1]
    assert api.status(workflow_id)["session_id"] == "from-the-form"
    # A bad form is a clear error page, and nothing starts.
    page.goto(f"{api.base_url}/ui/agents")
    page.fill("textarea[name=task]", PARIS)
    page.evaluate("document.querySelector('input[name=session_id]').removeAttribute('pattern')")
    page.fill("input[name=session_id]", "no spaces allowed")
    page.click(".start button[type=submit]")
    expect(page.locator(".error-page")).to_contain_text("session_id")
    assert len(api.http.get("/workflows").json()["workflows"]) == 1


def test_ui_off_serves_no_page_and_the_api_stays(platform: Any, api: Any) -> None:
    web = WebServer(create_web_app({"SETTINGS": platform.runtime.settings.with_(ui=False)}))
    try:
        assert httpx.get(f"{web.base_url}/ui/").status_code == 404
        assert httpx.get(f"{web.base_url}/ui/static/ui.js").status_code == 404
        assert httpx.get(f"{web.base_url}/workflows").status_code == 200
    finally:
        web.stop()


def test_run_page_keeps_updating_after_the_web_process_restarts(
    page: Any, api: Any, model: Any, platform: Any, tmp_path: Any
) -> None:
    model.add(tool_call("publish_note", {"text": "after restart"}), text("Published after the restart."))
    port = free_port()
    env = process_env({**{k: v for k, v in platform.env.items() if v is not None}, "PYTHONPATH": str(REPO)})
    argv = [
        sys.executable, "-m", "gunicorn", "web:create_app()", "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread", "--threads", "8", "--workers", "1",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    web = Proc(argv, env, tmp_path / "web-1.log")
    try:
        wait_http(f"{base}/health")
        workflow_id = start(api, "Publish: after restart", agent="NoteKeeper")
        page.goto(f"{base}/ui/workflows/{workflow_id}")
        expect(page.locator(".pending")).to_contain_text("Approval needed", timeout=20_000)
        live = page.locator("[data-live]")
        expect(live).to_have_text("live")
        before = step_rows(page)
        os.killpg(web.pid, signal.SIGKILL)  # the web process dies
        web.stop()
        expect(live).to_have_text("reconnecting…")
        web = Proc(argv, env, tmp_path / "web-2.log")
        wait_http(f"{base}/health")
        expect(live).to_have_text("live", timeout=20_000)  # the event stream is back
        response = httpx.post(
            f"{base}/workflows/{workflow_id}/raise-event/{api.status(workflow_id)['pending_event']['name']}",
            json={"approved": True},
        )
        assert response.status_code == 202, response.text
        expect(page.locator("[data-region=head] [data-status]")).to_have_text("COMPLETED", timeout=20_000)
        rows = step_rows(page)
        assert rows[: len(before)] == before
        seqs = [seq for seq, _ in rows]
        assert len(seqs) == len(set(seqs)), f"duplicate rows: {rows}"
        assert sorted(seqs) == [s["seq"] for s in api.steps(workflow_id)]
        assert [kind for _, kind in rows][-3:] == ["tool", "llm", "finish"]
    finally:
        web.stop()
