"""The bus process: turns messages on the agents' topics into workflow starts and events.

``agent-platform bus`` runs :func:`run_bus`: one consumer thread per loaded agent, each
reading the agent's own topic (its name) and the broadcast topic with the agent's
consumer group (Redis Streams, see :mod:`.streams`). For each message:

- ``TriggerAction`` (own topic): start a turn of the agent, whose workflow id is derived
  from the message id; ``metadata.reply_to`` says where its answer goes.
- ``AgentTaskResponse`` (own topic): raise the event the calling workflow waits for
  (``engine.control.raise_event``). An answer for a workflow that has ended (its wait
  timed out, or it was terminated) is acknowledged and dropped with one log line.
- ``BroadcastMessage`` (either topic): appended to the agent's memory (the message's
  session, else the agent's default session) as a user message ``[<sender>] <content>``,
  once per message id; an agent's own broadcasts are ignored.

A message is acknowledged only after its effect is stored (at-least-once; duplicates
are dropped by :mod:`.dedup`). Messages a dead consumer left pending are claimed with
``XAUTOCLAIM`` after ``bus_claim_idle`` seconds. Unreadable messages, unknown types and
messages naming unknown agents are acknowledged and dropped with a warning (no loop).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import redis

from .. import keys
from ..engine import control
from ..errors import AgentPlatformError, BusError, InvalidTransition, WorkflowNotFound
from ..supervision import fault_point, supervise
from .dedup import BUSY, DONE, Dedup, derived_workflow_id
from .messages import AgentTaskResponse, BroadcastMessage, CloudEvent, TriggerAction, parse_envelope
from .responses import install
from .streams import Delivery, StreamBus, bus_for

log = logging.getLogger("agent_platform.bus")

FAULT_BEFORE_ACK = "bus_exit_before_ack"
#: Consumers with nothing pending and idle this long (ms) are removed from their group.
FORGET_CONSUMER_MS = 24 * 3600 * 1000


class AgentConsumer(threading.Thread):
    """Consumes one agent's topic and the broadcast topic until ``stop`` is set.

    Args:
        runtime: the process's runtime (with a dispatcher: starts dispatch steps).
        agent: the subscribing agent (its name is the consumer group).
        consumer: this process's consumer name (unique per process).
        stop: set to end the loop (checked between two blocking reads).

    An unexpected error restarts the loop with a log line (``agent_platform.supervision``).
    """

    def __init__(self, runtime: Any, agent: Any, consumer: str, stop: threading.Event) -> None:
        super().__init__(name=f"bus-{agent.name}", daemon=True)
        self.runtime = runtime
        self.agent = agent
        self.consumer = consumer
        self.stop = stop
        settings = runtime.settings
        self.bus: StreamBus = bus_for(runtime, agent)
        self.broadcast = settings.bus_broadcast_topic
        self.topics = [agent.topic] + ([self.broadcast] if self.broadcast != agent.topic else [])
        self.claim_idle_ms = max(1, int(settings.bus_claim_idle * 1000))
        self.block_ms = max(1, int(settings.bus_block * 1000))
        self.dedup = Dedup(self.bus.client, self.bus.prefix, settings.bus_claim_idle * 0.8, settings.bus_dedup_ttl)

    def setup(self) -> None:
        """Create the agent's consumer groups if missing: id ``0`` on its own topic (every
        message still in the stream is delivered), ``$`` on the broadcast topic (only
        broadcasts sent since the agent first subscribed)."""
        self.bus.ensure_group(self.agent.topic, self.agent.name, "0")
        if self.broadcast != self.agent.topic:
            self.bus.ensure_group(self.broadcast, self.agent.name, "$")

    def run(self) -> None:
        supervise(self.name, self._loop, self.stop)

    def _loop(self) -> None:
        next_claim = 0.0
        while not self.stop.is_set():
            fault_point("bus", self.runtime.settings.fault)
            try:
                if time.monotonic() >= next_claim:
                    self.claim_stale()
                    next_claim = time.monotonic() + max(0.1, self.claim_idle_ms / 2000)
                for delivery in self.bus.read(self.topics, self.agent.name, self.consumer, block_ms=self.block_ms):
                    self.handle(delivery)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.warning("bus of %s: %s", self.agent.name, exc)
                    self.stop.wait(1.0)
                self._setup_quietly()  # the stream or group was deleted: subscribe again
            except redis.RedisError as exc:  # the client's own retries are exhausted
                log.warning("bus of %s cannot reach Redis: %s", self.agent.name, exc)
                self.stop.wait(1.0)

    def _setup_quietly(self) -> None:
        try:
            self.setup()
        except redis.RedisError as exc:
            log.warning("bus of %s cannot create its groups: %s", self.agent.name, exc)

    def claim_stale(self) -> int:
        """Claim and handle entries pending longer than ``bus_claim_idle``; returns how many."""
        handled = 0
        for topic in self.topics:
            for delivery in self.bus.claim(topic, self.agent.name, self.consumer, self.claim_idle_ms):
                log.warning("claimed message %s of %s pending since a consumer stopped", delivery.entry_id, topic)
                self.handle(delivery)
                handled += 1
            self.bus.forget_idle_consumers(topic, self.agent.name, FORGET_CONSUMER_MS)
        return handled

    # -- one message --------------------------------------------------------------------
    def handle(self, delivery: Delivery) -> str:
        """Apply one delivered entry, then acknowledge it (unless another consumer is
        handling the same message id, or the effect failed for a transient reason).

        Returns:
            What happened: ``started``, ``duplicate``, ``woke``, ``stored``, ``dropped``,
            ``ignored``, ``busy`` or ``failed``.
        """
        if delivery.raw is None:  # trimmed while pending
            self.bus.ack(delivery.topic, self.agent.name, delivery.entry_id)
            return "dropped"
        try:
            event = parse_envelope(delivery.raw)
            message = event.message()
        except BusError as exc:
            log.warning("dropped entry %s of topic %s: %s", delivery.entry_id, delivery.topic, exc)
            self.bus.ack(delivery.topic, self.agent.name, delivery.entry_id)
            return "dropped"
        state = self.dedup.claim(self.agent.name, event.id, self.consumer)
        if state == BUSY:
            return "busy"
        if state == DONE:
            log.info("dropped duplicate message %s (%s) for %s", event.id, event.type, self.agent.name)
            self.bus.ack(delivery.topic, self.agent.name, delivery.entry_id)
            return "duplicate"
        try:
            result = self.apply(delivery.topic, event, message)
        except AgentPlatformError as exc:  # will not get better by trying again
            log.warning("dropped message %s (%s) for %s: %s", event.id, event.type, self.agent.name, exc)
            result = "dropped"
        except Exception:
            log.exception("message %s for %s failed; it stays pending and is tried again", event.id, self.agent.name)
            return "failed"
        self._fault()
        self.dedup.done(self.agent.name, event.id)
        self.bus.ack(delivery.topic, self.agent.name, delivery.entry_id)
        return result

    def apply(self, topic: str, event: CloudEvent, message: Any) -> str:
        """Store the effect of one message (see the module docstring)."""
        if isinstance(message, BroadcastMessage):
            return self.remember(event, message)
        if topic != self.agent.topic:
            log.warning("ignored %s %s sent to the broadcast topic", event.type, event.id)
            return "ignored"
        if isinstance(message, TriggerAction):
            return self.start_turn(event, message)
        if isinstance(message, AgentTaskResponse):
            return self.deliver(message)
        return "ignored"

    def start_turn(self, event: CloudEvent, message: TriggerAction) -> str:
        """Start the turn asked for, once: its id is derived from the message id."""
        workflow_id = derived_workflow_id(self.agent.name, event.id)
        if self.runtime.store_for(self.agent).exists(workflow_id):
            return "duplicate"
        metadata = {**message.metadata, "bus": {"message_id": event.id, "source": event.source}}
        if message.reply_to is not None:
            metadata["reply_to"] = message.reply_to.model_dump()
        self.runtime.start_workflow(
            self.agent.name, message.task, session_id=message.session_id, metadata=metadata, workflow_id=workflow_id
        )
        log.info("message %s from %s started workflow %s of %s", event.id, event.source, workflow_id, self.agent.name)
        return "started"

    def deliver(self, message: AgentTaskResponse) -> str:
        """Raise the event the caller waits for; an answer too late for it is dropped."""
        try:
            woke = control.raise_event(
                self.runtime, message.workflow_id, message.event, message.payload(), worker=f"bus:{self.consumer}"
            )
        except (InvalidTransition, WorkflowNotFound) as exc:
            log.warning(
                "dropped a late answer of %s for workflow %s (event %s): %s",
                message.agent,
                message.workflow_id,
                message.event,
                exc,
            )
            return "dropped"
        return "woke" if woke else "stored"

    def remember(self, event: CloudEvent, message: BroadcastMessage) -> str:
        """Append a broadcast to the agent's memory (idempotent by message id)."""
        if message.sender == self.agent.name:
            return "ignored"
        session = message.session_id or self.agent.default_session_id
        entry = {"role": "user", "content": f"[{message.sender}] {message.content}"}
        self.runtime.history_for(self.agent).append_turn(session, f"bus:{event.id}", [entry])
        return "stored"

    def _fault(self) -> None:
        """Crash tests: ``AGENT_PLATFORM_FAULT=bus_exit_before_ack`` SIGKILLs this process
        once (per Redis) after a message's effect is stored and before its ``XACK``."""
        if self.runtime.settings.fault != FAULT_BEFORE_ACK:
            return
        if self.bus.client.set(keys.bus_fault_fired(self.bus.prefix), "1", nx=True):
            log.warning("fault injection: SIGKILL before XACK")
            os.kill(os.getpid(), signal.SIGKILL)


