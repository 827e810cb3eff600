"""The mapping from a turn's log entries to UI message stream chunks, on real CLI output (sans-IO)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

import pytest

from tests.adapters.ai_sdk.conftest import TURN_FILES, as_json, map_turn, turn_entries
from turnstile.adapters.ai_sdk.chunks import (
    ApiRetryPart,
    ErrorChunk,
    Finish,
    ToolApprovalRequest,
    ToolOutputDenied,
)
from turnstile.adapters.ai_sdk.mapping import TurnMapper, finish_reason
from turnstile.engine.log import CliLine, Entry, StreamEnded, TurnRequested, entry_from_frame
from turnstile.engine.timing import TurnTiming


def types(mapped: list[tuple[int, list[object]]]) -> list[str]:
    return [as_json(c)["type"] for _, chunks in mapped for c in chunks]  # type: ignore[arg-type]


def chunks_of(name: str) -> list[dict[str, object]]:
    return [as_json(c) for _, chunks in map_turn(turn_entries(TURN_FILES[name])) for c in chunks]


def cli(seq: int, line: Mapping[str, object], stream: str = "t1") -> Entry:
    made = entry_from_frame(json.dumps(line).encode(), seq=seq, ts=None, stream=stream)
    assert made is not None and isinstance(made[0], CliLine)
    return made[0]


def test_a_tool_turn_with_partial_messages() -> None:
    chunks = chunks_of("tool-turn")
    assert [c["type"] for c in chunks] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "data-turnstile-timing",
        "finish",
    ]
    assert chunks[0] == {"type": "start", "messageId": "t1"}
    tool = chunks[8]
    assert tool == {
        "type": "tool-input-available",
        "toolCallId": "toolu_fake_0003",
        "toolName": "Bash",
        "input": {"command": "echo hi"},
        "dynamic": True,
    }
    assert "".join(str(c["inputTextDelta"]) for c in chunks[6:8]) == '{"command": "echo hi"}'
    assert chunks[9] == {
        "type": "tool-output-available",
        "toolCallId": "toolu_fake_0003",
        "output": "hi",
        "dynamic": True,
    }
    assert (
        "".join(str(c["delta"]) for c in chunks if c["type"] == "text-delta")
        == "I'll run that.The command printed: hi"
    )
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}
    timing = chunks[-2]
    assert timing["id"] == "timing" and "transient" not in timing
    assert timing["data"]["outcome"] == "completed" and timing["data"]["toolCalls"] == 1  # type: ignore[index]
    # Every text part is opened before its deltas and closed once, with ids unique in the message.
    starts = [c["id"] for c in chunks if c["type"] == "text-start"]
    assert len(set(starts)) == len(starts) == 2
    assert [c["id"] for c in chunks if c["type"] == "text-end"] == starts


def test_a_turn_without_partial_messages_maps_whole_blocks_and_one_step_per_model_call() -> None:
    chunks = chunks_of("tool-use-no-partials")
    kinds = [c["type"] for c in chunks]
    assert kinds.count("start-step") == kinds.count("finish-step") == 3  # three API messages
    assert "text-delta" in kinds and "tool-input-delta" not in kinds
    reasoning_ends = [c for c in chunks if c["type"] == "reasoning-end"]
    assert len(reasoning_ends) == 2
    assert all(str(c["providerMetadata"]["anthropic"]["signature"]).startswith("Ep") for c in reasoning_ends)  # type: ignore[index]
    errors = [c for c in chunks if c["type"] == "tool-output-error"]
    assert len(errors) == 1 and "Blocked: standalone sleep 45" in str(errors[0]["errorText"])
    outputs = [c for c in chunks if c["type"] == "tool-output-available"]
    assert len(outputs) == 1 and "running in background" in str(outputs[0]["output"])
    # The echoed prompt (--replay-user-messages) is not an output of anything.
    assert sum(1 for c in chunks if c["type"] == "tool-input-available") == 2


def test_thinking_with_partial_messages_is_reasoning_with_its_signature() -> None:
    chunks = chunks_of("tool-use-partials")
    start = chunks.index({"type": "reasoning-start", "id": "t1-1"})
    end = next(c for c in chunks if c["type"] == "reasoning-end")
    assert start < chunks.index(end)
    assert str(end["providerMetadata"]["anthropic"]["signature"]).startswith("EtQC")  # type: ignore[index]
    assert [c["type"] for c in chunks].count("tool-input-delta") == 4  # the empty first delta is skipped


def test_an_interrupted_turn_ends_with_abort_and_its_reason() -> None:
    chunks = chunks_of("interrupted-turn")
    assert [c["type"] for c in chunks][-4:] == ["text-end", "finish-step", "data-turnstile-timing", "abort"]
    assert "aborted_streaming" in str(chunks[-1]["reason"])
    text = "".join(str(c["delta"]) for c in chunks if c["type"] == "text-delta")
    assert text == "word " * 10  # the partial answer, once (the aborted assistant line repeats it)
    assert not any(c["type"] in ("finish", "error") for c in chunks)


def test_an_api_error_ends_with_error_carrying_the_real_reason() -> None:
    chunks = chunks_of("api-error-400")
    assert [c["type"] for c in chunks] == ["start", "data-turnstile-timing", "error", "finish"]
    assert chunks[2] == {"type": "error", "errorText": "API Error: 400 fake invalid request"}
    assert chunks[3] == {"type": "finish", "finishReason": "error"}


def test_api_retries_are_transient_data_parts() -> None:
    retry = {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 1,
        "max_retries": 10,
        "retry_delay_ms": 583,
        "error_status": 529,
        "error": "server_error",
    }
    mapper = TurnMapper("t3")
    mapper.feed(TurnRequested(seq=1, ts=None, stream="t3", prompt="x"))
    (chunk,) = mapper.feed(cli(2, retry, "t3"))
    assert isinstance(chunk, ApiRetryPart)
    assert as_json(chunk) == {
        "type": "data-turnstile-api-retry",
        "data": {
            "attempt": 1,
            "maxRetries": 10,
            "retryDelayMs": 583.0,
            "errorStatus": 529,
            "error": "server_error",
        },
        "transient": True,
    }


def test_a_turn_cut_short_closes_what_it_opened() -> None:
    # The tool-turn recording up to two input deltas of its tool call, then the process dies.
    entries = turn_entries(TURN_FILES["tool-turn"])[:12]
    assert b"echo hi" in bytes(entries[-1].msg)  # type: ignore[union-attr]
    entries.append(
        StreamEnded(seq=13, ts=None, stream="t1", outcome="failed", reason="process killed by signal 9")
    )
    chunks = [as_json(c) for _, cs in map_turn(entries) for c in cs]
    tail = chunks[-5:]
    assert [c["type"] for c in tail] == [
        "tool-input-error",
        "finish-step",
        "data-turnstile-timing",
        "error",
        "finish",
    ]
    assert tail[0]["input"] == {"command": "echo hi"}  # the input as far as it came
    assert tail[0]["dynamic"] is True and "process killed by signal 9" in str(tail[0]["errorText"])
    assert tail[3] == {"type": "error", "errorText": "process killed by signal 9"}

    # A tool whose input was complete but that never answered gets an error output.
    entries = turn_entries(TURN_FILES["tool-turn"])[:15]
    entries.append(
        StreamEnded(seq=16, ts=None, stream="t1", outcome="timed_out", reason="idle timeout after 600 s")
    )
    chunks = [as_json(c) for _, cs in map_turn(entries) for c in cs]
    (output,) = [c for c in chunks if c["type"] == "tool-output-error"]
    assert output["toolCallId"] == "toolu_fake_0003" and "idle timeout" in str(output["errorText"])
    assert [c["type"] for c in chunks][-2:] == ["error", "finish"]


def test_the_mapping_is_a_function_of_the_log() -> None:
    for name, path in TURN_FILES.items():
        entries = turn_entries(path)
        first, again = map_turn(entries), map_turn(entries)
        assert [(s, [as_json(c) for c in cs]) for s, cs in first] == [
            (s, [as_json(c) for c in cs]) for s, cs in again
        ]
        # Nothing after the terminal entry, and exactly one terminal chunk.
        ended = TurnMapper("t1")
        for entry in entries:
            ended.feed(entry)
        assert ended.ended and ended.feed(entries[1]) == []
        kinds = types(first)  # type: ignore[arg-type]
        assert kinds[0] == "start" and kinds.count("start") == 1, name
        assert sum(kinds.count(k) for k in ("finish", "abort", "error")) in (1, 2), name
        assert kinds.count("start-step") == kinds.count("finish-step"), name


def test_subagent_lines_are_not_mapped() -> None:
    mapper = TurnMapper("t1")
    mapper.feed(TurnRequested(seq=1, ts=None, stream="t1", prompt="x"))
    nested = {
        "type": "assistant",
        "message": {
            "id": "m2",
            "model": "m",
            "role": "assistant",
            "content": [{"type": "text", "text": "inner"}],
        },
        "parent_tool_use_id": "toolu_task",
    }
    assert mapper.feed(cli(2, nested)) == []


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        (None, "stop"),
        ("max_tokens", "length"),
        ("refusal", "content-filter"),
        ("pause_turn", "other"),
        ("new", "other"),
    ],
)
def test_finish_reason(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_a_completed_turn_finishes_with_the_last_stop_reason() -> None:
    entries = turn_entries(TURN_FILES["plain-text"])
    result = json.loads(bytes(entries[-2].msg))  # type: ignore[union-attr]
    result["stop_reason"] = "max_tokens"
    entries[-2] = cli(entries[-2].seq, result)
    last = map_turn(entries)[-1][1][-1]
    assert isinstance(last, Finish) and last.finish_reason == "length"


def test_the_approval_seam() -> None:
    entries = turn_entries(TURN_FILES["tool-turn"])
    mapper = TurnMapper("t1")
    for entry in entries[:15]:  # up to the tool call's complete input, before its result
        mapper.feed(entry)
    assert mapper.approval_requested("req_7", "toolu_unknown") == []
    assert mapper.approval_requested("req_7", "toolu_fake_0003") == [
        ToolApprovalRequest(approval_id="req_7", tool_call_id="toolu_fake_0003")
    ]
    assert mapper.approval_answered("toolu_fake_0003", approved=True) == []
    assert mapper.approval_answered("toolu_fake_0003", approved=False) == [
        ToolOutputDenied(tool_call_id="toolu_fake_0003")
    ]
    rest = [c for entry in entries[15:] for c in mapper.feed(entry)]
    assert not any(
        as_json(c)["type"].startswith("tool-output") for c in rest
    )  # denied: its error result is not sent
    assert mapper.approval_requested("req_8", "toolu_fake_0003") == []  # the turn is over


def test_the_error_text_is_never_empty() -> None:
    mapper = TurnMapper("t1")
    mapper.feed(TurnRequested(seq=1, ts=None, stream="t1", prompt="x"))
    chunks = mapper.feed(
        StreamEnded(seq=2, ts=None, stream="t1", outcome="timed_out", timing=TurnTiming(total_ms=5.0))
    )
    error = next(c for c in chunks if isinstance(c, ErrorChunk))
    assert error.error_text == "the turn ended timed out"


@pytest.mark.parametrize("module", ["chunks", "mapping", "messages", "requests"])
def test_the_mapping_modules_do_no_io(module: str) -> None:
    code = (
        "import sys\n"
        f"import turnstile.adapters.ai_sdk.{module}\n"
        "print(','.join(m for m in ('trio', 'anyio', 'socket', 'asyncio', 'starlette') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "", f"turnstile.adapters.ai_sdk.{module} loads {out.stdout.strip()}"


def test_a_real_message_that_carries_an_error_is_still_shown() -> None:
    mapper = TurnMapper("t1")
    mapper.feed(TurnRequested(seq=1, ts=None, stream="t1", prompt="x"))
    cut = {
        "type": "assistant",
        "message": {
            "id": "m1",
            "model": "claude-x",
            "role": "assistant",
            "content": [{"type": "text", "text": "half"}],
        },
        "parent_tool_use_id": None,
        "error": "max_output_tokens",
    }
    kinds = [as_json(c)["type"] for c in mapper.feed(cli(2, cut))]
    assert kinds == ["start-step", "text-start", "text-delta", "text-end"]
