"""Drive the REAL Claude Code CLI against the scripted fake Messages API.

These tests pin down the behaviour Turnstile builds on (turn boundaries, tool round trips,
interrupts, API errors, process lifetime) on the actual binary, not on our simulator. They are
plain sync tests (subprocess + a reader thread); each keeps its process in a ``with CliProcess``
block, which kills the process group on the way out whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakeapi import ApiError, FakeModelAPI, Text, Thinking, ToolUse
from tests.realcli import CliProcess, claude_binary_or_skip, offline_cli_env

pytestmark = [pytest.mark.realcli, pytest.mark.slow]


@pytest.fixture
def claude_bin() -> str:
    return claude_binary_or_skip()


@pytest.fixture
def api() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as fake:
        yield fake


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    wd = tmp_path / "wd"
    wd.mkdir()
    return wd


def start_cli(claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path) -> CliProcess:
    return CliProcess(claude_bin, offline_cli_env(api, tmp_path), workdir, allowed_tools=["Bash"])


def of_type(msgs: list[dict[str, Any]], type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
    return [m for m in msgs if m.get("type") == type_ and (subtype is None or m.get("subtype") == subtype)]


def texts(msg: dict[str, Any]) -> list[str]:
    """Text of the text blocks of an assistant/user message."""
    content = msg["message"]["content"]
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in content if b.get("type") == "text"]


def is_text_delta(m: dict[str, Any]) -> bool:
    return (
        m.get("type") == "stream_event"
        and m["event"].get("type") == "content_block_delta"
        and m["event"]["delta"].get("type") == "text_delta"
    )


def test_plain_text_turn(claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path) -> None:
    api.push(Text("Hello from the fake model.", chunks=4))
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        msgs = cli.turn("say hello", timeout=10)

    assert msgs[0]["type"] == "system" and msgs[0]["subtype"] == "init"
    assert msgs[0]["cwd"] == str(workdir)
    assert "Bash" in msgs[0]["tools"]
    assistants = of_type(msgs, "assistant")
    assert ["Hello from the fake model."] in [texts(a) for a in assistants]
    # --include-partial-messages: the four chunks arrive as text_delta stream events.
    deltas = [m["event"]["delta"]["text"] for m in msgs if is_text_delta(m)]
    assert "".join(deltas) == "Hello from the fake model."
    assert len(deltas) == 4
    result = msgs[-1]
    assert result["type"] == "result"
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "Hello from the fake model."
    assert result["session_id"] == msgs[0]["session_id"]

    (req,) = api.message_requests()
    assert req.stream and req.query == "beta=true"
    assert req.headers["x-api-key"] == "test-key"
    assert any(b.get("text") == "say hello" for b in req.last_user_blocks())


def test_tool_turn_runs_bash(claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path) -> None:
    api.push(ToolUse("Bash", {"command": "echo hi"}, text_before="Running it."), Text("It printed hi."))
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        msgs = cli.turn("run echo hi", timeout=15)

    tool_uses = [
        b for a in of_type(msgs, "assistant") for b in a["message"]["content"] if b["type"] == "tool_use"
    ]
    assert [(t["name"], t["input"]) for t in tool_uses] == [("Bash", {"command": "echo hi"})]
    results = [
        b
        for u in of_type(msgs, "user")
        if isinstance(u["message"]["content"], list)
        for b in u["message"]["content"]
        if b.get("type") == "tool_result"
    ]
    assert len(results) == 1
    assert results[0]["tool_use_id"] == tool_uses[0]["id"]
    assert results[0]["content"] == "hi"  # the command really ran: stdout, not the command line
    assert results[0].get("is_error") is False
    assert ["It printed hi."] in [texts(a) for a in of_type(msgs, "assistant")]
    result = msgs[-1]
    assert result["type"] == "result" and result["subtype"] == "success" and result["is_error"] is False
    assert result["num_turns"] == 2

    reqs = api.message_requests()
    assert len(reqs) == 2
    last_user = reqs[1].last_user_blocks()
    assert [b["type"] for b in last_user] == ["tool_result"]
    assert last_user[0]["tool_use_id"] == tool_uses[0]["id"]
    assert "hi" in str(last_user[0]["content"])


def test_interrupt_mid_stream_then_next_turn(
    claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path
) -> None:
    # ~6 s of tokens if nobody interrupts.
    api.push(Text("word " * 200, token_delay=0.03, chunks=200), Text("second answer"))
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        cli.send_user("talk for a while")
        cli.wait_for(is_text_delta, timeout=10)
        sent = cli.send_interrupt("req_1_deadbeef")
        ack = cli.wait_for(lambda m: m.get("type") == "control_response", timeout=5)
        ack_ms = (time.monotonic() - sent) * 1000
        assert ack["response"]["subtype"] == "success"
        assert ack["response"]["request_id"] == "req_1_deadbeef"
        result = cli.wait_result(timeout=5)
        assert result["subtype"] == "error_during_execution"
        assert result["is_error"] is True
        assert result.get("terminal_reason") == "aborted_streaming"
        interrupted_at = time.monotonic()
        assert interrupted_at - sent < 3, "interrupt took too long"

        msgs = cli.messages()
        notes = [t for u in of_type(msgs, "user") for t in texts(u)]
        assert "[Request interrupted by user]" in notes

        second = cli.turn("and now?", timeout=10)
        assert second[0]["type"] == "system" and second[0]["subtype"] == "init"
        assert second[-1]["subtype"] == "success" and second[-1]["is_error"] is False
        assert second[-1]["result"] == "second answer"
        # The exit status reflects the *last* result only: this one succeeded.
        cli.close_stdin()
        assert cli.wait_exit(timeout=10) == 0
    # Generous bound: the CLI acks in ~20 ms on an idle machine.
    assert ack_ms < 2000


def test_api_error_400_ends_turn(claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path) -> None:
    # A generic 400 is retried silently a few times (the CLI drops optional betas between tries),
    # so the error must persist: make it the default reply rather than a single queued one.
    api.default = ApiError(400, "fake invalid request")
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        msgs = cli.turn("hi", timeout=10)

    result = msgs[-1]
    assert result["type"] == "result"
    assert result["is_error"] is True
    assert result["subtype"] == "success"  # sic: API failures are "success" + is_error
    assert result.get("terminal_reason") == "api_error"
    assert result.get("api_error_status") == 400
    assert "fake invalid request" in result["result"]
    synthetic = [a for a in of_type(msgs, "assistant") if a["message"]["model"] == "<synthetic>"]
    assert synthetic and "fake invalid request" in texts(synthetic[0])[0]
    assert len(api.message_requests()) >= 1


def test_api_error_500_without_retry_then_exit_one(
    claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path
) -> None:
    # x-should-retry: false turns the CLI's minutes-long 5xx backoff into an immediate failure.
    api.push(ApiError(500, "fake overload", should_retry=False))
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        msgs = cli.turn("hi", timeout=10)
        # Closing stdin after an is_error result: the CLI exits 1 on purpose (not a crash).
        cli.close_stdin()
        code = cli.wait_exit(timeout=10)
    result = msgs[-1]
    assert result["is_error"] is True and result.get("api_error_status") == 500
    assert len(api.message_requests()) == 1
    assert code == 1


def test_thinking_then_text(claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path) -> None:
    api.push(Thinking("pondering", then=Text("42")))
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        msgs = cli.turn("think", timeout=10)
    blocks = [b for a in of_type(msgs, "assistant") for b in a["message"]["content"]]
    assert {"type": "thinking", "thinking": "pondering", "signature": "fake-signature"} in blocks
    deltas = [
        m["event"]["delta"]["type"]
        for m in of_type(msgs, "stream_event")
        if m["event"]["type"] == "content_block_delta"
    ]
    assert "thinking_delta" in deltas and "signature_delta" in deltas
    assert msgs[-1]["result"] == "42" and msgs[-1]["is_error"] is False


def test_two_turns_each_start_with_init(
    claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path
) -> None:
    api.push(Text("one"), Text("two"))
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        first = cli.turn("first", timeout=10)
        second = cli.turn("second", timeout=10)
        assert cli.proc.poll() is None  # still alive between turns

    for msgs, answer in ((first, "one"), (second, "two")):
        assert msgs[0]["type"] == "system" and msgs[0]["subtype"] == "init"
        assert len(of_type(msgs, "system", "init")) == 1
        assert msgs[-1]["type"] == "result" and msgs[-1]["result"] == answer
    assert first[0]["session_id"] == second[0]["session_id"]
    # The second request carries the whole conversation so far.
    reqs = api.message_requests()
    assert len(reqs) == 2
    assert [m["role"] for m in reqs[1].messages if m["role"] == "assistant"] == ["assistant"]


def test_closing_stdin_exits_zero(claude_bin: str, api: FakeModelAPI, tmp_path: Path, workdir: Path) -> None:
    with start_cli(claude_bin, api, tmp_path, workdir) as cli:
        cli.turn("hi", timeout=10)
        cli.close_stdin()
        code = cli.wait_exit(timeout=10)
    assert code == 0
    assert cli.stderr == b""
