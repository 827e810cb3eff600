"""turnstile.engine.log: every fixture line becomes an entry that keeps the CLI's bytes exactly; bad input is data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnstile.engine.framing import Oversized, Truncated
from turnstile.engine.log import (
    CliDecodeError,
    CliLine,
    CliOversized,
    Entry,
    ProcessExited,
    StreamEnded,
    TurnRequested,
    UnknownEntry,
    cli_bytes,
    decode_entry,
    encode_entry,
    entry_from_frame,
    kind_of,
    raw_bytes,
    record,
    view_of,
)
from turnstile.engine.protocol import (
    AssistantMessage,
    InvalidMessage,
    LineError,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    UnknownMessage,
    UserMessage,
    decode_message,
)
from turnstile.engine.timing import TurnTiming

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures").glob("**/*.jsonl"))
FIXTURE_LINES = [
    pytest.param(path, n, line, id=f"{path.parent.name}/{path.name}:{n}")
    for path in FIXTURES
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1)
    if line.strip()
]


def test_fixtures_present() -> None:
    assert len(FIXTURES) >= 16 and len(FIXTURE_LINES) > 400


@pytest.mark.parametrize(("path", "n", "line"), FIXTURE_LINES)
def test_every_fixture_line_is_lossless_and_typed(path: Path, n: int, line: bytes) -> None:
    made = entry_from_frame(line, seq=n, ts=1.5, stream="t1")
    assert made is not None
    entry, view = made
    assert isinstance(entry, CliLine), f"{path.name}:{n} did not decode: {entry}"
    assert not isinstance(view, InvalidMessage | LineError | UnknownMessage | None)
    # Lossless: the entry holds the CLI's bytes, and re-encoding the entry reproduces them verbatim.
    assert cli_bytes(entry) == line.strip()
    encoded = encode_entry(entry)
    assert line.strip() in encoded
    again = decode_entry(encoded)
    assert isinstance(again, CliLine) and cli_bytes(again) == line.strip()
    assert encode_entry(again) == encoded
    # Typed fields match the JSON.
    obj = json.loads(line)
    assert entry.type == obj["type"]
    if isinstance(view, SystemMessage | ResultMessage):
        assert view.subtype == obj["subtype"]
    if isinstance(view, ResultMessage):
        assert (view.is_error, view.num_turns, view.session_id) == (
            obj["is_error"],
            obj["num_turns"],
            obj["session_id"],
        )
        assert view.total_cost_usd == obj.get("total_cost_usd")
    if isinstance(view, AssistantMessage):
        assert view.message.model == obj["message"]["model"]
        assert len(view.message.content) == len(obj["message"]["content"])
    if isinstance(view, UserMessage):
        content = obj["message"]["content"]
        assert (
            (view.message.content == content)
            if isinstance(content, str)
            else len(view.message.content) == len(content)
        )
    if isinstance(view, StreamEvent):
        assert type(view.event).__struct_config__.tag == obj["event"]["type"]
    assert view_of(entry) == view


def test_key_order_never_matters_for_entries() -> None:
    e = decode_entry(b'{"stream":"t1","prompt":"hi","ts":2.0,"seq":3,"kind":"turn.requested"}')
    assert e == TurnRequested(seq=3, ts=2.0, stream="t1", prompt="hi")


def test_noise_malformed_and_non_utf8_become_decode_errors() -> None:
    for raw, reason in [
        (b"[SandboxDebug] hello", "noise"),
        (b'{"type": "assistant", "mess', "malformed"),
        (b"[1, 2, 3]", "noise"),
        (b'{"no_type": 1}', "no_type"),
        (b'{"type":"user","x":"\xff\xfe"}', "malformed"),
    ]:
        made = entry_from_frame(raw, seq=1, ts=None, stream=None)
        assert made is not None
        entry, view = made
        assert isinstance(entry, CliDecodeError) and entry.reason == reason and view is None
        assert raw_bytes(entry.raw, entry.encoding) == raw  # every byte kept


def test_oversized_and_truncated_frames() -> None:
    ov = entry_from_frame(
        Oversized(length=10_000_000, head=b"{hea", tail=b"il}", limit=8), seq=1, ts=None, stream=None
    )
    assert ov is not None and isinstance(ov[0], CliOversized) and ov[0].length == 10_000_000
    tr = entry_from_frame(Truncated(raw=b'{"type":"res'), seq=2, ts=None, stream=None)
    assert tr is not None and isinstance(tr[0], CliDecodeError) and tr[0].reason == "truncated"
    assert entry_from_frame(b"   ", seq=3, ts=None, stream=None) is None


def test_unknown_kind_is_kept_and_reencodes_identically() -> None:
    raw = b'{"kind":"future.thing","seq":4,"ts":1.0,"stream":null,"x":[1,2]}'
    e = decode_entry(raw)
    assert isinstance(e, UnknownEntry) and e.kind == "future.thing" and e.seq == 4
    assert encode_entry(e) == raw and kind_of(e) == "future.thing"


def test_known_kind_with_bad_fields_raises_for_the_store_to_report() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_entry(b'{"kind":"stream.ended","seq":1,"ts":1.0,"outcome":"exploded"}')


def test_record_encodes_once() -> None:
    e = StreamEnded(
        seq=9, ts=3.0, stream="t1", outcome="completed", timing=TurnTiming(total_ms=5.0, tool_calls=2)
    )
    rec = record(e)
    assert rec.entry is e and rec.data == encode_entry(e)
    assert json.loads(rec.data)["kind"] == "stream.ended"
    assert decode_entry(rec.data) == e


# --- hypothesis: never raise, and round trips ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
TYPES = ["system", "assistant", "user", "result", "stream_event", "control_request", "control_response"]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    made = entry_from_frame(data, seq=1, ts=None, stream=None)
    if made is not None:
        entry, _ = made
        assert decode_entry(encode_entry(entry)) == entry


@settings(max_examples=300)
@given(
    st.sampled_from([*TYPES, "active_goal", "x"]),
    st.dictionaries(st.text(max_size=10), json_values, max_size=6),
)
def test_arbitrary_json_objects_never_raise(kind: str, body: dict[str, Any]) -> None:
    obj = {**body, "type": kind}
    line = json.dumps(obj).encode()
    made = entry_from_frame(line, seq=1, ts=None, stream=None)
    assert made is not None
    entry, view = made
    assert isinstance(entry, CliLine) and cli_bytes(entry) == line
    assert view is not None and not isinstance(view, LineError)


finite = st.floats(allow_nan=False, allow_infinity=False)
stream_ids = st.none() | st.text(max_size=8)
entries = (
    st.builds(TurnRequested, seq=st.integers(1, 10**9), ts=finite, stream=stream_ids, prompt=st.text())
    | st.builds(
        ProcessExited,
        seq=st.integers(1, 10**9),
        ts=finite | st.none(),
        stream=stream_ids,
        pid=st.integers(1, 2**22),
        returncode=st.integers(-64, 255) | st.none(),
        expected=st.booleans(),
        reason=st.text(),
        stderr_tail=st.lists(st.text(), max_size=3),
    )
    | st.builds(
        StreamEnded,
        seq=st.integers(1, 10**9),
        ts=finite,
        stream=stream_ids,
        outcome=st.sampled_from(["completed", "failed", "cancelled", "timed_out"]),
        reason=st.text(),
        timing=st.none()
        | st.builds(TurnTiming, total_ms=finite | st.none(), tool_calls=st.integers(0, 1000)),
        exit_status=st.none() | st.integers(-64, 255),
    )
)


@given(entries)
def test_entry_encode_decode_identity(entry: Entry) -> None:
    assert decode_entry(encode_entry(entry)) == entry


results = st.fixed_dictionaries(
    {
        "type": st.just("result"),
        "subtype": st.sampled_from(["success", "error_during_execution", "error_max_turns"]),
        "is_error": st.booleans(),
        "duration_ms": st.integers(0, 10**7),
        "duration_api_ms": st.integers(0, 10**7),
        "num_turns": st.integers(0, 100),
        "session_id": st.text(max_size=12),
    },
    optional={
        "result": st.text(),
        "total_cost_usd": st.floats(0, 100),
        "errors": st.lists(st.text(max_size=20), max_size=3),
        "terminal_reason": st.sampled_from(["completed", "aborted_streaming", "api_error"]),
        "api_error_status": st.integers(400, 599) | st.none(),
    },
)
assistants = st.fixed_dictionaries(
    {
        "type": st.just("assistant"),
        "message": st.fixed_dictionaries(
            {
                "model": st.text(max_size=10),
                "content": st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "text": st.text()})
                    | st.fixed_dictionaries(
                        {
                            "type": st.just("tool_use"),
                            "id": st.text(max_size=5),
                            "name": st.text(max_size=5),
                            "input": st.just({}),
                        }
                    ),
                    max_size=3,
                ),
            }
        ),
    },
    optional={"session_id": st.text(max_size=8), "uuid": st.text(max_size=8)},
)


@given(results | assistants)
def test_view_decode_encode_is_identity(obj: dict[str, Any]) -> None:
    view = decode_message(json.dumps(obj).encode())
    assert isinstance(view, ResultMessage | AssistantMessage)
    assert decode_message(msgspec.json.encode(view)) == view
