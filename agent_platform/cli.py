"""The ``agent-platform`` command (click, as Flask and Celery use).

Launcher: it may import ``tasks`` and ``web``, lazily, inside the commands.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from typing import Any

import click
import redis

from .errors import AgentPlatformError
from .status import public_status


def _use_app(app: str | None) -> None:
    if app:
        os.environ["AGENT_APP"] = app


def _runtime() -> Any:
    from tasks import get_app

    return get_app().runtime


def _load_dotenv(path: str = ".env") -> None:
    """Read ``.env`` like ``honcho start`` does (honcho's parser); variables already set
    in the environment win."""
    if not os.path.isfile(path):
        return
    from honcho.environ import parse

    with open(path) as handle:
        for name, value in parse(handle.read()).items():
            os.environ.setdefault(name, value)


def _choose_agent(rt: Any, agent: str | None) -> str:
    if agent:
        rt.agent(agent)
        return agent
    if len(rt.agents) != 1:
        raise click.UsageError(f"APP loads several agents ({', '.join(rt.agents)}): name one with --agent")
    return next(iter(rt.agents))


def _exec(argv: list[str]) -> None:
    """Replace this process with ``argv`` (signals then reach the real server directly)."""
    click.echo("+ " + " ".join(argv), err=True)
    os.execvp(argv[0], argv)


class _Group(click.Group):
    """Reports an unreachable Redis as one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.exceptions.ConnectionError as exc:
            raise click.ClickException(
                f"cannot reach Redis: {exc} (set REDIS_URL, or the components in AGENT_PLATFORM_COMPONENTS_PATH)"
            ) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agent-platform")
def main() -> None:
    """Durable AI agents on Celery and Redis.

    Reads ``.env`` in the current folder (as ``honcho start`` does) without overriding
    variables already set.
    """
    _load_dotenv()


@main.command()
@click.argument("app", required=False)
@click.option("--task", "-t", required=True, help="The user's message for this turn.")
@click.option("--session", "session_id", default=None, help="Conversation session id.")
@click.option("--agent", default=None, help="Agent name when APP loads several.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
@click.option("--tokens/--no-tokens", default=True, show_default=True, help="Show the model's text as it is written.")
def run(
    app: str | None, task: str, session_id: str | None, agent: str | None, timeout: float, as_json: bool, tokens: bool
) -> None:
    """Start a turn of APP (module:attribute; default $AGENT_APP), print each step as it is
    checkpointed, then the answer. Needs a running worker. Exit 1 unless COMPLETED.

    The model's text is shown on stderr as it is written (stdout holds the steps)."""
    _use_app(app)
    try:
        rt = _runtime()
        name = _choose_agent(rt, agent)
        wf, _ = rt.start_workflow(name, task, session_id=session_id)
        click.echo(f"workflow {wf} started (agent {name})", err=True)
        if rt.settings.ui:
            click.echo(f"run page: {run_page_url(rt.settings, wf)}", err=True)
        store = rt.store_for(name)
        _print_live(store, wf, -1, tokens, timeout)
        status = public_status(store.state(wf))
    except (AgentPlatformError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_final(status, as_json)
    sys.exit(0 if status["runtime_status"] == "COMPLETED" else 1)


def _print_live(store: Any, workflow_id: str, after: int, tokens: bool, timeout: float | None = None) -> None:
    """The steps on stdout, the model's text on stderr as it is written, until the workflow ends."""
    from .timeline import print_live

    print_live(store, workflow_id, after, tokens, timeout, live=sys.stderr)


def run_page_url(settings: Any, workflow_id: str) -> str:
    """The inspector's page of a workflow: ``<web_url>/ui/workflows/<id>``, where the web
    URL is ``AGENT_PLATFORM_WEB_URL``, else ``http://localhost:$PORT`` (8000, as the Procfile)."""
    base = settings.web_url or f"http://localhost:{os.environ.get('PORT') or '8000'}"
    return f"{base.rstrip('/')}/ui/workflows/{workflow_id}"


def _print_final(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(f"status: {status['runtime_status']}")
    if status.get("failure_details"):
        details = status["failure_details"]
        click.echo(f"failure: {details.get('type')}: {details.get('message')} (step {details.get('step')})")
    if status.get("output") is not None:
        click.echo(f"answer: {status['output']}")


@main.command()
@click.argument("workflow_id")
@click.option("--app", default=None, help="module:attribute (default $AGENT_APP).")
def status(workflow_id: str, app: str | None) -> None:
    """Print a workflow's status as JSON."""
    _use_app(app)
    try:
        rt = _runtime()
        click.echo(json.dumps(public_status(rt.find_store(workflow_id).state(workflow_id)), indent=2))
    except AgentPlatformError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("workflow_id")
@click.option("--app", default=None, help="module:attribute (default $AGENT_APP).")
@click.option("--after", default=-1, help="Print steps after this sequence number.")
@click.option("--tokens/--no-tokens", default=True, show_default=True, help="Show the model's text as it is written.")
def tail(workflow_id: str, app: str | None, after: int, tokens: bool) -> None:
    """Follow a workflow's steps until it ends (the model's text on stderr as it is written)."""
    _use_app(app)
    try:
        store = _runtime().find_store(workflow_id)
        _print_live(store, workflow_id, after, tokens)
        _print_final(public_status(store.state(workflow_id)), False)
    except AgentPlatformError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--app", default=None, help="module:attribute (default $AGENT_APP).")
@click.pass_context
def worker(ctx: click.Context, app: str | None) -> None:
    """``celery -A tasks worker`` with APP loaded (extra arguments pass through)."""
    _use_app(app)
    concurrency = os.environ.get("WORKER_CONCURRENCY", "2")
    _exec(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            concurrency,
            *ctx.args,
        ]
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--app", default=None, help="module:attribute (default $AGENT_APP).")
@click.option("--bind", default=None, help="host:port (default 0.0.0.0:$PORT or :8000).")
@click.pass_context
def web(ctx: click.Context, app: str | None, bind: str | None) -> None:
    """``gunicorn "web:create_app()"`` as the Procfile runs it (web/gunicorn.conf.py):
    $WEB_CONCURRENCY gevent worker processes of $WEB_CONNECTIONS connections each
    (extra arguments pass through to gunicorn)."""
    from .processes import gunicorn_command

    _use_app(app)
    _exec(gunicorn_command(*(["--bind", bind] if bind else []), *ctx.args))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--app", default=None, help="module:attribute (default $AGENT_APP).")
@click.pass_context
def flower(ctx: click.Context, app: str | None) -> None:
    """``celery -A tasks flower`` on $FLOWER_ADDRESS (default 127.0.0.1) and $FLOWER_PORT,
    with basic auth from $FLOWER_BASIC_AUTH (``user:password``, comma-separated for several).

    Refuses to start (one line naming FLOWER_BASIC_AUTH) when the dashboard would listen
    on another address without authentication, or with a well-known password.
    """
    _use_app(app)
    argv = flower_options(os.environ)
    if not os.environ.get("FLOWER_BASIC_AUTH", "").strip():
        os.environ.pop("FLOWER_BASIC_AUTH", None)  # Flower reads FLOWER_* itself: "" would mean user ""
    _exec([sys.executable, "-m", "celery", "-A", "tasks", "flower", *argv, *ctx.args])


#: Passwords of examples and old defaults (ours was ``admin:change-me``): refused.
WELL_KNOWN_PASSWORDS = frozenset({"change-me", "changeme", "admin", "password", "flower", "secret"})


def flower_options(env: Any) -> list[str]:
    """Flower's ``--address`` and ``--port`` from the environment, once FLOWER_BASIC_AUTH
    (which Flower reads from the environment itself) is checked.

    Raises:
        click.ClickException: FLOWER_BASIC_AUTH is malformed or uses a well-known password,
            or it is unset while FLOWER_ADDRESS is not a loopback address (and no
            FLOWER_AUTH, Flower's OAuth, is set).
    """
    address = (env.get("FLOWER_ADDRESS") or "127.0.0.1").strip()
    auth = (env.get("FLOWER_BASIC_AUTH") or "").strip()
    for pair in filter(None, auth.split(",")):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise click.ClickException("FLOWER_BASIC_AUTH must be user:password (comma-separated for several)")
        if password.lower() in WELL_KNOWN_PASSWORDS:
            raise click.ClickException(f"FLOWER_BASIC_AUTH gives {user!r} a well-known password: choose your own")
    if not auth and not env.get("FLOWER_AUTH") and not _is_loopback(address):
        raise click.ClickException(
            f"FLOWER_BASIC_AUTH is not set: Flower would be open to anyone on FLOWER_ADDRESS={address}; "
            "set FLOWER_BASIC_AUTH=user:password or keep FLOWER_ADDRESS=127.0.0.1"
        )
    # The credentials stay in FLOWER_BASIC_AUTH, which Flower reads itself: on the command
    # line they would show in `ps` and in the "+ celery ..." line this command logs.
    return [f"--address={address}", f"--port={env.get('FLOWER_PORT') or '5555'}"]


def _is_loopback(address: str) -> bool:
    if address.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "": it may well be reachable from elsewhere


@main.command()
@click.option("--app", default=None, help="module:attribute (default $AGENT_APP).")
@click.option("--agent", "agents", multiple=True, help="Subscribe only this agent (repeatable; default: all loaded).")
def bus(app: str | None, agents: tuple[str, ...]) -> None:
    """The message bus: turn messages on the agents' topics into workflow starts and events."""
    import logging

    from .bus.consumer import run_bus

    _use_app(app)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    try:
        run_bus(_runtime(), list(agents) or None)
    except AgentPlatformError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def components() -> None:
    """Component files (Dapr format)."""


@components.command("check")
@click.argument("path", required=False)
def components_check(path: str | None) -> None:
    """Validate a components folder; say which file and field is wrong (the files
    themselves: REDIS_URL, which overrides their hosts, does not hide a missing field)."""
    from .components import load_components, redis_target

    files_only = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    try:
        found = load_components(path)
        for name, component in sorted(found.items()):
            line = f"ok  {name:<24} {component.type:<20} {component.path}"
            if component.type in ("state.redis", "pubsub.redis"):
                redis_target(component, files_only)
                line += f"  {redis_target(component).redacted_url()}"
            click.echo(line)
        for name, component in sorted(found.skipped.items()):
            click.echo(f"--  {name:<24} {component.type:<20} {component.path} (not supported; skipped)")
    except AgentPlatformError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(found)} component(s) valid in {found.folder}")


@main.command()
@click.argument("app", required=False)
@click.option("--port", default=8001, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def dev(app: str | None, port: int, host: str) -> None:
    """Dev mode: embedded Redis and model when none is configured, a worker and the web app."""
    from .dev_service import run_dev
    from .runtime import load_agents

    _use_app(app)
    try:
        run_dev(load_agents(os.environ.get("AGENT_APP")), port=port, host=host)
    except AgentPlatformError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main()
