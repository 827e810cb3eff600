"""Configuration: defaults, environment variables, pool keys, argv building, readiness checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import config
from tests.scripted import ScriptedLauncher
from turnstile.engine.errors import ConfigError
from turnstile.engine.runtime import AgentConfig, RuntimeConfig, open_runtime
from turnstile.engine.runtime.process import SubprocessLauncher, agent_argv, agent_env
from turnstile.engine.runtime.stderr import StderrCapture


def test_defaults_are_the_documented_ones() -> None:
    cfg = RuntimeConfig()
    assert cfg.pool_size == 2
    assert cfg.max_queued_turns == 8
    assert (cfg.interrupt_grace_s, cfg.kill_after_s) == (3.0, 2.0)
    assert cfg.max_line == 8 * 1024 * 1024
    assert cfg.subscriber_buffer == 1024
    assert cfg.data_dir is None
    assert cfg.default_agent == AgentConfig()


def test_from_env_reads_turnstile_variables() -> None:
    env = {
        "TURNSTILE_POOL_SIZE": "0",
        "TURNSTILE_DATA_DIR": "/tmp/x",
        "TURNSTILE_IDLE_TIMEOUT_S": "none",
        "TURNSTILE_INTERRUPT_GRACE_S": "1.5",
        "TURNSTILE_AGENT": "claude",
        "TURNSTILE_MODEL": "m",
        "TURNSTILE_ALLOWED_TOOLS": "Bash,Read",
        "TURNSTILE_AGENT_ARGS": "--foo 'a b'",
    }
    cfg = RuntimeConfig.from_env(env, max_queued_turns=3)
    assert cfg.pool_size == 0 and cfg.data_dir == "/tmp/x" and cfg.idle_timeout_s is None
    assert cfg.interrupt_grace_s == 1.5 and cfg.max_queued_turns == 3
    assert cfg.default_agent.agent == "claude" and cfg.default_agent.model == "m"
    assert cfg.default_agent.allowed_tools == ("Bash", "Read")
    assert cfg.default_agent.extra_args == ("--foo", "a b")


@pytest.mark.parametrize("env", [{"TURNSTILE_POOL_SIZE": "many"}, {"TURNSTILE_POOL_SIZE": "-1"}])
def test_bad_values_name_the_setting(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="pool_size"):
        RuntimeConfig.from_env(env)


def test_pool_key_covers_every_spawn_field() -> None:
    base = AgentConfig()
    assert base.pool_key() == AgentConfig().pool_key()
    variants = [
        AgentConfig(agent="claude"),
        AgentConfig(binary="/x"),
        AgentConfig(cwd="/tmp"),
        AgentConfig(model="m"),
        AgentConfig(allowed_tools=("Bash",)),
        AgentConfig(extra_args=("--speed", "0")),
        AgentConfig(partial_messages=False),
        AgentConfig(env={"A": "1"}),
    ]
    keys = {v.pool_key() for v in variants}
    assert len(keys) == len(variants) and base.pool_key() not in keys
    assert (
        AgentConfig(env={"A": "1", "B": "2"}).pool_key() == AgentConfig(env={"B": "2", "A": "1"}).pool_key()
    )
    assert AgentConfig(env={"KEY": "secret"}).public()["env"] == {"KEY": "***"}


def test_argv_is_the_stream_json_cli_argv_for_both_agents() -> None:
    agent = AgentConfig(model="m", allowed_tools=("Bash", "Read"), extra_args=("--speed", "0"))
    argv = agent_argv(agent, resume="abc")
    assert argv[:3] == [sys.executable, "-m", "turnstile.engine.agents.sim"]
    flags = argv[3:]
    assert flags[:6] == ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
    assert "--include-partial-messages" in flags
    assert flags[flags.index("--model") + 1] == "m"
    assert flags[flags.index("--allowedTools") + 1] == "Bash,Read"
    assert flags[flags.index("--resume") + 1] == "abc"
    assert flags[-2:] == ["--speed", "0"]
    assert "--include-partial-messages" not in agent_argv(AgentConfig(partial_messages=False))


def test_claude_binary_resolution_and_env(tmp_path: Path) -> None:
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    argv = agent_argv(AgentConfig(agent="claude", binary=str(fake)))
    assert argv[0] == str(fake) and argv[1] == "-p"
    launcher = SubprocessLauncher()
    assert launcher.check(AgentConfig(agent="claude", binary=str(fake))) is None
    reason = launcher.check(AgentConfig(agent="claude", binary=str(tmp_path / "missing")))
    assert reason is not None and "not found" in reason
    env = agent_env(AgentConfig(env={"X": "1"}, inherit_env=False))
    assert env["X"] == "1" and "PATH" not in env and "PYTHONPATH" in env
    assert "CLAUDECODE" not in agent_env(AgentConfig(agent="claude", env={}))
    # The CLI never updates itself under a server; a config may still say otherwise explicitly.
    assert agent_env(AgentConfig(agent="claude", inherit_env=False))["DISABLE_AUTOUPDATER"] == "1"
    assert "DISABLE_AUTOUPDATER" not in agent_env(AgentConfig(agent="sim", inherit_env=False))
    override = AgentConfig(agent="claude", env={"DISABLE_AUTOUPDATER": "0"}, inherit_env=False)
    assert agent_env(override)["DISABLE_AUTOUPDATER"] == "0"


def test_stderr_capture_cuts_limits_and_keeps_a_tail() -> None:
    cap = StderrCapture(max_line=16, rate=1.0, burst=2, tail=3)
    out = cap.feed(b"one\ntwo\nthree\n" + b"x" * 40 + b"\n", now=0.0)
    assert [t for t, _ in out] == ["one", "two"]
    out = cap.feed(b"later\n", now=10.0)
    assert out == [("later", 2)]
    first, second, _ = cap.tail
    assert first == "three" and "cut" in second
    assert cap.eof(now=10.0) == []
    cap.feed(b"a\nb\nc\n", now=10.0)
    assert cap.eof(now=10.0)[-1] == ("", 2)


async def test_readiness_reports_an_unwritable_data_dir_and_never_blocks(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    async with open_runtime(config(data_dir=str(blocked / "data")), launcher=ScriptedLauncher()) as rt:
        ready = rt.readiness()
        assert not ready.ready
        assert any("data director" in r for r in ready.reasons)


def test_pool_ready_after_defaults_by_agent() -> None:
    cfg = RuntimeConfig()
    assert cfg.ready_after(AgentConfig(agent="claude")) == 1.0
    assert cfg.ready_after(AgentConfig(agent="sim")) == 0.2
    assert RuntimeConfig(pool_ready_after_s=0.5).ready_after(AgentConfig(agent="claude")) == 0.5
    assert RuntimeConfig.from_env({"TURNSTILE_POOL_READY_AFTER_S": "0.05"}).ready_after(AgentConfig()) == 0.05


def test_pool_priming_settings() -> None:
    assert RuntimeConfig().pool_prime is True and RuntimeConfig().pool_prime_timeout_s == 30.0
    off = RuntimeConfig.from_env({"TURNSTILE_POOL_PRIME": "false", "TURNSTILE_POOL_PRIME_TIMEOUT_S": "none"})
    assert off.pool_prime is False and off.pool_prime_timeout_s is None
    with pytest.raises(ConfigError, match="pool_prime_timeout_s must be positive"):
        RuntimeConfig(pool_prime_timeout_s=0)
