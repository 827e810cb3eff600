"""turnstile.engine.agents.claude: binary discovery order, argv and environment for the real CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from turnstile.engine.agents.claude import (
    bundled_claude_binary,
    claude_argv,
    find_claude_binary,
    interrupt_line,
    locate_claude_binary,
    offline_env,
    user_message_line,
)
from turnstile.engine.errors import AgentBinaryNotFound


def make_exe(path: Path) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_explicit_wins_over_env_and_path(tmp_path: Path) -> None:
    a = make_exe(tmp_path / "a")
    b = make_exe(tmp_path / "b")
    (tmp_path / "bin").mkdir()
    make_exe(tmp_path / "bin" / "claude")
    env = {"TURNSTILE_CLAUDE_BIN": b, "PATH": str(tmp_path / "bin")}
    assert find_claude_binary(a, env=env) == a
    assert find_claude_binary(None, env=env) == b
    assert find_claude_binary(None, env={"PATH": str(tmp_path / "bin")}) == str(tmp_path / "bin" / "claude")
    # ... and each says where it came from (`turnstile doctor` reports it).
    assert locate_claude_binary(a, env=env).source == "flag"
    assert locate_claude_binary(None, env=env).source == "env"
    assert locate_claude_binary(None, env={"PATH": str(tmp_path / "bin")}).source == "path"


def test_explicit_missing_binary_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    make_exe(tmp_path / "claude")
    with pytest.raises(AgentBinaryNotFound) as info:
        find_claude_binary(str(tmp_path / "nope"), env={"PATH": str(tmp_path)})
    assert "nope" in str(info.value)


def test_not_found_says_what_was_searched_and_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import turnstile.engine.agents.claude as mod

    monkeypatch.setattr(
        mod, "_bundled_binary", lambda: (None, "bundled in claude_agent_sdk (package not installed)")
    )
    with pytest.raises(AgentBinaryNotFound) as info:
        find_claude_binary(None, env={"PATH": str(tmp_path)})
    message = str(info.value)
    assert "PATH" in message and "claude-agent-sdk" in message


def test_bundled_binary_is_found_when_the_sdk_is_installed() -> None:
    try:
        path = find_claude_binary(None, env={"PATH": ""})
    except AgentBinaryNotFound:
        pytest.skip("claude-agent-sdk is not installed here")
    assert os.access(path, os.X_OK) and path.endswith("claude")
    assert locate_claude_binary(None, env={"PATH": ""}) == (path, "bundled")
    assert bundled_claude_binary() == path  # whatever is on PATH


def test_argv() -> None:
    argv = claude_argv(
        "/bin/claude", model="m", allowed_tools=["Bash", "Read"], resume="s1", extra_args=["-x"]
    )
    assert argv[:7] == [
        "/bin/claude",
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    assert "--include-partial-messages" in argv
    assert argv[argv.index("--model") + 1] == "m"
    assert argv[argv.index("--allowedTools") + 1] == "Bash,Read"
    assert argv[argv.index("--resume") + 1] == "s1" and argv[-1] == "-x"
    bare = claude_argv("c", model=None, allowed_tools=[], partial_messages=False)
    assert bare == ["c", "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]


def test_offline_env_and_stdin_lines() -> None:
    env = offline_env("http://127.0.0.1:9", "/tmp/h")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9" and env["HOME"] == "/tmp/h"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and env["ANTHROPIC_API_KEY"]
    assert json.loads(user_message_line("hi"))["message"] == {"role": "user", "content": "hi"}
    assert json.loads(interrupt_line("r"))["request"] == {"subtype": "interrupt"}
