"""Dapr-format component files (``components/*.yaml``) and the Redis targets they name.

A folder of Dapr components works unchanged (``apiVersion``, ``kind: Component``,
``metadata.name``, ``spec.type``, ``spec.version``, ``spec.metadata`` name/value list). Example::

    store = get_component(load_components(), "workflowstatestore", ("state.redis",))
    target = redis_target(store)  # RedisTarget(url="redis://localhost:6379/0", key_prefix="")
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from agent_platform.errors import ComponentError, ConfigurationError

logger = logging.getLogger(__name__)

SUPPORTED_TYPES = ("state.redis", "pubsub.redis", "conversation.openai")
REDIS_TYPES = ("state.redis", "pubsub.redis")
DEFAULT_COMPONENTS_PATH = "./components"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
KEY_SEPARATOR = "||"  # Dapr joins a state key prefix and the key with "||".

# ``{{VAR}}`` (Dapr's template syntax) or ``{env:VAR}``; one pass, expansions are not re-expanded.
_TEMPLATE = re.compile(r"\{\{\s*(\w+)\s*\}\}|\{env:(\w+)\}")


@dataclass(frozen=True)
class Component:
    """One Dapr component document.

    Attributes:
        name: ``metadata.name``, unique across the folder.
        type: ``spec.type``, e.g. ``"state.redis"``, ``"pubsub.redis"``.
        version: ``spec.version`` (``"v1"`` when absent).
        metadata: ``spec.metadata`` as name -> resolved value, always ``str`` (bare YAML
            numbers and booleans are converted, ``True`` -> ``"true"``). Dapr-only fields
            (``actorStateStore``, ``consumerID``, ...) are kept but ignored. Empty for
            skipped (unsupported) components, whose values are never resolved.
        path: the file the component came from.
    """

    name: str
    type: str
    version: str
    metadata: dict[str, str]
    path: str


class ComponentSet(dict[str, Component]):
    """The supported components of one folder, by name, plus the ones that were skipped.

    Attributes:
        folder: the folder they were read from.
        skipped: name -> :class:`Component` of unsupported types, kept so that
            :func:`get_component` can say why an agent cannot use one.
    """

    def __init__(self, folder: str, components: Iterable[tuple[str, Component]] = ()) -> None:
        super().__init__(components)
        self.folder = folder
        self.skipped: dict[str, Component] = {}


def load_components(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> ComponentSet:
    """Read every ``*.yaml`` / ``*.yml`` file of a folder (sorted by name) into components.

    A file may hold several YAML documents (``---``); empty documents are ignored.
    Documents whose ``kind`` is not ``Component`` (Dapr's ``Subscription``,
    ``Configuration``, ``Resiliency``...) and components of unsupported types are
    skipped with one ``logging.warning`` line each.

    Args:
        path: the folder. Default: ``AGENT_PLATFORM_COMPONENTS_PATH``, else ``./components``.
        env: environment for ``{{VAR}}``, ``{env:VAR}``, ``envRef`` and ``secretKeyRef``
            (default ``os.environ``).

    Returns:
        A :class:`ComponentSet` (a ``dict`` name -> :class:`Component`); empty when the
        ``./components`` fallback does not exist.

    Raises:
        ComponentError: the folder was given (argument or ``AGENT_PLATFORM_COMPONENTS_PATH``)
            but is missing; a file is unreadable or malformed YAML (file and line); a
            required field is missing (file and field); a value cannot be resolved; or a
            ``metadata.name`` is defined twice (both files).
    """
    env = os.environ if env is None else env
    chosen = path if path is not None else env.get("AGENT_PLATFORM_COMPONENTS_PATH") or None
    folder = Path(chosen if chosen is not None else DEFAULT_COMPONENTS_PATH)
    result = ComponentSet(str(folder))
    if not folder.is_dir():
        if chosen is not None or folder.exists():
            raise ComponentError(f"components folder {folder} does not exist or is not a folder")
        return result
    sources: dict[str, str] = {}
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for file in files:
        for document in _read_documents(file):
            component = _parse_document(document, str(file), env)
            if component is None:
                continue
            if component.name in sources:
                first = sources[component.name]
                raise ComponentError(f"component {component.name!r} is defined twice: {first}, {file}")
            sources[component.name] = str(file)
            if component.type in SUPPORTED_TYPES:
                result[component.name] = component
            else:
                msg = "skipping component %r in %s: type %s is not supported by agent-platform"
                logger.warning(msg, component.name, file, component.type)
                result.skipped[component.name] = component
    return result


def get_component(components: Mapping[str, Component], name: str, expected_types: tuple[str, ...]) -> Component:
    """Return the component an agent names, checking its type.

    Args:
        components: what :func:`load_components` returned.
        name: ``metadata.name`` of the component.
        expected_types: acceptable ``spec.type`` values, e.g. ``("state.redis",)``.

    Raises:
        ComponentError: no component has that name (lists the known ones), or it has
            another type (names its file; says so when it was skipped as unsupported).
    """
    component = components.get(name)
    if component is None:
        component = getattr(components, "skipped", {}).get(name)
    if component is None:
        folder = getattr(components, "folder", "the components folder")
        known = ", ".join(sorted(components)) or "(none)"
        raise ComponentError(f"component {name!r} not found in {folder}; known: {known}")
    if component.type not in expected_types:
        why = "" if component.type in SUPPORTED_TYPES else ", which agent-platform does not support"
        raise ComponentError(
            f"component {name!r} (file {component.path}) has type {component.type}{why}; "
            f"expected one of {', '.join(expected_types)}"
        )
    return component


#: ``RedisTarget.topology`` values: one server, a Redis Cluster, a primary found through Sentinel.
NODE, CLUSTER, SENTINEL = "node", "cluster", "sentinel"


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis component points.

    Attributes:
        url: ``redis://`` / ``rediss://`` URL with the db number, password included
            (never log it: use :meth:`redacted_url`). For a cluster or Sentinel, the
            credentials, TLS and db of the data nodes, with the first host of ``hosts``.
        key_prefix: prepended to every key, ``""`` or ending in ``"||"`` (Dapr's separator).
        topology: ``node`` (one server), ``cluster`` (redis-py's ``RedisCluster``, seeded
            with ``hosts``) or ``sentinel`` (the primary ``master_name`` that the Sentinels
            at ``hosts`` name, redis-py's ``Sentinel.master_for``).
        hosts: every ``(host, port)`` of ``redisHost``.
        master_name: Dapr's ``sentinelMasterName`` (Sentinel only).
        sentinel_username, sentinel_password: Dapr's ``sentinelUsername`` /
            ``sentinelPassword``: how to log in to the Sentinels themselves (Sentinel only).
    """

    url: str
    key_prefix: str
    topology: str = NODE
    hosts: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_username: str = ""
    sentinel_password: str = field(default="", repr=False)

    def redacted_url(self) -> str:
        """Return :attr:`url` with the password (or lone user-info) replaced by ``***``;
        a cluster or Sentinel target reads ``redis+cluster://`` / ``redis+sentinel://``
        followed by every host (and ``/<master_name>`` for Sentinel)."""
        if self.topology == NODE:
            return redact_url(self.url)
        parts = urlsplit(redact_url(self.url))
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + ",".join(f"{h}:{p}" for h, p in self.hosts)
        tail = f"/{self.master_name}{parts.path}" if self.topology == SENTINEL else ""
        return f"{parts.scheme}+{self.topology}://{netloc}{tail}"

    def __repr__(self) -> str:
        return f"RedisTarget(url={self.redacted_url()!r}, key_prefix={self.key_prefix!r}, topology={self.topology!r})"


