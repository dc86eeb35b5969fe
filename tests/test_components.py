"""Unit tests of agent_platform.components (Dapr-format component files); no Redis needed."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from agent_platform.components import (
    Component,
    ComponentSet,
    RedisTarget,
    default_redis_url,
    get_component,
    load_components,
    redis_target,
)
from agent_platform.errors import ComponentError, ConfigurationError

REPO_COMPONENTS = Path(__file__).resolve().parent.parent / "components"
HEAD = "apiVersion: v\nkind: Component\nmetadata: {name: a}\n"


def component_yaml(name: str, ctype: str = "state.redis", **metadata: object) -> str:
    """One Dapr component document whose metadata values are written as YAML literals."""
    items = "".join(f"  - name: {key}\n    value: {value}\n" for key, value in metadata.items())
    return (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata:\n  name: {name}\nspec:\n  type: {ctype}\n  version: v1\n  metadata:\n{items}"
    )


def write(folder: Path, filename: str, text: str) -> Path:
    path = folder / filename
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def make_component(**metadata: str) -> Component:
    return Component("store", "state.redis", "v1", dict(metadata), "store.yaml")


def test_bare_numbers_and_booleans_become_strings(tmp_path: Path) -> None:
    write(
        tmp_path,
        "s.yaml",
        component_yaml(
            "s",
            redisHost="localhost:6379",
            redisDB=3,
            enableTLS="false",
            actorStateStore=True,
            ratio=0.5,
        ),
    )
    component = load_components(tmp_path, env={})["s"]
    assert component.metadata == {
        "redisHost": "localhost:6379",
        "redisDB": "3",
        "enableTLS": "false",
        "actorStateStore": "true",
        "ratio": "0.5",
    }
    assert (component.type, component.version, component.path) == (
        "state.redis",
        "v1",
        str(tmp_path / "s.yaml"),
    )
    assert redis_target(component, env={}).url == "redis://localhost:6379/3"


def test_several_documents_yml_and_empty_documents(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yml",
        "---\n" + component_yaml("a") + "---\n---\n" + component_yaml("b", "pubsub.redis"),
    )
    write(tmp_path, "notes.txt", "not: a component")
    components = load_components(tmp_path, env={})
    assert isinstance(components, ComponentSet)
    assert sorted(components) == ["a", "b"] and components.folder == str(tmp_path)


@pytest.mark.parametrize(
    ("key_prefix", "env", "expected"),
    [
        ("none", {}, ""),
        ("None", {}, ""),
        ("name", {}, "store||"),
        ("myprefix", {}, "myprefix||"),
        ("MyPrefix", {}, "myprefix||"),  # Dapr lowercases the strategy
        ("appid", {"AGENT_PLATFORM_APP_ID": "app1"}, "app1||"),
        ("appid", {}, ""),
        (None, {"AGENT_PLATFORM_APP_ID": "app1"}, "app1||"),
        (None, {}, ""),
    ],
)
def test_key_prefix(key_prefix: str | None, env: dict[str, str], expected: str) -> None:
    metadata = {"redisHost": "h:1"} | ({"keyPrefix": key_prefix} if key_prefix is not None else {})
    assert redis_target(make_component(**metadata), env=env).key_prefix == expected


def test_key_prefix_with_separator_is_rejected() -> None:
    with pytest.raises(ComponentError, match="keyPrefix"):
        redis_target(make_component(redisHost="h:1", keyPrefix="a||b"), env={})


def test_url_from_fields() -> None:
    component = make_component(
        redisHost="redis.example:6380",
        redisUsername="u",
        redisPassword="p@ss:w",
        redisDB="2",
        enableTLS="true",
    )
    target = redis_target(component, env={})
    assert target.url == "rediss://u:p%40ss%3Aw@redis.example:6380/2"
    assert target.redacted_url() == "rediss://u:***@redis.example:6380/2"
    assert "p%40ss" not in repr(target)
    assert redis_target(make_component(redisHost="h"), env={}).url == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("redisHost", "h:port"),
        ("redisHost", "a:1,b:x"),
        ("redisDB", "x"),
        ("enableTLS", "maybe"),
        ("failover", "maybe"),
    ],
)
def test_bad_redis_fields_name_the_field(field: str, value: str) -> None:
    metadata = {"redisHost": "h:1", field: value}
    with pytest.raises(ComponentError, match=f"store.yaml.*{field}"):
        redis_target(make_component(**metadata), env={})


def test_missing_redis_host_names_file_and_field(tmp_path: Path) -> None:
    write(tmp_path, "nohost.yaml", component_yaml("nohost", redisPassword='""'))
    component = load_components(tmp_path, env={})["nohost"]
    with pytest.raises(ComponentError, match=r"nohost\.yaml.*'redisHost'"):
        redis_target(component, env={})


def test_redis_url_overrides_every_redis_component() -> None:
    component = make_component(redisHost="elsewhere:7000", redisPassword="x", redisDB="5", keyPrefix="name")
    target = redis_target(component, env={"REDIS_URL": "rediss://:secret@cache:6390/4"})
    assert target == RedisTarget("rediss://:secret@cache:6390/4", "store||")
    assert target.redacted_url() == "rediss://:***@cache:6390/4"
    # No redisHost is needed when REDIS_URL is set.
    assert redis_target(make_component(), env={"REDIS_URL": "redis://r:1/0"}).url == "redis://r:1/0"


def test_default_redis_url() -> None:
    assert default_redis_url({}) == "redis://127.0.0.1:6379/0"
    assert default_redis_url({"REDIS_URL": "redis://r:1/2"}) == "redis://r:1/2"
    with pytest.raises(ConfigurationError, match="REDIS_URL") as info:
        default_redis_url({"REDIS_URL": "http://user:hunter2@r:1/2"})
    assert "hunter2" not in str(info.value)


def test_redacted_url_without_password_is_unchanged() -> None:
    assert RedisTarget("redis://h:6379/0", "").redacted_url() == "redis://h:6379/0"
    assert RedisTarget("redis://secret@h:6379/0", "").redacted_url() == "redis://***@h:6379/0"


def test_templates_expand_from_env(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t.yaml",
        component_yaml(
            "t",
            redisHost='"{{REDIS_HOST}}:{env:REDIS_PORT}"',
            redisPassword='"{{ PW }}"',
            consumerID='"{uuid}"',
        ),
    )
    env = {"REDIS_HOST": "cache", "REDIS_PORT": "6390", "PW": "{{NOT_EXPANDED}}"}
    metadata = load_components(tmp_path, env=env)["t"].metadata
    assert metadata == {
        "redisHost": "cache:6390",
        "redisPassword": "{{NOT_EXPANDED}}",
        "consumerID": "{uuid}",
    }


def test_missing_template_variable_names_file_field_and_variable(tmp_path: Path) -> None:
    write(tmp_path, "t.yaml", component_yaml("t", redisPassword='"{{REDIS_PW}}"'))
    with pytest.raises(ComponentError, match=r"t\.yaml.*'redisPassword'.*'REDIS_PW'"):
        load_components(tmp_path, env={})


def test_secret_key_ref_and_env_ref(tmp_path: Path) -> None:
    write(
        tmp_path,
        "s.yaml",
        """\
        apiVersion: dapr.io/v1alpha1
        kind: Component
        metadata: {name: s}
        spec:
          type: conversation.openai
          metadata:
          - name: key
            secretKeyRef: {name: openai-secret, key: OPENAI_API_KEY}
          - name: endpoint
            secretKeyRef: {name: OPENAI_ENDPOINT, key: endpoint}
          - name: model
            envRef: OPENAI_MODEL
        auth:
          secretStore: localsecretstore
        """,
    )
    env = {"OPENAI_API_KEY": "sk-1", "OPENAI_ENDPOINT": "http://llm", "OPENAI_MODEL": "gpt-4o-mini"}
    component = load_components(tmp_path, env=env)["s"]
    assert component.metadata == {"key": "sk-1", "endpoint": "http://llm", "model": "gpt-4o-mini"}
    assert component.version == "v1"
    with pytest.raises(ComponentError, match=r"s\.yaml.*'key'.*no secret store"):
        load_components(tmp_path, env={"OPENAI_MODEL": "m"})
    with pytest.raises(ComponentError, match=r"s\.yaml.*'model'.*OPENAI_MODEL"):
        load_components(tmp_path, env={"OPENAI_API_KEY": "k", "OPENAI_ENDPOINT": "e"})


def test_unsupported_types_are_skipped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "cron.yaml", component_yaml("cron", "bindings.cron", schedule='"@every 1s"'))
    write(
        tmp_path,
        "pg.yaml",
        component_yaml("pg", "state.postgresql", connectionString='"{{UNSET}}"'),
    )
    write(tmp_path, "store.yaml", component_yaml("store", redisHost="localhost:6379"))
    with caplog.at_level(logging.WARNING, logger="agent_platform.components"):
        components = load_components(tmp_path, env={})
    assert list(components) == ["store"] and sorted(components.skipped) == ["cron", "pg"]
    cron_lines = [r for r in caplog.records if "'cron'" in r.getMessage()]
    assert len(cron_lines) == 1 and len(caplog.records) == 2
    assert "bindings.cron" in cron_lines[0].getMessage() and "cron.yaml" in cron_lines[0].getMessage()

    with pytest.raises(ComponentError) as info:
        get_component(components, "cron", ("state.redis",))
    assert str(info.value) == (
        f"component 'cron' (file {tmp_path / 'cron.yaml'}) has type bindings.cron, "
        "which agent-platform does not support; expected one of state.redis"
    )


def test_other_kinds_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(
        tmp_path,
        "sub.yaml",
        """\
        apiVersion: dapr.io/v2alpha1
        kind: Subscription
        metadata: {name: store}
        spec: {topic: orders, pubsubname: messagepubsub}
        """,
    )
    write(tmp_path, "store.yaml", component_yaml("store"))
    with caplog.at_level(logging.WARNING, logger="agent_platform.components"):
        assert list(load_components(tmp_path, env={})) == ["store"]
    assert len(caplog.records) == 1 and "Subscription" in caplog.records[0].getMessage()


def test_get_component() -> None:
    components = ComponentSet("comps", [("a", make_component()), ("b", make_component())])
    assert get_component(components, "a", ("state.redis", "pubsub.redis")).type == "state.redis"
    with pytest.raises(ComponentError, match=r"^component 'x' not found in comps; known: a, b$"):
        get_component(components, "x", ("state.redis",))
    with pytest.raises(ComponentError, match="has type state.redis; expected one of pubsub.redis"):
        get_component(components, "a", ("pubsub.redis",))


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: [unclosed\n")
    with pytest.raises(ComponentError, match=r"bad\.yaml: malformed YAML at line \d+"):
        load_components(tmp_path, env={})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("- just\n- a list\n", "mapping"),
        ("kind: Component\nmetadata: {name: a}\nspec: {type: state.redis}\n", "'apiVersion'"),
        ("apiVersion: v\nmetadata: {name: a}\nspec: {type: state.redis}\n", "'kind'"),
        ("apiVersion: v\nkind: Component\nspec: {type: state.redis}\n", "'metadata.name'"),
        (
            "apiVersion: v\nkind: Component\nmetadata: {name: a}\nspec: {version: v1}\n",
            "'spec.type'",
        ),
        (
            HEAD + "spec: {type: state.redis, metadata: [{value: 1}]}\n",
            r"'spec.metadata\[0\].name'",
        ),
    ],
)
def test_invalid_documents_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    write(tmp_path, "c.yaml", text)
    with pytest.raises(ComponentError, match=rf"c\.yaml.*{field}"):
        load_components(tmp_path, env={})


def test_duplicate_names_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", component_yaml("store"))
    second = write(tmp_path, "b.yaml", component_yaml("store", "pubsub.redis"))
    with pytest.raises(ComponentError, match="defined twice") as info:
        load_components(tmp_path, env={})
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./components here
    assert load_components(env={}) == {}
    with pytest.raises(ComponentError, match="nowhere"):
        load_components(tmp_path / "nowhere", env={})
    with pytest.raises(ComponentError, match="nowhere"):
        load_components(env={"AGENT_PLATFORM_COMPONENTS_PATH": str(tmp_path / "nowhere")})
    write(tmp_path, "x.yaml", component_yaml("x"))
    assert list(load_components(env={"AGENT_PLATFORM_COMPONENTS_PATH": str(tmp_path)})) == ["x"]


def test_shipped_components_folder_loads() -> None:
    components = load_components(REPO_COMPONENTS, env={})
    assert {name: c.type for name, c in components.items()} == {
        "conversationstore": "state.redis",
        "messagepubsub": "pubsub.redis",
        "registrystatestore": "state.redis",
        "workflowstatestore": "state.redis",
    }
    assert not components.skipped
    assert components["workflowstatestore"].metadata["actorStateStore"] == "true"
    for component in components.values():
        assert redis_target(component, env={}) == RedisTarget("redis://localhost:6379/0", "")
