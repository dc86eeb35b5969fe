"""The runtime: settings, components, Redis connections, stores and the loaded agents.

One per process (worker, web, bus); built by a factory, never at import time.
"""

from __future__ import annotations

import logging
import os
import pkgutil
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .agent import AssistantAgent
from .broker import BrokerTarget, broker_target
from .components import ComponentSet, RedisTarget, default_redis_url, get_component, load_components, redis_target
from .connections import connect
from .engine.dispatch import Dispatcher, StepMessage, task_kind
from .engine.seam import FinishHook
from .errors import AgentNotFound, ConfigurationError, WorkflowNotFound
from .ids import new_workflow_id, validate_id
from .memory.base import SessionHistory
from .settings import Settings
from .store.workflows import WorkflowStore

log = logging.getLogger("agent_platform")


def load_agents(spec: str | None) -> list[AssistantAgent]:
    """Import the agents named by ``AGENT_APP`` (``module:attribute``, comma-separated).

    An attribute may be an agent or a list/tuple of agents.

    Raises:
        ConfigurationError: the spec is empty or malformed, or names no agent.
    """
    if not spec:
        raise ConfigurationError("AGENT_APP is not set: name the agent(s) as module:attribute")
    _importable_cwd()
    agents: list[AssistantAgent] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        module_name, _, attr = part.partition(":")
        if not module_name or not attr:
            raise ConfigurationError(f"AGENT_APP entry {part!r} is not module:attribute")
        try:
            value = pkgutil.resolve_name(part)
        except ImportError as exc:  # ModuleNotFoundError included: names the module
            raise ConfigurationError(f"AGENT_APP: cannot import {module_name!r}: {exc}") from exc
        except AttributeError as exc:
            raise ConfigurationError(f"AGENT_APP: {part}: {exc}") from exc
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not isinstance(item, AssistantAgent):
                raise ConfigurationError(f"AGENT_APP: {part} is not an agent (got {type(item).__name__})")
            agents.append(item)
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"AGENT_APP names two agents with one name: {names}")
    return agents


