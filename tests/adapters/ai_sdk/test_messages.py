"""``UIMessage`` values built by Turnstile equal what the SDK's own client builds from the same stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.adapters.ai_sdk.conftest import (
    TURN_FILES,
    VERSIONS,
    assert_all_valid,
    map_turn,
    run_js,
    sse_body,
    turn_entries,
)
from turnstile.adapters.ai_sdk.chunks import Chunk, TextDelta, TextStart
from turnstile.adapters.ai_sdk.mapping import TurnMapper
from turnstile.adapters.ai_sdk.messages import MessageBuilder, chat_history
from turnstile.engine.log import Entry, StreamEnded, TurnRequested

pytestmark = pytest.mark.slow


def build(mapped: list[tuple[int, list[Chunk]]]) -> MessageBuilder:
    builder = MessageBuilder()
    for _, chunks in mapped:
        for chunk in chunks:
            builder.apply(chunk)
    return builder


def approval_turn(*, denied: bool) -> list[tuple[int, list[Chunk]]]:
    """The tool-turn recording with a permission request on its tool call (the approval seam)."""
    entries = turn_entries(TURN_FILES["tool-turn"])
    mapper = TurnMapper("t1")
    mapped = [(e.seq, mapper.feed(e)) for e in entries[:15]]
    # As if the entry after the tool call's input were a permission request (and then its answer).
    mapped.append((16, mapper.approval_requested("req_1", "toolu_fake_0003")))
    if denied:
        mapped.append((17, mapper.approval_answered("toolu_fake_0003", approved=False)))
        mapped.append((18, mapper.feed(StreamEnded(seq=18, ts=None, stream="t1", outcome="completed"))))
    return mapped


@pytest.mark.parametrize("version", VERSIONS)
async def test_the_sdk_builds_the_same_message_from_every_recorded_turn(js: Path, version: int) -> None:
    turns = {name: map_turn(turn_entries(path)) for name, path in TURN_FILES.items()}
    if version >= 6:  # tool-approval-request and tool-output-denied exist from ai 6 on
        turns["approval-pending"] = approval_turn(denied=False)
        turns["approval-denied"] = approval_turn(denied=True)
    result = await run_js(
        js, {"op": "assemble", "version": version, "bodies": [sse_body(m) for m in turns.values()]}
    )
    for (name, mapped), sdk in zip(turns.items(), result["results"], strict=True):
        assert_all_valid(sdk["body"])
        ours = build(mapped)
        assert sdk["message"] == ours.message, name
        expected_errors = [ours.error] if ours.error else []
        assert sdk["errors"] == expected_errors, name
    assert turns["tool-turn"] and result["results"][1]["message"]["parts"][2]["state"] == "output-available"
    if version >= 6:
        pending = result["results"][-2]["message"]["parts"][2]
        assert pending["state"] == "approval-requested" and pending["approval"] == {"id": "req_1"}
        assert result["results"][-1]["message"]["parts"][2]["state"] == "output-denied"


async def test_chunks_the_sdk_rejects_are_reported(js: Path) -> None:
    # The check must be able to fail: an unknown chunk type, and a delta before its start.
    body = 'data: {"type":"start","messageId":"t1"}\n\ndata: {"type":"no-such-chunk"}\n\ndata: [DONE]\n\n'
    result = await run_js(js, {"op": "assemble", "version": 6, "bodies": [body]})
    assert result["results"][0]["body"]["invalid"], result
    body = 'data: {"type":"start"}\n\ndata: {"type":"text-delta","id":"x","delta":"a"}\n\ndata: [DONE]\n\n'
    result = await run_js(js, {"op": "assemble", "version": 6, "bodies": [body]})
    assert any("text-start" in e for e in result["results"][0]["errors"]), result


def test_the_builder_refuses_what_the_sdk_refuses() -> None:
    builder = MessageBuilder("t1")
    with pytest.raises(ValueError, match="not open"):
        builder.apply(TextDelta(id="t1-1", delta="x"))
    builder.apply(TextStart(id="t1-1"))
    builder.apply(TextDelta(id="t1-1", delta="x"))
    assert builder.parts == [{"type": "text", "text": "x", "state": "streaming"}]


def test_chat_history_from_a_session_log() -> None:
    done = turn_entries(TURN_FILES["tool-turn"], "t1")
    running = turn_entries(TURN_FILES["plain-text"], "t2")[:6]  # mid-answer
    queued: list[Entry] = [
        TurnRequested(seq=0, ts=None, stream="t3", prompt=[{"type": "text", "text": "later"}])
    ]
    history = chat_history([*done, *running, *queued])
    ids = [(m["id"], m["role"]) for m in history]
    assert ids == [
        ("t1-user", "user"),
        ("t1", "assistant"),
        ("t2-user", "user"),
        ("t2", "assistant"),
        ("t3-user", "user"),
    ]
    assert history[0]["parts"] == [{"type": "text", "text": "recorded prompt"}]
    assert history[4]["parts"] == [{"type": "text", "text": "later"}]
    t1: list[dict[str, Any]] = history[1]["parts"]
    assert [p["type"] for p in t1] == [
        "step-start",
        "text",
        "dynamic-tool",
        "step-start",
        "text",
        "data-turnstile-timing",
    ]
    t2 = history[3]["parts"]
    assert t2[-1]["type"] == "text" and t2[-1]["state"] == "streaming"  # as far as the stream got
