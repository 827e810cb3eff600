"""The hot paths' shortcuts give exactly what the general paths give.

Each fast path (``decode_message``'s stream / system / late-tag result decoders, the transcript reader's
one-decode stream events and inline typed lines, ``frames_of``'s split, the fold's token-delta path, the
lean transitions trigger, ``tokens_of``) is checked against a reference that runs only the general path,
on every recorded fixture line and on lines made to sit on the edge of each shortcut.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec
import pytest
from transitions import Machine

from tests.reference import one_line_at_a_time
from turnstile.engine import protocol
from turnstile.engine.fold import SessionFold
from turnstile.engine.framing import DEFAULT_MAX_LINE, Frame, LineFramer, Truncated
from turnstile.engine.log import CliLine, entries_from_frames, entry_from_frame
from turnstile.engine.machines import MachineKind, Model, pool_machine, session_machine, stream_machine
from turnstile.engine.protocol import LineError, Message, SystemMessage, decode_message
from turnstile.engine.replay import replay
from turnstile.engine.timing import tokens_of
from turnstile.engine.transcript import Item, frames_of, read_entries

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_FILES = sorted((ROOT / "tests" / "fixtures").glob("**/*.jsonl"))
LINES = [ln for p in FIXTURE_FILES for ln in p.read_bytes().splitlines() if ln.strip()]

SID = "c2ac815b-c780-4365-a18a-3da0042ddebb"
T = b'{"_t":1785277220302,'


def general(raw: bytes) -> Message | LineError:
    """decode_message without its fast paths: the union decoder, then the slow path or the subtype."""
    try:
        msg = protocol._decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return protocol._slow_path(raw, exc)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return LineError(reason="malformed", error=str(exc))
    if type(msg) is SystemMessage:
        return protocol._specialise_system(msg, raw)
    return msg


def _line(obj: dict[str, object], prefix: bytes = b"") -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return prefix + body[1:] if prefix else body


EDGE_LINES: list[bytes] = [
    # stream events: known, unknown event and delta types, bad fields, sub-agent, recorder prefix
    _line(
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hi"},
            },
            "session_id": SID,
        }
    ),
    _line(
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "citations_delta", "citation": {}},
            },
        },
        T,
    ),
    _line({"type": "stream_event", "event": {"type": "brand_new_event"}}),
    _line(
        {"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta"}}}
    ),
    _line({"type": "stream_event", "event": {"type": "message_stop"}, "parent_tool_use_id": "toolu_1"}, T),
    b'{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"\xff"}}}',
    b'{"type":"stream_event","event":{"type":"message_stop"},"type":"assistant"}',
    b'{"type":"stream_event","event":',
    # system lines: every known subtype, unknown ones, odd fields, duplicates, nested marks, escapes
    *(
        _line({"type": "system", "subtype": name, "session_id": SID}, p)
        for name in protocol._SYSTEM_VIEWS
        for p in (b"", T)
    ),
    _line({"type": "system", "subtype": "task_stopped", "task_id": "x"}),  # shares a key with task_started
    _line({"type": "system", "subtype": "init", "tools": "not a list"}),
    _line({"type": "system", "subtype": "status", "status": 5}, T),
    b'{"type":"system","subtype":"init","cwd":"/","subtype":"status"}',
    b'{"type":"system","subtype":"st\\u0061tus","status":"requesting"}',
    b'{"type":"system","subtype":"in',
    b'{"type":"system","subtype":"i"}',
    b'{"type":"system","subtype":"init"}',
    b'{"type":"system"}',
    b'{"type":"sys',
    b'{"_t":1,"type":"system","subtype":"init"}',
    b'{"x":{"type":"system","subtype":"init"},"type":"assistant","message":{"model":"m","content":[]}}',
    # results with the tag late (as the CLI 2.1.x writes them), bad ones, and other late-tag lines
    b'{"subtype":"success","is_error":false,"duration_ms":1,"duration_api_ms":1,"num_turns":1,'
    b'"session_id":"s","type":"result"}',
    b'{"_t":1785277220302,"is_error":true,"subtype":"error_during_execution","duration_ms":1,'
    b'"duration_api_ms":1,"num_turns":1,"session_id":"s","type":"result"}',
    b'{"subtype":"success","is_error":"no","duration_ms":1,"duration_api_ms":1,"num_turns":1,'
    b'"session_id":"s","type":"result"}',
    b'{"subtype":"success","type":"result"}',
    b'{"uuid":"u","type":"user","message":{"role":"user","content":"hi"}}',
    b'{"session_id":"s","type":"rate_limit_event","rate_limit_info":{"status":"allowed"}}',
    b'{"uuid":"u","type":"active_goal"}',
    b'{"uuid":"u"}',
    b'{"type":"result","subtype":"success","type":"assistant"}',
    # assorted: short lines, other types, no type, not JSON
    b"{}",
    b'{"a":1}',
    b'{"type":1}',
    b'{"type":"keep_alive"}',
    b'{"type":"user"}',
    b"[1,2]",
    b"{not json}",
    b'{"type":"stream_event"}',
]


@pytest.mark.parametrize("raw", [*LINES, *EDGE_LINES])
def test_decode_message_is_the_general_path(raw: bytes) -> None:
    fast, slow = decode_message(raw), general(raw)
    assert type(fast) is type(slow)
    assert fast == slow


def test_the_edge_lines_reach_each_fast_path() -> None:
    kinds = {type(decode_message(raw)).__name__ for raw in EDGE_LINES}
    assert {"StreamEvent", "SystemInit", "SystemStatus", "TaskStarted", "ResultMessage"} <= kinds
    assert {"SystemMessage", "InvalidMessage", "UnknownMessage", "LineError", "UserMessage"} <= kinds


def test_system_fast_path_keys_are_distinct() -> None:
    assert len(protocol._SYSTEM_FAST) == len(protocol._SYSTEM_VIEWS)


# --- log entries ------------------------------------------------------------------------------------------


def test_entries_from_frames_is_entry_from_frame_per_line() -> None:
    frames: list[Frame] = [
        *LINES,
        *EDGE_LINES,
        b"",
        b"  ",
        b' {"type":"keep_alive"} ',
        Truncated(raw=b'{"a"'),
    ]
    made = entries_from_frames(frames, seq=5, ts=1.5, stream="t1")
    assert made == one_line_at_a_time(frames, seq=5, ts=1.5, stream="t1")


# --- the transcript reader ----------------------------------------------------------------------------------


RECORDER_TIME = re.compile(rb'\{"_t":\s*(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*[,}]')


def reference_items(frames: Iterable[Frame]) -> Iterator[Item]:
    """read_entries for a raw transcript, the plain way: every line through entry_from_frame."""
    seq = 0
    for line_no, frame in enumerate(frames, start=1):
        if isinstance(frame, bytes) and not frame.strip():
            continue
        if isinstance(frame, Truncated) and not frame.raw.strip():
            continue
        seq += 1
        ts = None
        # The recorder's time is the line's first key; its value is a JSON number (or null: no time).
        lead = isinstance(frame, bytes) and re.match(RECORDER_TIME, frame)
        if lead:
            ts = float(lead.group(1)) / 1000.0
        made = entry_from_frame(frame, seq=seq, ts=ts, stream=None)
        assert made is not None
        yield Item(line_no, *made)


TRANSCRIPT_EDGES: list[bytes] = [
    *EDGE_LINES,
    # the recorder's time: missing, duplicated (the first, the recorder's, counts), not first (not the
    # recorder's: no time), not a number, escaped, nested, with spaces, alone, on other message types
    _line({"type": "stream_event", "event": {"type": "message_stop"}}, T),
    T + b'"type":"stream_event","event":{"type":"message_stop"},"_t":1785277229999}',
    b'{"type":"stream_event","event":{"type":"message_stop"},"_t":1785277229999}',
    b'{"type":"keep_alive","_t":1785277229999}',
    b'{"_t": 1785277229999 ,"type":"keep_alive"}',
    b'{"_t":1785277229999}',
    b'{"_t":"a,b","type":"keep_alive"}',
    b'{"_t":true,"type":"keep_alive"}',
    b'{"_t":1e3,"type":"keep_alive"}',
    b'{"_t":"soon","type":"stream_event","event":{"type":"message_stop"}}',
    b'{"\\u005ft":1785277229999,"type":"stream_event","event":{"type":"message_stop"}}',
    b'{"_t":12.5,"type":"stream_event","event":{"type":"message_stop"}}',
    b'{"_t":null,"type":"stream_event","event":{"type":"message_stop"}}',
    b'{"type":"stream_event","event":{"type":"message_stop","x":{"_t":5}}}',
    T + b'"type":"user","message":{"role":"user","content":"caf\xc3\xa9"}}',
    T + b'"type":"user","message":{"role":"user","content":"x"},"junk":"\xff"}',
    T + b'"type":"stream_event","event":{"type":"message_stop"},"junk":"\xff"}',
    b'  {"type":"keep_alive"}  ',
    b"noise on stdout",
]


@pytest.mark.parametrize("first", [LINES[0], b'{"_t":1,"type":"keep_alive"}', b"not json"])
def test_read_entries_on_a_transcript_is_entry_from_frame_per_line(first: bytes) -> None:
    frames: list[Frame] = [b"", first, *LINES, b"", *TRANSCRIPT_EDGES, Truncated(raw=b'{"type":"us')]
    assert list(read_entries(frames)) == list(reference_items(frames))


def test_read_entries_on_a_turnstile_log_keeps_every_line() -> None:
    log = (ROOT / "tests" / "fixtures" / "transcripts" / "turnstile__tool-use-two-turns.ndjson").read_bytes()
    frames = [*frames_of(log), b"", b"{torn", b'{"kind":"from.the.future","seq":99,"ts":null}']
    items = list(read_entries(frames))
    assert [i.line_no for i in items] == [n for n, f in enumerate(frames, 1) if f.strip()]
    for item in items:
        if type(item.entry) is CliLine:
            assert item.view == decode_message(bytes(item.entry.msg))
    assert type(items[-2].entry).__name__ == "CliDecodeError"
    assert type(items[-1].entry).__name__ == "UnknownEntry"
    assert list(read_entries(frames, decode_views=False))[3].view is None


# --- framing ------------------------------------------------------------------------------------------------


def reference_frames(chunks: Iterable[bytes], max_line: int) -> list[Frame]:
    framer = LineFramer(max_line)
    out: list[Frame] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out + framer.eof()


@pytest.mark.parametrize("seed", range(40))
def test_frames_of_is_the_framer(seed: int) -> None:
    rnd = random.Random(seed)
    lines = [bytes(rnd.choice(b'ab {}"\n') for _ in range(rnd.choice([0, 1, 5, 30, 200]))) for _ in range(30)]
    data = b"\n".join(lines) + rnd.choice([b"", b"\n", b"tail"])
    cuts = sorted(rnd.sample(range(len(data) + 1), k=min(len(data) + 1, rnd.randint(0, 12))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    max_line = rnd.choice([8, 40, 100, DEFAULT_MAX_LINE])
    assert list(frames_of(chunks, max_line=max_line)) == reference_frames(chunks, max_line)
    assert list(frames_of(data, max_line=max_line)) == reference_frames([data], max_line)
    mutable = [bytearray(c) for c in chunks]
    assert list(frames_of(mutable, max_line=max_line)) == reference_frames(chunks, max_line)  # type: ignore[arg-type]


# --- the fold -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "tests" / "fixtures" / "transcripts").glob("*.*json*"))
    + sorted((ROOT / "tests" / "fixtures").glob("cli-*/*.jsonl")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_fold_with_views_is_fold_decoding_them(path: Path) -> None:
    items = list(read_entries(frames_of(path.read_bytes())))
    with_views = replay(items, keep_trace=True)
    without = replay([Item(i.line_no, i.entry, None) for i in items], keep_trace=True)
    assert with_views == without


def test_a_delta_for_a_stream_never_opened_is_a_violation() -> None:
    fold = SessionFold()
    raw = EDGE_LINES[0]
    made = entry_from_frame(raw, seq=1, ts=None, stream="t9")
    assert made is not None
    assert fold.apply(*made) == []
    assert [v.message for v in fold.violations] == ["a CLI line for a stream never opened"]
    fold.close()


# --- machines and timing -------------------------------------------------------------------------------------


class _Ctx:
    at_target = False


class _PlainModel:
    state: str


@pytest.mark.parametrize("kind", [session_machine, stream_machine, pool_machine])
@pytest.mark.parametrize("at_target", [False, True])
def test_fire_moves_models_as_plain_transitions_does(
    kind: Callable[[], MachineKind], at_target: bool
) -> None:
    ours = kind()
    ctx = _Ctx()
    ctx.at_target = at_target
    for state in ours.states:
        for trigger in ours.triggers:
            model = Model()
            ours.add(model, state)
            dest = ours.fire(model, trigger, ctx)
            ours.remove(model)
            plain = Machine(
                model=None,
                states=list(ours.states),
                initial=state,
                transitions=[
                    {
                        "trigger": e.trigger,
                        "source": e.source,
                        "dest": e.dest,
                        **({"conditions": [lambda c, g=e.guard: bool(getattr(c, g))]} if e.guard else {}),
                        **({"unless": [lambda c, g=e.unless: bool(getattr(c, g))]} if e.unless else {}),
                    }
                    for e in ours.edges
                ],
                auto_transitions=False,
                ignore_invalid_triggers=True,
            )
            other = _PlainModel()
            plain.add_model(other)
            moved = plain.events[trigger].trigger(other, ctx) if trigger in plain.events else False
            assert (dest is not None) == bool(moved), (state, trigger)
            assert model.state == other.state, (state, trigger)


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"input_tokens": 3},
        {"input_tokens": True},
        {"cache_read_input_tokens": 2, "input_tokens": "x"},
        {
            "input_tokens": 1,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 3,
            "output_tokens": 4,
        },
        {"output_tokens": False},
    ],
)
def test_tokens_of_sums_as_sum_does(usage: dict[str, object] | None) -> None:
    expected_input: int | None = None
    expected_output: int | None = None
    if usage:
        parts = [
            usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ]
        known = [p for p in parts if isinstance(p, int)]
        expected_input = sum(known) if known else None
        out = usage.get("output_tokens")
        expected_output = out if isinstance(out, int) else None
    got = tokens_of(usage)
    assert got == (expected_input, expected_output)
    assert [type(x) for x in got] == [type(expected_input), type(expected_output)]
