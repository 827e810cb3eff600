"""``turnstile serve`` configuration: flags over TURNSTILE_* variables over defaults, clear errors."""

from __future__ import annotations

import argparse

import pytest

from turnstile.adapters.cli import build_parser
from turnstile.adapters.commands.serve import build_configs
from turnstile.adapters.config import ServerConfig, is_loopback
from turnstile.engine.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_defaults() -> None:
    server, runtime = build_configs(parse(), env={})
    assert (server.host, server.port, server.ws_port, server.token) == ("127.0.0.1", 8700, 8701, None)
    assert (
        runtime.default_agent.agent == "sim"
        and runtime.pool_size == 2
        and runtime.data_dir == "turnstile-data"
    )


def test_environment_then_flags() -> None:
    env = {
        "TURNSTILE_PORT": "9000",
        "TURNSTILE_POOL_SIZE": "0",
        "TURNSTILE_DATA_DIR": "/tmp/x",
        "TURNSTILE_AGENT": "claude",
    }
    server, runtime = build_configs(parse(), env=env)
    assert server.port == 9000 and runtime.pool_size == 0 and runtime.data_dir == "/tmp/x"
    assert runtime.default_agent.agent == "claude"
    server, runtime = build_configs(parse("--port", "9100", "--pool-size", "3", "--agent", "sim"), env=env)
    assert server.port == 9100 and runtime.pool_size == 3 and runtime.default_agent.agent == "sim"


def test_agent_flags_reach_the_agent_config() -> None:
    _, runtime = build_configs(
        parse("--model", "m1", "--cwd", "/w", "--allowed-tools", "Bash,Read", "--sim-speed", "0"), env={}
    )
    agent = runtime.default_agent
    assert (agent.model, agent.cwd, agent.allowed_tools) == ("m1", "/w", ("Bash", "Read"))
    assert agent.extra_args[-2:] == ("--speed", "0.0")


def test_public_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="--token"):
        build_configs(parse("--host", "0.0.0.0"), env={})
    server, _ = build_configs(parse("--host", "0.0.0.0", "--token", "t"), env={})
    assert server.token == "t"
    server, _ = build_configs(parse("--host", "0.0.0.0"), env={"TURNSTILE_TOKEN": "from-env"})
    assert server.token == "from-env"


@pytest.mark.parametrize(
    ("env", "message"),
    [({"TURNSTILE_PORT": "eighty"}, "TURNSTILE_PORT"), ({"TURNSTILE_PORT": "70000"}, "port")],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_env(env)


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_the_shared_log_flags_and_variables() -> None:
    _, runtime = build_configs(parse(), env={})
    assert runtime.redis_url is None  # the file store stays the default
    env = {"TURNSTILE_REDIS_URL": "redis://10.0.0.5:6379/2", "TURNSTILE_NODE_ID": "api-1"}
    _, runtime = build_configs(parse(), env=env)
    settings = runtime.redis_settings()
    assert (settings.where, settings.node_name, str(settings.trim)) == (
        "redis://10.0.0.5:6379/2",
        "api-1",
        "maxlen:100000",
    )
    _, runtime = build_configs(
        parse("--redis-url", "redis://r:1/0", "--node-id", "api-2", "--redis-trim", "age:7d"), env=env
    )
    settings = runtime.redis_settings()
    assert (settings.where, settings.node_name, str(settings.trim)) == (
        "redis://r:1/0",
        "api-2",
        "age:604800",
    )
    for argv, message in [
        (("--redis-url", "http://r/0"), "must start with redis://"),
        (("--redis-url", "redis://r/0", "--node-id", "a b"), "node_id"),
        (("--redis-url", "redis://r/0", "--redis-trim", "forever"), "redis_trim"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_configs(parse(*argv), env={})
