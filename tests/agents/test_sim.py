"""End-to-end tests of the simulated agent (``python -m turnstile.engine.agents.sim``).

Every test runs the sim as a real subprocess, talks stream-json to it over pipes and checks what
it prints, with a deadline on every read and the process killed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from turnstile.engine.agents.sim import _DIRECTIVE_SPEC, Directives, parse_directives

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = ROOT / "engine" / "agents" / "recordings"
# The argv Turnstile's builder uses for the real CLI, plus "no sleeps" for speed.
CLI_FLAGS = ("-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose")
FAST = (*CLI_FLAGS, "--speed", "0")
PARTIAL = (*FAST, "--include-partial-messages")
TIMEOUT = 10.0

JSON = dict[str, Any]


class SimProcess:
    """A running sim with a stdout pump thread, so every read has a deadline."""

    def __init__(self, *args: str) -> None:
        # A file, not a pipe: a stderr flood must never block the sim on a reader we do not run.
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "turnstile.engine.agents.sim", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
        )
        self._lines: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read_stdout, daemon=True)
        self._pump.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self._lines.put((time.monotonic(), line))
        self._lines.put(None)

    # ---- stdin

    def send(self, obj: JSON) -> None:
        self.send_raw(json.dumps(obj).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def prompt(self, text: str, uuid: str | None = None) -> None:
        message: JSON = {
            "type": "user",
            "message": {"role": "user", "content": text},
            "parent_tool_use_id": None,
            "session_id": "default",
        }
        if uuid is not None:
            message["uuid"] = uuid
        self.send(message)

    def control(self, request_id: str, subtype: str, **fields: Any) -> None:
        self.send(
            {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype, **fields}}
        )

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    # ---- stdout

    def timed_raw_line(self, timeout: float = TIMEOUT) -> tuple[float, bytes] | None:
        """Next stdout line with its arrival time, or None at EOF; fails after ``timeout``."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no stdout line within {timeout} s; stderr: {self.stderr()[-2000:]}")
        if item is None:
            self._lines.put(None)  # stay at EOF for later reads
        return item

    def raw_line(self, timeout: float = TIMEOUT) -> bytes | None:
        item = self.timed_raw_line(timeout)
        return None if item is None else item[1]

    def line(self, timeout: float = TIMEOUT) -> JSON:
        raw = self.raw_line(timeout)
        assert raw is not None, f"stdout closed; exit {self.proc.poll()}; stderr: {self.stderr()[-2000:]}"
        obj = json.loads(raw)
        assert isinstance(obj, dict)
        return obj

    def until(self, predicate: Callable[[JSON], bool], timeout: float = TIMEOUT) -> list[JSON]:
        """Lines up to and including the first that matches ``predicate``."""
        deadline = time.monotonic() + timeout
        lines: list[JSON] = []
        while True:
            lines.append(self.line(max(0.01, deadline - time.monotonic())))
            if predicate(lines[-1]):
                return lines

    def until_result(self, timeout: float = TIMEOUT) -> list[JSON]:
        return self.until(lambda line: line.get("type") == "result", timeout)

    def no_line_within(self, seconds: float) -> bool:
        try:
            item = self._lines.get(timeout=seconds)
        except queue.Empty:
            return True
        self._lines.put(item)  # order no longer matters: the caller fails the test
        return False

    def rest(self, timeout: float = TIMEOUT) -> list[bytes]:
        """All remaining raw stdout lines until EOF."""
        lines: list[bytes] = []
        while (raw := self.raw_line(timeout)) is not None:
            lines.append(raw)
        return lines

    # ---- process

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._pump.join(timeout=TIMEOUT)
        self.stderr_file.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., SimProcess]]:
    """Start sims; every one is killed when the test ends, whatever happened."""
    procs: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        proc = SimProcess(*args)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()


