"""Field cases of the web side (issue 10): C16 hostile request bodies, C20 callbacks aimed
at internal addresses, C21 Flower's default credentials, and the cap on events a
workflow holds without waiting for them.

Real workers, real Redis, real HTTP; C16 drives the Procfile's ``web`` line through
gunicorn as ops run it, C21 the Procfile's ``flower`` line through honcho with the
``.env.example`` as it is.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from honcho.environ import parse as parse_dotenv

from agent_platform.processes import free_port
from agent_platform.testing import ScriptedModel, text, tool_call

from .helpers import Api, Platform
from .ops_helpers import (
    CallbackReceiver,
    Proc,
    dotenv,
    listening_addresses,
    process_env,
    read_until_closed,
    shell_procfile_line,
    slow_body_connection,
    trickling_body_connection,
    wait_http,
)
from .workers import REPO, apply_env, wait_until

AGENT_APP = "tests.agents_failures:ops_buddy"
#: The receivers these tests allow listen on 127.0.0.2; 127.0.0.1 stays refused.
PLATFORM_ENV = {"AGENT_PLATFORM_CALLBACK_ALLOW": "127.0.0.2/32", "AGENT_PLATFORM_LLM_BACKOFF": "0.05"}
BODY_TIMEOUT = 4.0  # AGENT_PLATFORM_BODY_TIMEOUT (10 s by default: README, "Limits and timeouts")
MAX_EVENTS = 32  # AGENT_PLATFORM_MAX_EVENTS_PER_WORKFLOW's default
JSON = {"Content-Type": "application/json"}


# -- C16: request bodies that are too big or too slow -------------------------------------


@pytest.fixture(scope="module")
def gunicorn_web(
    platform: Platform, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """The Procfile's ``web`` line as written (its settings: 2 gevent processes), on a
    Redis database no worker serves (a started turn stays PENDING). The body timeout is
    set shorter than its 10 s default, to keep the test short."""
    url = redis_server.url.rsplit("/", 1)[0] + "/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    env = apply_env(dict(platform.env), {"REDIS_URL": url, "AGENT_PLATFORM_BODY_TIMEOUT": str(BODY_TIMEOUT)})  # type: ignore[arg-type]
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "web.log"
    web = shell_procfile_line("web", process_env({k: v for k, v in env.items() if v} | {"PORT": str(port)}), log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        yield f"http://127.0.0.1:{port}", port
    finally:
        web.stop()
        print(web.log()[-3000:])


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):  # a generator: httpx sends Transfer-Encoding: chunked
        yield body[start : start + size]


def test_c16_a_chunked_body_over_the_limit_is_413_json_like_one_with_a_content_length(
    gunicorn_web: tuple[str, int], api: Api
) -> None:
    base, _ = gunicorn_web
    big = json.dumps({"task": "x" * 1_500_000}).encode()  # valid JSON, 1.5 MB
    with httpx.Client(base_url=base, timeout=30) as http:
        for server in (http, api.http):  # gunicorn as in the Procfile, and werkzeug's server
            chunked = server.post("/start-workflow", content=_chunks(big), headers=JSON)
            sized = server.post("/start-workflow", content=big, headers=JSON)
            for response in (chunked, sized):
                assert response.status_code == 413, response.text
                assert response.json()["error"]["code"] == "request_entity_too_large", response.text
        # a chunked body under the limit is read whole, not cut
        blob = "y" * 900_000
        body = json.dumps({"task": "Keep this", "metadata": {"blob": blob}}).encode()
        started = http.post("/start-workflow", content=_chunks(body), headers=JSON)
        assert started.status_code == 202, started.text
        status = http.get(f"/workflows/{started.json()['workflow_instance_id']}").json()
        assert status["metadata"] == {"blob": blob}


def _answers_within_a_second(http: httpx.Client) -> None:
    for method, path, body, expected in (
        ("GET", "/health", None, 200),
        ("POST", "/start-workflow", {"task": "hi"}, 202),
    ):
        began = time.monotonic()
        response = http.request(method, path, json=body)
        took = time.monotonic() - began
        assert response.status_code == expected, response.text
        assert took < 1.0, f"{method} {path} took {took:.2f} s while slow bodies hang (case C16: within 1 s)"


def test_c16_slow_bodies_do_not_stall_gunicorn_and_each_is_dropped_after_the_body_timeout(
    gunicorn_web: tuple[str, int],
) -> None:
    base, port = gunicorn_web
    opened = time.monotonic()
    first = [slow_body_connection(port) for _ in range(6)]
    with httpx.Client(base_url=base, timeout=10) as http:
        _answers_within_a_second(http)
        more = [slow_body_connection(port) for _ in range(194)]  # 200 in all, with the Procfile's settings
        _answers_within_a_second(http)
        _answers_within_a_second(http)
    for sock in first + more:
        data, closed_at = read_until_closed(sock, timeout=BODY_TIMEOUT + 20)
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:300]
        assert json.loads(body)["error"]["code"] == "request_timeout", body
        if sock in first:  # dropped after the documented timeout, not before
            assert BODY_TIMEOUT - 0.5 <= closed_at - opened <= BODY_TIMEOUT + 8, closed_at - opened


def test_c16_a_body_trickled_a_byte_at_a_time_is_cut_at_the_body_timeout(gunicorn_web: tuple[str, int]) -> None:
    """A byte every 0.5 s would restart a per-read socket timeout for ever (found by a
    break-it session: no answer after 25 s); the body timeout bounds the whole read."""
    _, port = gunicorn_web
    opened = time.monotonic()
    sock, stop = trickling_body_connection(port)
    try:
        data, closed_at = read_until_closed(sock, timeout=BODY_TIMEOUT + 20)
    except ConnectionResetError:  # bytes that came after the 408 were unread at close: TCP resets
        data, closed_at = b"", time.monotonic()
    finally:
        stop.set()
        sock.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:300]
    assert BODY_TIMEOUT - 0.5 <= closed_at - opened <= BODY_TIMEOUT + 3, closed_at - opened


# -- C20: completion callbacks aimed at internal addresses -------------------------------


@pytest.fixture
def loopback_receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver(host="127.0.0.1")  # not in the allowlist: must never be contacted
    yield server
    server.stop()


def test_c20_callback_urls_at_internal_addresses_are_refused_at_start(
    api: Api, redis_server: Any, loopback_receiver: CallbackReceiver
) -> None:
    port = loopback_receiver.port
    redis_port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    urls = [
        f"http://127.1:{port}/",
        f"http://2130706433:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://localhost.:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        f"http://127.0.0.1:{redis_port}/",  # the Redis of this deployment
        # variants of the same kind
        f"http://0x7f.0.0.1:{port}/",
        f"http://[::1]:{port}/",
        f"http://0.0.0.0:{port}/",
        f"http://LocalHost:{port}/",
        f"http://api.localhost:{port}/",
        "http://[fe80::1]/",
        "http://192.168.0.10/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
    ]
    for url in urls:
        response = api.http.post("/start-workflow", json={"task": "Call me back", "callback_url": url})
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "callback_url_not_allowed" and "AGENT_PLATFORM_CALLBACK_ALLOW" in error["message"]
    assert api.http.get("/workflows").json()["workflows"] == []  # nothing was started
    assert loopback_receiver.count() == 0


def test_c20_a_name_resolving_to_loopback_is_refused_when_the_callback_is_sent_and_not_retried(
    api: Api, model: ScriptedModel, platform: Platform, loopback_receiver: CallbackReceiver
) -> None:
    name = socket.gethostname()  # /etc/hosts maps it to 127.0.0.1 on these machines
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if not addresses or not all(a.startswith("127.") or a == "::1" for a in addresses):
        pytest.skip(f"this machine's host name {name!r} does not resolve to loopback ({addresses})")
    model.add(text("Done."))
    wf = api.start_turn("Call me back", session_id="c20-name", callback_url=f"http://{name}:{loopback_receiver.port}/")
    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"

    platform.stack.find_in_logs(rf"callback for {wf} not sent: callback host '{re.escape(name)}' resolves to 127\.")
    platform.stack.find_in_logs(r"Task agent_platform\.callback\[[\w-]+\] succeeded in [\d.e-]+s: 0")
    assert len(re.findall(rf"callback for {wf} not sent", platform.stack.logs())) == 1  # no retry
    assert loopback_receiver.count() == 0


def test_c20_an_allowed_receiver_is_called_and_its_redirect_to_loopback_is_not_followed(
    api: Api, model: ScriptedModel, platform: Platform, loopback_receiver: CallbackReceiver
) -> None:
    redirector = CallbackReceiver(host="127.0.0.2", redirect_to=f"http://127.0.0.1:{loopback_receiver.port}/")
    try:
        model.add(text("Done."))
        wf = api.start_turn("Call me back", session_id="c20-redirect", callback_url=redirector.url)
        assert api.wait_status(wf)["runtime_status"] == "COMPLETED"

        platform.stack.find_in_logs(rf"callback for {wf} answered 302; redirects are not followed")
        platform.stack.find_in_logs(r"Task agent_platform\.callback\[[\w-]+\] succeeded in [\d.e-]+s: 302")
        assert redirector.count() == 1
        post = redirector.posts[0]
        assert post["headers"]["Host"] == f"127.0.0.2:{redirector.port}" and post["json"]["instance_id"] == wf
        assert loopback_receiver.count() == 0
    finally:
        redirector.stop()


# -- events a workflow holds without waiting for them -----------------------------------


def test_event_names_nobody_waits_for_are_capped_at_32_and_the_awaited_event_still_passes(
    api: Api, model: ScriptedModel
) -> None:
    model.add(tool_call("wire_money", {"amount": 5, "to": "bob"}), text("Sent 5 to bob."))
    wf = api.start_turn("Pay bob 5", session_id="events-cap")
    pending = api.wait_status(wf, ["SUSPENDED"])["pending_event"]["name"]

    for n in range(MAX_EVENTS):
        response = api.http.post(f"/workflows/{wf}/raise-event/junk-{n}", json={"n": n})
        assert response.status_code == 202 and response.json()["woke"] is False, response.text
    for name in (f"junk-{MAX_EVENTS}", "junk-0"):  # a new name, and a stored one raised again
        response = api.http.post(f"/workflows/{wf}/raise-event/{name}", json={"n": -1})
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "too_many_events" and "AGENT_PLATFORM_MAX_EVENTS_PER_WORKFLOW=32" in error["message"]

    approval = api.http.post(f"/workflows/{wf}/raise-event/{pending}", json={"approved": True})
    assert approval.status_code == 202 and approval.json()["woke"] is True, approval.text
    assert api.wait_status(wf)["runtime_status"] == "COMPLETED"
    names = [s["data"].get("name") for s in api.steps(wf) if s["kind"] == "event"]
    assert len([n for n in names if str(n).startswith("junk-")]) == MAX_EVENTS  # one record each, none refused
    assert names[-1] == pending


# -- C21: Flower with the .env.example as it is -----------------------------------------


def test_c21_honcho_with_the_env_example_serves_flower_on_loopback_only(platform: Platform, tmp_path: Path) -> None:
    values = parse_dotenv((REPO / ".env.example").read_text())
    assert not values.get("FLOWER_BASIC_AUTH"), "the example must not ship a password"
    port = free_port()
    # only where this test's Redis and free port must go; the Flower lines stay as they are
    values |= {"REDIS_URL": platform.env["REDIS_URL"] or "", "FLOWER_PORT": str(port), "AGENT_APP": AGENT_APP}
    values |= {"AGENT_PLATFORM_COMPONENTS_PATH": platform.env["AGENT_PLATFORM_COMPONENTS_PATH"] or ""}
    (tmp_path / ".env").write_text(dotenv(values))
    argv = [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-e", str(tmp_path / ".env"), "flower"]
    honcho = Proc(argv, process_env({}), tmp_path / "honcho.log", cwd=REPO)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", timeout=60)
        assert listening_addresses(port) == {"0100007F"}, honcho.log()  # 127.0.0.1 and nothing else
        for user, password in (("admin", "change-me"), ("admin", "admin")):  # no default credentials
            response = httpx.get(f"http://127.0.0.1:{port}/api/workers", auth=(user, password), timeout=10)
            assert response.status_code == 401, response.text
    finally:
        honcho.stop()

    def flower(**env: str) -> Proc:
        changes = {**{k: v for k, v in platform.env.items() if v}, "FLOWER_PORT": str(free_port()), **env}
        return Proc([sys.executable, "-m", "agent_platform.cli", "flower"], process_env(changes), tmp_path / "f.log")

    for env, says in (
        ({"FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": ""}, "FLOWER_BASIC_AUTH is not set"),
        ({"FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": "admin:change-me"}, "well-known password"),
    ):
        proc = flower(**env)
        try:
            wait_until(lambda p=proc: not p.alive(), timeout=30, message="flower to refuse")  # type: ignore[misc]
            assert proc.returncode == 1
            lines = [line for line in proc.log().splitlines() if line.strip()]
            assert lines[-1].startswith("Error: FLOWER_BASIC_AUTH") and says in lines[-1], lines
        finally:
            proc.stop()
            (tmp_path / "f.log").unlink()