def consumer_name() -> str:
    """This process's consumer name: ``<hostname>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def start_consumers(runtime: Any, stop: threading.Event, agents: list[str] | None = None) -> list[AgentConsumer]:
    """Create the groups of ``agents`` (default: every loaded agent) and start one
    consumer thread per agent.

    Raises:
        AgentNotFound: a named agent is not loaded.
        ComponentError: an agent's bus component is missing.
    """
    install(runtime)
    name = consumer_name()
    threads = [AgentConsumer(runtime, runtime.agent(a), name, stop) for a in (agents or list(runtime.agents))]
    for thread in threads:
        thread.setup()
    for thread in threads:
        thread.start()
    return threads


def run_bus(runtime: Any, agents: list[str] | None = None, stop: threading.Event | None = None) -> None:
    """Run the bus until SIGTERM/SIGINT (or ``stop`` is set).

    Args:
        runtime: a runtime with a dispatcher (``tasks.get_app().runtime``).
        agents: the agents to subscribe (default: all loaded, i.e. ``AGENT_APP``).
        stop: an event that ends the loop (for embedding; signals set it too when this
            runs in the main thread).

    Raises:
        BusError: a consumer thread ended while the bus was not stopping (``agent-platform
            bus`` then exits 1, so that its supervisor restarts it).
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    threads = start_consumers(runtime, stop, agents)
    settings = runtime.settings
    log.info(
        "bus ready: consumer %s, agents %s, broadcast topic %s, claim idle %ss",
        threads[0].consumer if threads else consumer_name(),
        ", ".join(t.agent.name for t in threads),
        settings.bus_broadcast_topic,
        settings.bus_claim_idle,
    )
    ended: list[str] = []
    while not stop.wait(0.5):
        ended = [t.name for t in threads if not t.is_alive()]
        if ended:  # not even supervision kept it: let the process supervisor restart the bus
            log.error("bus consumer thread(s) %s ended; stopping the bus", ", ".join(ended))
            stop.set()
    for thread in threads:
        thread.join(timeout=settings.bus_block + 5)
    log.info("bus stopped")
    if ended:
        raise BusError(f"bus consumer thread(s) {', '.join(ended)} ended")