def kinds(lines: list[JSON]) -> list[str]:
    """A compact label per line: ``system/init``, ``assistant:text``, ``event:text_delta`` ..."""
    labels: list[str] = []
    for line in lines:
        kind = line["type"]
        if kind == "system":
            labels.append(f"system/{line['subtype']}")
        elif kind == "assistant":
            labels.append("assistant:" + line["message"]["content"][0]["type"])
        elif kind == "user":
            content = line["message"]["content"]
            labels.append("user:" + (content[0]["type"] if isinstance(content, list) else "str"))
        elif kind == "stream_event":
            event = line["event"]
            detail = event.get("delta", {}).get("type") if event["type"] == "content_block_delta" else None
            labels.append("event:" + (detail or event["type"]))
        elif kind == "result":
            labels.append(f"result/{line['subtype']}")
        else:
            labels.append(kind)
    return labels


# ------------------------------------------------------------------------------------------
# plain turns


def test_plain_turn_sequence_and_fields(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    assert sim.no_line_within(0.3), "nothing may be printed before the first user message"
    sim.prompt("Hello there, dear simulator friend")
    lines = sim.until_result()
    assert kinds(lines) == ["system/init", "assistant:text", "result/success"]
    init, assistant, result = lines

    session_id = init["session_id"]
    assert len(session_id) == 36 and session_id.count("-") == 4
    assert init["cwd"] == str(ROOT)
    assert init["model"] == "claude-sim-1"
    assert "Bash" in init["tools"]
    assert init["claude_code_version"] == "sim-0.1"
    assert init["uuid"]

    message = assistant["message"]
    assert message["id"].startswith("msg_") and message["model"] == "claude-sim-1"
    assert message["role"] == "assistant" and len(message["content"]) == 1
    text = message["content"][0]["text"]
    assert "Hello there, dear simulator friend" in text  # the default answer echoes the prompt
    assert assistant["session_id"] == session_id

    assert result["is_error"] is False
    assert result["result"] == text
    assert result["session_id"] == session_id
    assert result["num_turns"] == 1
    assert result["terminal_reason"] == "completed"
    assert isinstance(result["duration_ms"], int) and isinstance(result["duration_api_ms"], int)
    assert result["total_cost_usd"] > 0
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert result["uuid"] and result["uuid"] != init["uuid"]

    sim.close_stdin()
    assert sim.wait() == 0
    assert sim.rest() == []


def test_model_flag_and_unknown_flags(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--model", "opus-x", "--allowedTools", "Bash,Read", "--frobnicate", "7")
    sim.prompt("hi")
    init, assistant, _ = sim.until_result()
    assert init["model"] == "opus-x" and assistant["message"]["model"] == "opus-x"
    sim.close_stdin()
    assert sim.wait() == 0
    assert "--frobnicate 7" in sim.stderr()


def test_partial_messages_ordering(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*PARTIAL)
    sim.prompt("Think first [[sim thinking=2 tokens=5]]")
    lines = sim.until_result()
    assert kinds(lines) == [
        "system/init",
        "system/status",
        "event:message_start",
        "event:content_block_start",
        "event:thinking_delta",
        "event:thinking_delta",
        "event:signature_delta",
        "assistant:thinking",  # after the block's last delta, before its content_block_stop
        "event:content_block_stop",
        "event:content_block_start",
        *["event:text_delta"] * 5,
        "assistant:text",
        "event:content_block_stop",
        "event:message_delta",
        "event:message_stop",
        "result/success",
    ]
    events = [line["event"] for line in lines if line["type"] == "stream_event"]
    message_id = events[0]["message"]["id"]
    assistants = [line for line in lines if line["type"] == "assistant"]
    assert {a["message"]["id"] for a in assistants} == {message_id}  # one API message, two lines
    assert [e["index"] for e in events if e["type"] == "content_block_start"] == [0, 1]

    thinking = "".join(
        e["delta"]["thinking"] for e in events if e.get("delta", {}).get("type") == "thinking_delta"
    )
    signature = next(
        e["delta"]["signature"] for e in events if e.get("delta", {}).get("type") == "signature_delta"
    )
    assert assistants[0]["message"]["content"][0] == {
        "type": "thinking",
        "thinking": thinking,
        "signature": signature,
    }
    text = "".join(e["delta"]["text"] for e in events if e.get("delta", {}).get("type") == "text_delta")
    assert assistants[1]["message"]["content"][0]["text"] == text == lines[-1]["result"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert all(line["session_id"] == lines[0]["session_id"] for line in lines)


def test_two_turns_one_process_queued(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    # Both written at once: the second waits in the queue and is served after the first.
    sim.prompt("first [[sim say=one]]")
    sim.prompt("second [[sim say=two]]")
    first = sim.until_result()
    second = sim.until_result()
    assert kinds(first) == kinds(second) == ["system/init", "assistant:text", "result/success"]
    assert first[-1]["result"] == "one" and second[-1]["result"] == "two"
    assert first[0]["session_id"] == second[0]["session_id"] == second[-1]["session_id"]
    assert first[0]["uuid"] != second[0]["uuid"]
    # total_cost_usd is the process's running total, not the turn's cost.
    assert second[-1]["total_cost_usd"] > first[-1]["total_cost_usd"] > 0
    sim.close_stdin()
    assert sim.wait() == 0


def test_tools_produce_tool_use_and_result_pairs(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("run things [[sim tools=3 tool_s=0]]")
    lines = sim.until_result()
    tool_uses = [
        (i, block)
        for i, line in enumerate(lines)
        if line["type"] == "assistant"
        for block in line["message"]["content"]
        if block["type"] == "tool_use"
    ]
    tool_results = [
        (i, block)
        for i, line in enumerate(lines)
        if line["type"] == "user"
        for block in line["message"]["content"]
        if block["type"] == "tool_result"
    ]
    assert len(tool_uses) == len(tool_results) == 3
    for n, ((use_at, use), (result_at, result)) in enumerate(zip(tool_uses, tool_results, strict=True)):
        assert use["name"] == "Bash" and "command" in use["input"]
        assert result["tool_use_id"] == use["id"] and result["is_error"] is False
        assert use_at < result_at
        if n + 1 < len(tool_uses):
            assert result_at < tool_uses[n + 1][0]  # the tool ran before the next API call
    assert len({use["id"] for _, use in tool_uses}) == 3
    assert kinds(lines)[-2:] == ["assistant:text", "result/success"]
    assert lines[-1]["num_turns"] == 4  # 3 tool calls + the final answer
    # Each API call is its own message id.
    message_ids = [line["message"]["id"] for line in lines if line["type"] == "assistant"]
    assert len(set(message_ids)) == 4


def test_max_turns_stops_tool_loop(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--max-turns", "2")
    sim.prompt("[[sim tools=3 tool_s=0]]")
    lines = sim.until_result()
    assert kinds(lines).count("user:tool_result") == 2
    assert lines[-1]["subtype"] == "error_max_turns" and lines[-1]["is_error"] is True
    assert lines[-1]["terminal_reason"] == "max_turns" and lines[-1]["num_turns"] == 2


def test_replay_user_messages_echo(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--replay-user-messages")
    sim.prompt("echo me", uuid="6ee27767-fcaf-4641-9998-7a720cbef7d6")
    lines = sim.until_result()
    assert kinds(lines) == ["system/init", "user:str", "assistant:text", "result/success"]
    echo = lines[1]
    assert echo["isReplay"] is True
    assert echo["uuid"] == "6ee27767-fcaf-4641-9998-7a720cbef7d6"
    assert echo["message"] == {"role": "user", "content": "echo me"}
    assert echo["session_id"] == lines[0]["session_id"]


# ------------------------------------------------------------------------------------------
# control protocol and interrupts


def test_interrupt_mid_hang_then_next_turn(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*PARTIAL)
    sim.prompt("[[sim hang=mid tokens=6]]")
    before = sim.until(lambda line: line.get("event", {}).get("delta", {}).get("type") == "text_delta")
    before += [sim.line(), sim.line()]
    assert kinds(before)[-3:] == ["event:text_delta"] * 3
    assert sim.no_line_within(0.3), "hang=mid must stop emitting halfway"
    partial_text = "".join(line["event"]["delta"]["text"] for line in before[-3:])

    sim.control("req_1_abcd", "interrupt")
    tail = sim.until_result()
    assert kinds(tail) == [
        "control_response",
        "assistant:text",
        "user:text",
        "event:content_block_stop",
        "event:message_delta",
        "event:message_stop",
        "result/error_during_execution",
    ]
    response = tail[0]["response"]
    assert response == {"subtype": "success", "request_id": "req_1_abcd", "response": {"still_queued": []}}
    assert tail[1]["aborted"] is True and tail[1]["message"]["content"][0]["text"] == partial_text
    assert tail[2]["message"]["content"] == [{"type": "text", "text": "[Request interrupted by user]"}]
    result = tail[-1]
    assert result["is_error"] is True and result["terminal_reason"] == "aborted_streaming"
    assert "result" not in result and result["errors"]

    sim.prompt("still alive? [[sim say=alive]]")
    again = sim.until_result()
    assert again[0]["subtype"] == "init" and again[-1]["result"] == "alive"
    assert again[-1]["subtype"] == "success"
    sim.close_stdin()
    assert sim.wait() == 0


def test_interrupt_during_tool_is_aborted_tools(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*CLI_FLAGS, "--speed", "1")
    sim.prompt("[[sim tools=1 tool_s=30 ttft_ms=0 token_ms=0]]")
    sim.until(lambda line: line["type"] == "assistant")
    sim.control("req_2", "interrupt")
    tail = sim.until_result()
    assert kinds(tail) == [
        "control_response",
        "user:tool_result",
        "user:text",
        "result/error_during_execution",
    ]
    assert tail[1]["message"]["content"][0]["is_error"] is True
    assert tail[-1]["terminal_reason"] == "aborted_tools"
    # stdin EOF after an is_error result exits 1, like the real CLI.
    sim.close_stdin()
    assert sim.wait() == 1


def test_interrupt_lists_and_keeps_queued_messages(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim hang=first]]")
    sim.until(lambda line: line.get("subtype") == "init")
    sim.prompt("queued [[sim say=later]]", uuid="99999999-2222-4333-8444-555555555555")
    assert sim.no_line_within(0.2)
    sim.control("req_3", "interrupt")
    tail = sim.until_result()
    assert tail[0]["response"]["response"] == {"still_queued": ["99999999-2222-4333-8444-555555555555"]}
    assert kinds(tail)[1:] == ["user:text", "result/error_during_execution"]
    served = sim.until_result()
    assert served[-1]["result"] == "later"


def test_ignore_interrupt_flag_acknowledges_nothing(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--ignore-interrupt")
    sim.prompt("[[sim hang=first]]")
    sim.until(lambda line: line.get("subtype") == "init")
    sim.control("req_4", "interrupt")
    assert sim.no_line_within(0.5), "--ignore-interrupt must not answer nor end the turn"
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.wait() == 143


def test_ignore_interrupt_turn_keeps_going(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*CLI_FLAGS, "--speed", "1")
    sim.prompt("[[sim ignore_interrupt tokens=5 token_ms=100 ttft_ms=0]]")
    sim.until(lambda line: line.get("subtype") == "init")
    sim.control("req_5", "interrupt")
    lines = sim.until_result()
    assert kinds(lines) == ["assistant:text", "result/success"]
    # The directive covers its own turn only: an idle interrupt is acknowledged again.
    sim.control("req_6", "interrupt")
    assert sim.line()["response"]["request_id"] == "req_6"


def test_initialize_and_unknown_control_requests(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.control("req_init", "initialize", hooks=None)
    init_response = sim.line()["response"]
    assert init_response["subtype"] == "success" and init_response["request_id"] == "req_init"
    assert init_response["response"]["claude_code_version"] == "sim-0.1"
    sim.control("req_bad", "bogus_thing")
    error = sim.line()["response"]
    assert error == {
        "subtype": "error",
        "request_id": "req_bad",
        "error": "Unsupported control request subtype: bogus_thing",
        "error_code": "unsupported_request",
    }
    sim.control("req_model", "set_model", model="other-model")
    assert sim.line()["response"]["subtype"] == "success"
    assert sim.no_line_within(0.2), "control requests alone start no turn"
    sim.prompt("hi")
    assert sim.until_result()[0]["model"] == "other-model"


def test_bad_stdin_line_exits_1(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.send_raw(b"not json\n")
    assert sim.wait() == 1
    assert "Error parsing streaming input line" in sim.stderr()


# ------------------------------------------------------------------------------------------
# faults


def test_crash_mid_exits_1_without_result(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*PARTIAL)
    sim.prompt("[[sim crash=mid tokens=4]]")
    lines = [json.loads(raw) for raw in sim.rest()]
    assert sim.wait() == 1
    assert kinds(lines).count("event:text_delta") == 2
    assert "result" not in [line["type"] for line in lines]
    assert "crash=mid" in sim.stderr()


def test_crash_start_and_crash_at_start(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim crash=start]]")
    lines = [json.loads(raw) for raw in sim.rest()]
    assert sim.wait() == 1
    assert kinds(lines) == ["system/init"]

    early = spawn(*FAST, "--crash-at-start")
    assert early.wait() == 1
    assert early.rest() == [] and "crash" in early.stderr()


def test_kill_mid_is_sigkill(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim kill=mid]]")
    lines = [json.loads(raw) for raw in sim.rest()]
    assert sim.wait() == -signal.SIGKILL
    assert kinds(lines) == ["system/init"]


def test_exit0_and_truncate_end_without_result(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim exit0]]")
    lines = sim.rest()
    assert sim.wait() == 0
    assert [json.loads(raw)["type"] for raw in lines] == ["system"]

    cut = spawn(*FAST)
    cut.prompt("[[sim truncate tokens=4]]")
    raw_lines = cut.rest()
    assert cut.wait() == 0
    assert json.loads(raw_lines[0])["subtype"] == "init"
    last = raw_lines[-1]
    assert len(raw_lines) == 2 and last.startswith(b"{") and not last.endswith(b"\n")
    with pytest.raises(ValueError):
        json.loads(last)


def test_garbage_oversized_and_nonutf8_lines(spawn: Callable[..., SimProcess]) -> None:
    size = 300_000
    sim = spawn(*FAST)
    sim.prompt(f"[[sim garbage oversized={size} nonutf8 tokens=4]]")
    raw_lines: list[bytes] = []
    while not raw_lines or b'"type":"result"' not in raw_lines[-1]:
        raw = sim.raw_line()
        assert raw is not None
        raw_lines.append(raw)
    noise = [raw for raw in raw_lines if not raw.startswith(b"{")]
    assert noise == [b"[SimNoise] this line is not JSON\n"]

    def parses(raw: bytes) -> bool:
        try:
            json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is a ValueError too
            return False
        return True

    broken = [raw for raw in raw_lines if raw.startswith(b"{") and not parses(raw)]
    assert len(broken) == 2
    malformed = [raw for raw in broken if raw == b'{"type":"assistant","message":{"content":[\n']
    assert len(malformed) == 1
    non_utf8 = [raw for raw in broken if raw not in malformed]
    with pytest.raises(UnicodeDecodeError):
        non_utf8[0].decode("utf-8")
    oversized = [raw for raw in raw_lines if len(raw) == size + 1]
    assert len(oversized) == 1 and oversized[0].endswith(b"\n")
    assert json.loads(oversized[0])["subtype"] == "sim_oversized"
    # The faults come mid-turn: after init, before the answer; the turn still completes.
    first_fault = raw_lines.index(noise[0])
    assert json.loads(raw_lines[0])["subtype"] == "init" and first_fault > 0
    assert json.loads(raw_lines[-2])["type"] == "assistant"
    assert json.loads(raw_lines[-1])["is_error"] is False


def test_stderr_flood(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim stderr_flood=5000]]")
    assert sim.until_result()[-1]["subtype"] == "success"
    sim.close_stdin()
    assert sim.wait() == 0
    assert sim.stderr().count("sim: stderr flood line") == 5000


def test_api_error_400_and_retried_529(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim api_error=400]]")
    lines = sim.until_result()
    assert kinds(lines) == ["system/init", "assistant:text", "result/success"]
    synthetic, result = lines[1], lines[2]
    assert synthetic["message"]["model"] == "<synthetic>" and synthetic["error"]
    assert synthetic["message"]["content"][0]["text"].startswith("API Error: 400")
    assert result["is_error"] is True and result["terminal_reason"] == "api_error"
    assert result["api_error_status"] == 400 and result["result"].startswith("API Error: 400")

    sim.prompt("[[sim api_error=529 retries=3]]")
    lines = sim.until_result()
    retries = [line for line in lines if line.get("subtype") == "api_retry"]
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    assert {r["error_status"] for r in retries} == {529} and {r["max_retries"] for r in retries} == {3}
    assert lines[-1]["api_error_status"] == 529 and lines[-1]["is_error"] is True
    sim.close_stdin()
    assert sim.wait() == 1  # the last result was an error


# ------------------------------------------------------------------------------------------
# stdin EOF, signals, startup


def test_stdin_eof_when_idle_exits_0_quickly(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("warm up")
    sim.until_result()
    start = time.monotonic()
    sim.close_stdin()
    assert sim.wait() == 0
    assert time.monotonic() - start < 0.5


def test_stdin_eof_mid_turn_finishes_the_turn(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*CLI_FLAGS, "--speed", "1")
    sim.prompt("[[sim tokens=3 token_ms=100 ttft_ms=50]]")
    sim.close_stdin()  # like the SDK's one-shot query: the CLI still answers
    lines = sim.until_result()
    assert kinds(lines) == ["system/init", "assistant:text", "result/success"]
    assert sim.wait() == 0


def test_stdin_eof_during_hang_exits_0(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST)
    sim.prompt("[[sim hang=first]]")
    sim.until(lambda line: line.get("subtype") == "init")
    start = time.monotonic()
    sim.close_stdin()
    assert sim.wait() == 0
    assert time.monotonic() - start < 1.0
    assert sim.rest() == []


def test_sigterm_exits_143(spawn: Callable[..., SimProcess]) -> None:
    idle = spawn(*FAST)
    idle.prompt("hi")
    idle.until_result()
    idle.proc.send_signal(signal.SIGTERM)
    assert idle.wait(2.0) == 143

    busy = spawn(*FAST)
    busy.prompt("[[sim hang=mid]]")
    busy.until(lambda line: line.get("subtype") == "init")
    start = time.monotonic()
    busy.proc.send_signal(signal.SIGTERM)
    assert busy.wait(2.0) == 143
    assert time.monotonic() - start < 1.0


def test_slow_start_delays_first_output(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--slow-start", "0.6")
    sim.prompt("hi")
    arrived = sim.timed_raw_line()
    assert arrived is not None
    assert arrived[0] - sim.started >= 0.6


def test_realistic_pacing(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*CLI_FLAGS, "--include-partial-messages", "--speed", "1")
    sim.prompt("[[sim tokens=6 token_ms=50 ttft_ms=0]]")
    timed: list[tuple[float, JSON]] = []
    while not timed or timed[-1][1]["type"] != "result":
        item = sim.timed_raw_line()
        assert item is not None
        timed.append((item[0], json.loads(item[1])))
    deltas = [t for t, line in timed if kinds([line]) == ["event:text_delta"]]
    assert len(deltas) == 6
    assert deltas[-1] - deltas[0] >= 0.2  # 5 gaps of 50 ms
    # Default pacing: 0.2-0.5 s from the prompt's API call to its first token.
    sim.prompt("hello")
    start = time.monotonic()
    lines = sim.until(lambda line: line.get("event", {}).get("type") == "message_start")
    assert time.monotonic() - start >= 0.2 and kinds(lines)[:2] == ["system/init", "system/status"]


def test_speed_zero_is_fast(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*PARTIAL)
    sim.prompt("warm up")
    sim.until_result()
    start = time.monotonic()
    sim.prompt("[[sim tokens=2000 thinking=50 tools=5]]")
    lines = sim.until_result()
    assert time.monotonic() - start < 3.0
    assert kinds(lines).count("event:text_delta") == 2000


def test_verbose_required_with_print(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn("-p", "--input-format", "stream-json", "--output-format", "stream-json")
    assert sim.wait() == 1
    assert "requires --verbose" in sim.stderr()


# ------------------------------------------------------------------------------------------
# resume


def test_resume_lost_gives_lone_error_result(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--resume", "lost-x")
    lines = sim.rest()  # without writing anything on stdin: it fails at startup
    assert sim.wait() == 1
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["type"] == "result" and result["subtype"] == "error_during_execution"
    assert result["is_error"] is True and result["num_turns"] == 0 and "result" not in result
    assert result["session_id"] == "lost-x"
    assert result["errors"] == ["No conversation found with session ID: lost-x"]
    assert "No conversation found" in sim.stderr()


def test_resume_reuses_session_id(spawn: Callable[..., SimProcess]) -> None:
    sim = spawn(*FAST, "--resume", "fd218a22-0efb-4125-a0df-023b74a2e956")
    sim.prompt("hi")
    lines = sim.until_result()
    assert {line["session_id"] for line in lines} == {"fd218a22-0efb-4125-a0df-023b74a2e956"}


# ------------------------------------------------------------------------------------------
# replay of recordings


def first_turn(path: Path) -> list[bytes]:
    lines = [line + b"\n" for line in path.read_bytes().split(b"\n") if line.strip()]
    end = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "result")
    return lines[: end + 1]


def without_t(line: bytes) -> list[tuple[str, Any]]:
    return [(key, value) for key, value in json.loads(line).items() if key != "_t"]


@pytest.mark.parametrize(
    "name",
    [
        "tool-use-turn",
        "tool-use-partial-messages",
        "foksa__open-claude-agent-sdk__tests__snapshots__streaming-haiku",
    ],
)
def test_replay_emits_recording_first_turn(spawn: Callable[..., SimProcess], name: str) -> None:
    (path,) = [p for p in RECORDINGS.glob("*.jsonl") if p.stem == name or p.stem.endswith("__" + name)]
    expected = first_turn(path)
    sim = spawn(*FAST)
    sim.prompt(f"[[sim replay={name}]]")
    emitted: list[bytes] = []
    while len(emitted) < len(expected):
        raw = sim.raw_line()
        assert raw is not None
        emitted.append(raw)
    # Same objects, same key order, in the same order; no _t anywhere.
    assert [without_t(line) for line in emitted] == [without_t(line) for line in expected]
    assert all(b'"_t"' not in line for line in emitted)
    for got, want in zip(emitted, expected, strict=True):
        if not want.startswith(b'{"_t":'):
            assert got == want  # untouched lines are byte for byte the recording
    assert sim.no_line_within(0.2), "only the first turn is replayed"
    sim.close_stdin()
    assert sim.wait() == 0


def test_replay_is_paced_by_t(spawn: Callable[..., SimProcess]) -> None:
    path = next(RECORDINGS.glob("*__tool-use-turn.jsonl"))
    turn = first_turn(path)
    span_ms = json.loads(turn[-1])["_t"] - json.loads(turn[0])["_t"]  # about 7.3 s
    sim = spawn(*CLI_FLAGS, "--speed", "0.1")
    sim.prompt("[[sim replay=tool-use-turn]]")
    times: list[float] = []
    for _ in turn:
        item = sim.timed_raw_line()
        assert item is not None
        times.append(item[0])
    assert times[-1] - times[0] >= 0.8 * span_ms / 1000 * 0.1


# ------------------------------------------------------------------------------------------
# directive parsing (in-process) and help


def test_parse_directives() -> None:
    raw, clean = parse_directives('Hi [[sim tokens=3 say="a ]] b" garbage]] there [[simple]] [[sim hang=mid')
    assert raw == {"tokens": "3", "say": "a ]] b", "garbage": True}
    assert clean == "Hi  there [[simple]] [[sim hang=mid"
    raw, _ = parse_directives("[[sim text=5]][[sim text=7 crash]]")
    directives, warnings = Directives.from_raw({**raw, "bogus": "1", "tools": "-2"})
    assert directives.text_words == 7 and directives.crash == "mid"
    assert len(warnings) == 2


def _sim_help(flag: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "turnstile.engine.agents.sim", flag],
        cwd=ROOT,
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
        env={**os.environ, "COLUMNS": "120"},
    ).stdout.decode()


def test_help_is_short_and_points_at_the_directive_table() -> None:
    out = _sim_help("--help")
    assert len(out.splitlines()) < 80  # a usage, not the module's whole docstring
    for word in ("--ignore-interrupt", "--speed", "--help-directives", "[[sim", "143 SIGTERM"):
        assert word in out
    assert "=====" not in out and "``" not in out  # no reStructuredText


def test_help_directives_documents_every_directive() -> None:
    out = _sim_help("--help-directives")
    assert out.startswith("Prompt directives\n")
    assert "hang=first|mid" in out
    undocumented = [key for key in _DIRECTIVE_SPEC if f"``{key}" not in out]
    assert undocumented == []