def _importable_cwd() -> None:
    """Let AGENT_APP name modules of the working directory, as ``flask --app`` does:
    ``celery``, ``flower`` and console scripts do not put it on ``sys.path``."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


class Runtime:
    """Everything a process needs to run or serve workflows.

    Args:
        settings: the settings (default: from the environment).
        agents: the agents (default: those named by ``settings.agent_app``).
        dispatcher: how steps are enqueued (the Celery layer's), or None in read-only use.
        worker: this process's name in step records (the Celery hostname).
        redis_timeout: None for patient Redis clients (workers, bus); else the seconds a
            Redis command may wait before it fails (the web app: a quick 503), see
            :func:`agent_platform.connections.redis_client`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        agents: list[AssistantAgent] | None = None,
        dispatcher: Dispatcher | None = None,
        worker: str = "",
        redis_timeout: float | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.agents = {a.name: a for a in (agents if agents is not None else load_agents(self.settings.agent_app))}
        self.dispatcher = dispatcher
        self.worker = worker
        self.redis_timeout = redis_timeout
        self.components: ComponentSet = load_components(self.settings.components_path)
        self._apply_model_component()
        self._clients: dict[RedisTarget, Any] = {}
        self._stores: dict[tuple[str, str], WorkflowStore] = {}
        self._histories: dict[str, SessionHistory] = {}
        self._lock = threading.Lock()
        #: Called as ``hook(runtime, state)`` once a workflow has its final status (after
        #: its session is freed): the callback POST, the response to a calling agent.
        self.finish_hooks: list[FinishHook] = []

    def _apply_model_component(self) -> None:
        """Give the agents' OpenAI clients the first ``conversation.openai`` component's
        values as defaults (below explicit arguments and the environment)."""
        model = next((c for c in self.components.values() if c.type == "conversation.openai"), None)
        if model is None:
            return
        for agent in self.agents.values():
            if hasattr(agent.llm, "component_defaults") and not agent.llm.component_defaults:
                agent.llm.component_defaults = dict(model.metadata)

    def close(self) -> None:
        """Close the Redis connections this runtime opened (it can open them again)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._stores.clear()
            self._histories.clear()
        for client in clients:
            client.close()

    # -- connections --------------------------------------------------------------------
    def target_for(self, store_name: str) -> RedisTarget:
        """Where a ``state.redis``/``pubsub.redis`` component points (URL, key prefix, topology).

        With no components folder at all, every store is the default Redis
        (``REDIS_URL`` or localhost) with no prefix.

        Raises:
            ComponentError: the folder exists but has no such Redis component, or the
                component is malformed.
        """
        env = _env(self.settings)
        if not self.components and not self.components.skipped:
            return RedisTarget(default_redis_url(env), "")
        component = get_component(self.components, store_name, ("state.redis", "pubsub.redis"))
        return redis_target(component, env)

    def redis_for(self, store_name: str) -> tuple[Any, str]:
        """``(client, key_prefix)`` for a component: a ``redis.Redis`` (one server, or the
        primary behind Sentinel) or a ``redis.cluster.RedisCluster``; one client per
        distinct target, shared by the components that name the same Redis."""
        target = self.target_for(store_name)
        identity = RedisTarget(target.url, "", target.topology, target.hosts, target.master_name)
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                client = self._clients[identity] = connect(target, self.redis_timeout)
        return client, target.key_prefix

    def broker(self) -> BrokerTarget:
        """The Celery broker (URL, kind, transport options): ``CELERY_BROKER_URL`` /
        ``AGENT_PLATFORM_BROKER_URL``, else the first agent's state store (see
        :func:`agent_platform.broker.broker_target`).

        Raises:
            ConfigurationError: no broker can be used (a Redis Cluster state store and no
                broker URL; a Sentinel URL without ``master_name``; bad transport options).
        """
        agent = next(iter(self.agents.values()), None)
        store = self.target_for(agent.state_store_name) if agent is not None else None
        return broker_target(self.settings, store or RedisTarget(default_redis_url(_env(self.settings)), ""))

    def broker_url(self) -> str:
        """The Celery broker's URL (see :meth:`broker`)."""
        return self.broker().url

    def store_for(self, agent: AssistantAgent | str) -> WorkflowStore:
        """The workflow store of an agent (shared by agents with the same component and key)."""
        agent = self.agent(agent) if isinstance(agent, str) else agent
        cache_key = (agent.state_store_name, agent.state_key)
        with self._lock:
            store = self._stores.get(cache_key)
        if store is None:
            client, prefix = self.redis_for(agent.state_store_name)
            store = WorkflowStore(client, prefix, agent.state_key)
            with self._lock:
                self._stores[cache_key] = store
        return store

    def history_for(self, agent: AssistantAgent) -> SessionHistory:
        """The agent's conversation memory bound to its store."""
        history = self._histories.get(agent.name)
        if history is None:
            history = self._histories[agent.name] = agent.memory.bind(self, agent.name)
        return history

    def agent(self, name: str) -> AssistantAgent:
        """A loaded agent by name.

        Raises:
            AgentNotFound: no agent of that name is loaded.
        """
        try:
            return self.agents[name]
        except KeyError:
            raise AgentNotFound(f"no agent {name!r} is loaded; loaded: {', '.join(self.agents)}") from None

    # -- workflows ----------------------------------------------------------------------
    def start_workflow(
        self,
        agent_name: str,
        task: str,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        workflow_id: str | None = None,
    ) -> tuple[str, bool]:
        """Create a turn and dispatch its ``start`` step when its session is free.

        Returns:
            ``(workflow_id, created)``; ``created`` is False for a repeated Idempotency-Key.

        Raises:
            AgentNotFound, ValidationError, IdempotencyConflict.
        """
        agent = self.agent(agent_name)
        session_id = validate_id(session_id or agent.default_session_id, "session_id")
        store = self.store_for(agent)
        wf_id, created = store.create(
            validate_id(workflow_id, "workflow id") if workflow_id else new_workflow_id(),
            agent.name,
            session_id,
            task,
            metadata=metadata,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
            due_in=self.settings.dispatch_grace,
        )
        if created:
            # Also when another turn of the session runs: the start step then waits
            # (PENDING) and heals a session whose head ended without leaving it.
            self.dispatch(StepMessage(agent.name, wf_id, task_kind("start"), 0))
        return wf_id, created

    def dispatch_many(self, messages: Sequence[StepMessage], countdown: float | None = None) -> None:
        """Enqueue several steps; parallel tool calls go as one group."""
        if len(messages) > 1 and self.dispatcher is not None:
            self.dispatcher.dispatch_group([(m, self._time_limit(m)) for m in messages], countdown=countdown)
            return
        for message in messages:
            self.dispatch(message, countdown=countdown)

    def _time_limit(self, message: StepMessage) -> float | None:
        if not message.tool:
            return None
        tool = self.agent(message.agent).tools.get(message.tool)
        return tool.timeout if tool is not None else None

    def dispatch(self, message: StepMessage, countdown: float | None = None) -> None:
        """Enqueue a step through the dispatcher, with the tool's time limit for tools.

        Raises:
            ConfigurationError: this runtime has no dispatcher.
        """
        if self.dispatcher is None:
            raise ConfigurationError("this process cannot dispatch steps (no Celery app)")
        self.dispatcher.dispatch(message, countdown=countdown, time_limit=self._time_limit(message))

    def find_store(self, workflow_id: str) -> WorkflowStore:
        """The store holding ``workflow_id`` among the loaded agents' stores.

        Raises:
            WorkflowNotFound: no store has it.
        """
        validate_id(workflow_id, "workflow id")
        for agent in self.agents.values():
            store = self.store_for(agent)
            if store.exists(workflow_id):
                return store
        raise WorkflowNotFound(f"no workflow {workflow_id!r}")

    def stores(self) -> list[WorkflowStore]:
        """The distinct stores of the loaded agents."""
        seen: dict[int, WorkflowStore] = {}
        for agent in self.agents.values():
            store = self.store_for(agent)
            seen[id(store)] = store
        return list(seen.values())


def _env(settings: Settings) -> dict[str, str]:
    import os

    env = dict(os.environ)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env