def redis_target(component: Component, env: Mapping[str, str] | None = None) -> RedisTarget:
    """Build the URL, key prefix and topology of a ``state.redis`` / ``pubsub.redis`` component.

    Fields (Dapr's names): ``redisHost`` (``host:port``, port 6379 by default; required;
    a comma-separated list for a cluster's seed nodes or for the Sentinels),
    ``redisUsername``, ``redisPassword``, ``redisDB`` (int, default 0; ignored by a
    cluster, as Dapr does), ``enableTLS`` (Go ``strconv.ParseBool`` spellings; true ->
    ``rediss://``) and ``keyPrefix``: ``none`` -> ``""``; ``name`` -> ``"<component
    name>||"``; absent or ``appid`` -> ``"<AGENT_PLATFORM_APP_ID>||"`` (``""`` when unset);
    any other string ``s`` -> ``"s||"``, lowercased as Dapr does.

    Topology, as Dapr's Redis components choose it: ``failover: true`` with
    ``sentinelMasterName`` (and optional ``sentinelUsername`` / ``sentinelPassword``) ->
    Sentinel, ``redisHost`` naming the Sentinels; else ``redisType: cluster``, or several
    hosts in ``redisHost`` (go-redis's universal client) -> Redis Cluster; else one node.

    ``REDIS_URL`` in ``env`` replaces host, port, credentials, db, TLS and topology of
    every Redis component (one plain server); the key prefix still comes from it.

    Raises:
        ComponentError: wrong type, ``redisHost`` missing or not ``host:port[,...]``, bad
            ``redisDB`` / ``enableTLS`` / ``failover`` / ``redisType`` / ``keyPrefix``,
            ``failover`` without ``sentinelMasterName``, or ``failover`` with ``redisType:
            cluster``.
        ConfigurationError: ``REDIS_URL`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    env = os.environ if env is None else env
    where = f"{component.path}: component {component.name!r}"
    if component.type not in REDIS_TYPES:
        raise ComponentError(f"{where} has type {component.type}, not a Redis type")
    meta = component.metadata
    key_prefix = _key_prefix(component, env, where)
    if env.get("REDIS_URL"):
        return RedisTarget(default_redis_url(env), key_prefix)
    hosts = tuple(_host_port(item, where) for item in meta.get("redisHost", "").split(",") if item.strip())
    if not hosts:
        raise ComponentError(f"{where}: missing required field 'redisHost' (host:port)")
    redis_type = meta.get("redisType", "").strip().lower() or NODE
    if redis_type not in (NODE, CLUSTER):
        raise ComponentError(f"{where}: field 'redisType' must be node or cluster, got {meta['redisType']!r}")
    topology = CLUSTER if redis_type == CLUSTER or len(hosts) > 1 else NODE
    master_name = ""
    if _bool_field(meta, "failover", where):
        if redis_type == CLUSTER:
            raise ComponentError(f"{where}: 'failover: true' (Sentinel) and 'redisType: cluster' exclude each other")
        master_name = meta.get("sentinelMasterName", "").strip()
        if not master_name:
            raise ComponentError(f"{where}: 'failover: true' needs the field 'sentinelMasterName'")
        topology = SENTINEL
    db = meta.get("redisDB", "").strip() or "0"
    if not db.isdigit():
        raise ComponentError(f"{where}: field 'redisDB' must be an integer >= 0, got {db!r}")
    user, password = meta.get("redisUsername", ""), meta.get("redisPassword", "")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else ""
    auth = auth or (f"{quote(user, safe='')}@" if user else "")
    scheme = "rediss" if _bool_field(meta, "enableTLS", where) else "redis"
    host, port = hosts[0]
    url = f"{scheme}://{auth}{host}:{port}/{0 if topology == CLUSTER else int(db)}"
    if topology == NODE:
        return RedisTarget(url, key_prefix)
    return RedisTarget(
        url,
        key_prefix,
        topology,
        hosts,
        master_name,
        meta.get("sentinelUsername", "") if master_name else "",
        meta.get("sentinelPassword", "") if master_name else "",
    )


def _host_port(item: str, where: str) -> tuple[str, int]:
    """``host:port`` (port 6379 when absent; ``[v6]:port`` for IPv6) -> ``(host, port)``."""
    text = item.strip()
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:  # no port, or a bracketed IPv6 address without one
        host, port = text, "6379"
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ComponentError(f"{where}: field 'redisHost' must be host:port (comma-separated for several): {text!r}")
    return host, int(port)


def default_redis_url(env: Mapping[str, str] | None = None) -> str:
    """Return ``REDIS_URL`` from ``env`` (default ``os.environ``), else ``DEFAULT_REDIS_URL``.

    Raises:
        ConfigurationError: ``REDIS_URL`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    env = os.environ if env is None else env
    url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"REDIS_URL must be a redis(s):// or unix:// URL: {redact_url(url)!r}")
    return url


def _read_documents(file: Path) -> list[Any]:
    """Parse all non-empty YAML documents of ``file``; ComponentError names file and line."""
    try:
        documents = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComponentError(f"{file}: malformed YAML{line}: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ComponentError(f"{file}: cannot read component file: {exc}") from exc
    return [doc for doc in documents if doc is not None]


def _parse_document(doc: Any, file: str, env: Mapping[str, str]) -> Component | None:
    """Validate one document; None for a non-``Component`` kind (logged)."""
    if not isinstance(doc, dict):
        raise ComponentError(f"{file}: a document must be a mapping, not {type(doc).__name__}")
    for key in ("apiVersion", "kind"):
        if not doc.get(key):
            raise ComponentError(f"{file}: missing required field {key!r}")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if doc["kind"] != "Component":
        logger.warning("skipping %r in %s: kind %s is not Component", name, file, doc["kind"])
        return None
    if not isinstance(name, str) or not name:
        raise ComponentError(f"{file}: missing required field 'metadata.name'")
    where = f"{file}: component {name!r}"
    spec = doc.get("spec")
    ctype = spec.get("type") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(ctype, str) or not ctype:
        raise ComponentError(f"{where}: missing required field 'spec.type'")
    items = spec.get("metadata") or []
    if not isinstance(items, list):
        raise ComponentError(f"{where}: field 'spec.metadata' must be a list")
    values: dict[str, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("name") or not isinstance(item["name"], str):
            raise ComponentError(f"{where}: missing field 'spec.metadata[{index}].name'")
        if ctype in SUPPORTED_TYPES:
            values[item["name"]] = _resolve(item, f"{where}: field {item['name']!r}", env)
    version = _scalar(spec.get("version"), f"{where}: field 'spec.version'") or "v1"
    return Component(name=name, type=ctype, version=version, metadata=values, path=file)


def _resolve(item: dict[str, Any], where: str, env: Mapping[str, str]) -> str:
    """Resolve one ``spec.metadata`` entry: ``secretKeyRef``, ``envRef`` or ``value``.

    There is no secret store: ``secretKeyRef: {name: X, key: Y}`` reads env var ``Y``,
    else env var ``X``. ``envRef: V`` reads env var ``V``. Templates in ``value`` expand.
    """
    if "secretKeyRef" in item:
        ref = item["secretKeyRef"]
        names = [ref.get(k) for k in ("key", "name")] if isinstance(ref, dict) else []
        for var in names:
            if isinstance(var, str) and var in env:
                return env[var]
        raise ComponentError(
            f"{where}: secretKeyRef {ref!r} cannot be resolved: agent-platform has no secret "
            f"store and reads secrets from environment variables; set one of {names}"
        )
    if "envRef" in item:
        var = item["envRef"]
        if not isinstance(var, str) or var not in env:
            raise ComponentError(f"{where}: envRef variable {var!r} is not set")
        return env[var]

    def expand(match: re.Match[str]) -> str:
        var = match.group(1) or match.group(2)
        if var not in env:
            raise ComponentError(f"{where}: environment variable {var!r} is not set")
        return env[var]

    return _TEMPLATE.sub(expand, _scalar(item.get("value"), where))


def _scalar(value: Any, where: str) -> str:
    """Convert a YAML scalar to ``str`` (``None`` -> ``""``, ``True`` -> ``"true"``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ComponentError(f"{where}: value must be a string, number or boolean")


def _bool_field(meta: Mapping[str, str], field: str, where: str) -> bool:
    """Parse a boolean field as Go's ``strconv.ParseBool`` does (absent/empty -> False)."""
    raw = meta.get(field, "").strip().lower()
    if raw in ("", "0", "f", "false", "1", "t", "true"):
        return raw in ("1", "t", "true")
    raise ComponentError(f"{where}: field {field!r} must be true or false: {meta[field]!r}")


def _key_prefix(component: Component, env: Mapping[str, str], where: str) -> str:
    """Map Dapr's ``keyPrefix`` strategy to a literal prefix (see :func:`redis_target`)."""
    strategy = component.metadata.get("keyPrefix", "").strip().lower()  # Dapr lowercases it
    if strategy in ("", "appid"):
        app_id = env.get("AGENT_PLATFORM_APP_ID", "")
        return app_id + KEY_SEPARATOR if app_id else ""
    if strategy == "none":
        return ""
    if strategy == "name":
        return component.name + KEY_SEPARATOR
    if strategy == "namespace" or KEY_SEPARATOR in strategy:
        raise ComponentError(f"{where}: field 'keyPrefix' {strategy!r} is not supported")
    return strategy + KEY_SEPARATOR


def redact_url(url: str) -> str:
    """Replace the password of ``url`` (or a lone user-info part) with ``***``."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    userinfo = f"{user}:***" if colon else "***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostinfo}"))
