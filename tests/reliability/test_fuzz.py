"""Bad input to the core, by Hypothesis: the decoder, the log reader and the fold.

Inputs are random bytes and, mostly, *mutated fixture lines*: real CLI output (``tests/fixtures``, the
simulator's recordings) with bytes flipped, cut, inserted, JSON values replaced by values of the wrong
type, or a recorder's ``_t`` prefix grafted on (the decoder has a fast path for it). Properties:

* decoder: never raises; every byte is kept (a CLI line verbatim, anything else as a typed decode error
  holding the raw bytes); an entry re-encodes to itself; the batch hot path (``entries_from_frames``)
  agrees with the one-line path (``entry_from_frame``);
* log reader: a log cut at any byte reopens with every complete entry intact and the torn tail kept in a
  ``log.repaired`` entry; damage anywhere is reported as ``LogCorrupted``, never as another exception;
  the transcript reader never raises on any file, however it is chunked;
* fold: whatever the order of entries, the live fold (through the journal, which appends the
  ``stream.ended`` the evidence calls for) and an offline replay of the resulting log agree on every
  stream's state, outcome and timing, and every stream has at most one terminal entry.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.reference import one_line_at_a_time
from tests.reliability.servers import ODD_LINES
from turnstile.engine.conductor import Conductor
from turnstile.engine.errors import LogCorrupted
from turnstile.engine.fold import SessionFold
from turnstile.engine.log import (
    CliDecodeError,
    CliLine,
    Entry,
    InterruptEscalated,
    InterruptRequested,
    ProcessExited,
    ProcessSpawned,
    PromptWritten,
    SessionCreated,
    StreamEnded,
    Timeout,
    TurnRequested,
    cli_bytes,
    decode_entry,
    encode_entry,
    entries_from_frames,
    entry_from_frame,
    raw_bytes,
    record,
)
from turnstile.engine.protocol import decode_line
from turnstile.engine.replay import replay
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.stores.file import FileLogStore
from turnstile.engine.stores.memory import MemoryLogStore
from turnstile.engine.transcript import frames_of, read_entries

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_FILES = sorted((ROOT / "tests" / "fixtures").glob("**/*.jsonl")) + sorted(
    (ROOT / "engine" / "agents" / "recordings").glob("*.jsonl")
)
LINES: list[bytes] = [ln for p in FIXTURE_FILES for ln in p.read_bytes().splitlines() if ln.strip()]
TYPES = ["system", "assistant", "user", "result", "stream_event", "control_request", "control_response"]

FUZZ = settings(
    max_examples=int(os.environ.get("TURNSTILE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
odd_bytes = st.sampled_from(
    [b"\r", b"\x00", b'"', b"\\", b"{", b"}", b"\xff", b"\xc3", b",", b"_", b"\n", b" "]
)


def _set_path(obj: Any, path: list[int], value: Any) -> Any:
    """Replace the value found by following ``path`` (indexes into keys/items, modulo their count)."""
    if not path or not isinstance(obj, dict | list) or not obj:
        return value
    if isinstance(obj, dict):
        key = list(obj)[path[0] % len(obj)]
        obj[key] = _set_path(obj[key], path[1:], value)
    else:
        i = path[0] % len(obj)
        obj[i] = _set_path(obj[i], path[1:], value)
    return obj


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    line = draw(st.sampled_from(LINES))
    ops = draw(
        st.lists(
            st.sampled_from(["flip", "cut", "insert", "json", "retype", "recorder"]), min_size=1, max_size=3
        )
    )
    for op in ops:
        if op == "flip" and line:
            i = draw(st.integers(0, len(line) - 1))
            line = line[:i] + bytes([draw(st.integers(0, 255))]) + line[i + 1 :]
        elif op == "cut":
            line = line[: draw(st.integers(0, len(line)))]
        elif op == "insert":
            i = draw(st.integers(0, len(line)))
            line = line[:i] + draw(odd_bytes | st.binary(max_size=6)) + line[i:]
        elif op in ("json", "retype"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if op == "retype" and isinstance(obj, dict):
                obj["type"] = draw(st.sampled_from(TYPES) | json_values)
            else:
                obj = _set_path(obj, draw(st.lists(st.integers(0, 50), max_size=4)), draw(json_values))
            line = json.dumps(obj, separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))).encode()
        elif op == "recorder" and line.startswith(b"{"):
            # A recorder's leading field, of any length: the decoder's fast path indexes into it.
            name = draw(st.sampled_from([b"_t", b"_", b"_x" * draw(st.integers(1, 20))]))
            value = draw(st.sampled_from([b"1764064330123", b"1", b'"x"', b"[]"]))
            line = b'{"' + name + b'":' + value + b"," + line[1:]
    return line


lines = mutated_lines() | st.binary(max_size=120) | st.sampled_from(LINES)


# --- the decoder ------------------------------------------------------------------------------------------


def _check_entry_keeps_the_line(line: bytes, made: tuple[Entry, Any] | None) -> None:
    if made is None:
        assert not line.strip(), f"a non-blank line made no entry: {line!r}"
        return
    entry, _view = made
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    if isinstance(entry, CliLine):
        assert cli_bytes(entry) == line.strip()
        msgspec.json.decode(data)  # the log line embedding it is JSON
    else:
        assert isinstance(entry, CliDecodeError), entry
        assert raw_bytes(entry.raw, entry.encoding) == line


@FUZZ
@given(line=lines)
def test_decoder_never_raises_and_keeps_every_byte(line: bytes) -> None:
    decode_line(line)
    _check_entry_keeps_the_line(line, entry_from_frame(line, seq=1, ts=None, stream="t1"))


@FUZZ
@given(batch=st.lists(lines, max_size=8))
def test_batch_hot_path_agrees_with_the_one_line_path(batch: list[bytes]) -> None:
    batch = [ln for ln in batch if b"\n" not in ln]
    fast = entries_from_frames(batch, seq=1, ts=1.0, stream="t1")
    slow = one_line_at_a_time(batch, seq=1, ts=1.0, stream="t1")
    assert [e for e, _ in fast] == [e for e, _ in slow]


def test_recorder_prefix_with_a_late_comma_does_not_crash_the_decoder() -> None:
    """Found by the fuzzer: a 41..49-byte line starting with ``{"_`` whose first comma is past byte 31
    made ``decode_message``'s recorder fast path index past the end (IndexError). In the runtime that
    exception escaped the stdout reader and killed the session (see test_bad_agent_output.py)."""
    line = b'{"_' + b"x" * 36 + b",}"
    assert len(line) == 41
    decode_line(line)
    _check_entry_keeps_the_line(line, entry_from_frame(line, seq=1, ts=None, stream=None))


_DEEP = b"[" * 3000 + b"]" * 3000
PATHOLOGICAL = [
    *ODD_LINES,
    # Found by the fuzzer / this suite; each escaped decode_message before the fix (see the report):
    b'{"type":"system","subtype":"init","cwd":"\x80/tmp","session_id":"x"}',  # UnicodeDecodeError
    b'{"type":"system","subtype":"deep","x":' + _DEEP + b"}",  # RecursionError, general path
    b'{"type":"system","subtype":"init","x":' + _DEEP + b"}",  # RecursionError, system fast path
    b'{"type":"assistant","message":5,"x":' + _DEEP + b"}",  # RecursionError, slow path
    b'{"type":"stream_event","event":{"type":"content_block_delta","delta":' + _DEEP + b"}}",
    b'{"x":' + _DEEP + b',"type":"system"}',
]


@pytest.mark.parametrize("line", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_lines_never_raise_and_are_kept(line: bytes) -> None:
    decode_line(line)
    _check_entry_keeps_the_line(line, entry_from_frame(line, seq=1, ts=None, stream="t1"))
    assert [e for e, _ in entries_from_frames([line], seq=1, ts=None, stream="t1")] == [
        entry_from_frame(line, seq=1, ts=None, stream="t1")[0]  # type: ignore[index]
    ]


def test_transcript_reader_takes_trailing_whitespace_and_bad_utf8() -> None:
    """Found by the fuzzer: ``read_entries`` (``turnstile replay``/``log stats``) raised AssertionError
    ("blank frame") on a file ending in whitespace without a newline, and UnicodeDecodeError on a log
    line with an invalid UTF-8 byte inside a string."""
    assert list(read_entries(frames_of(b"\t"))) == []
    items = list(read_entries(frames_of(b'{"type":"system","subtype":"x"}\n  ')))
    assert len(items) == 1
    bad = b'{"kind":"turn.requested","seq":1,"ts":1.0,"stream":"t1","prompt":"h\x80i"}\n'
    (item,) = read_entries(frames_of(bad))
    assert (
        isinstance(item.entry, CliDecodeError) and raw_bytes(item.entry.raw, item.entry.encoding) == bad[:-1]
    )


# --- the log reader ---------------------------------------------------------------------------------------


def _log_blob(lines_: list[bytes]) -> tuple[bytes, list[Entry]]:
    """A valid Turnstile log: a session, a turn, these CLI lines, the turn's end."""
    entries: list[Entry] = [
        SessionCreated(seq=1, ts=1.0, session_id="s", agent="sim"),
        TurnRequested(seq=2, ts=1.0, stream="t1", prompt="hi"),
    ]
    for ln in lines_:
        made = entry_from_frame(ln, seq=len(entries) + 1, ts=2.0, stream="t1")
        if made is not None:
            entries.append(made[0])
    entries.append(StreamEnded(seq=len(entries) + 1, ts=3.0, stream="t1", outcome="completed"))
    return b"".join(encode_entry(e) + b"\n" for e in entries), entries


@FUZZ
@given(body=st.lists(lines, max_size=6), cut=st.floats(0, 1))
def test_a_log_cut_anywhere_reopens_with_every_complete_entry(body: list[bytes], cut: float) -> None:
    blob, entries = _log_blob([ln for ln in body if b"\n" not in ln])
    at = int(len(blob) * cut)
    kept, torn = blob[:at], b""
    if not kept.endswith(b"\n") and b"\n" in kept:
        torn = kept[kept.rindex(b"\n") + 1 :]
    elif not kept.endswith(b"\n"):
        torn = kept
    complete = kept.count(b"\n")
    if torn and complete < len(entries) and torn == encode_entry(entries[complete]):
        # Only the newline is missing: the entry is whole and is kept (the newline is added).
        complete, torn = complete + 1, b""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.ndjson"
        path.write_bytes(kept)
        with FileLogStore.open(path) as store:
            read = [r.entry for r in store.read(0)]
            assert read[:complete] == entries[:complete]
            if torn.strip():
                assert store.repaired is not None
                assert raw_bytes(store.repaired.raw, store.repaired.encoding) == torn
                assert len(read) == complete + 1
            else:
                assert len(read) == complete
            # The sequence goes on with no gap.
            nxt = StreamEnded(seq=store.last_seq + 1, ts=4.0, stream="t9", outcome="failed")
            store.append([record(nxt)])
        with FileLogStore.open(path) as again:
            assert [r.entry.seq for r in again.read(0)] == list(range(1, again.last_seq + 1))


@FUZZ
@given(body=st.lists(lines, max_size=4), where=st.floats(0, 1), byte=st.integers(0, 255))
def test_damage_anywhere_is_reported_never_a_crash(body: list[bytes], where: float, byte: int) -> None:
    blob, _entries = _log_blob([ln for ln in body if b"\n" not in ln])
    i = min(int(len(blob) * where), len(blob) - 1)
    assume(blob[i] != byte)
    damaged = blob[:i] + bytes([byte]) + blob[i + 1 :]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.ndjson"
        path.write_bytes(damaged)
        try:
            store = FileLogStore.open(path)
        except LogCorrupted:
            return
        with store:
            seqs = [r.entry.seq for r in store.read(0)]
            assert seqs == list(range(1, len(seqs) + 1))
    # And the offline reader takes anything.
    for _ in read_entries(frames_of(damaged)):
        pass


@FUZZ
@given(data=st.binary(max_size=400) | st.builds(lambda ls: b"\n".join(ls), st.lists(lines, max_size=6)),
       chunk=st.integers(1, 64))  # fmt: skip
def test_the_transcript_reader_takes_any_file_in_any_chunks(data: bytes, chunk: int) -> None:
    whole = [(i.line_no, i.entry) for i in read_entries(frames_of(data))]
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    chunked = [(i.line_no, i.entry) for i in read_entries(frames_of(pieces))]
    assert whole == chunked
    replay(read_entries(frames_of(data)))


# --- the fold: live == replayed ------------------------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("turn"), st.none()),
        st.tuples(st.just("prompt"), st.none()),
        st.tuples(st.just("cli"), lines),
        st.tuples(st.just("spawn"), st.none()),
        st.tuples(st.just("exit"), st.integers(-15, 2)),
        st.tuples(st.just("interrupt"), st.none()),
        st.tuples(st.just("escalate"), st.none()),
        st.tuples(st.just("timeout"), st.sampled_from(["spawn", "first_event", "idle", "turn"])),
        st.tuples(st.just("end"), st.sampled_from(["completed", "failed", "cancelled", "timed_out"])),
    ),
    max_size=40,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_764_064_330.0

    def __call__(self) -> float:
        self.now += 0.125
        return self.now


@FUZZ
@given(script=steps)
def test_the_live_fold_and_the_replayed_log_agree(script: list[tuple[str, Any]]) -> None:
    journal = Journal("s", MemoryLogStore(), clock=_Clock())
    fold = SessionFold("s")
    journal.folder = Conductor(fold, session_id="s")
    journal.append(SessionCreated(seq=0, ts=None, session_id="s", agent="sim"))
    turns = 0
    current: str | None = None
    pid = 100
    for op, arg in script:
        if op == "turn":
            turns += 1
            current = f"t{turns}"
            journal.append(TurnRequested(seq=0, ts=None, stream=current, prompt="hi"))
        elif op == "prompt" and current is not None:
            journal.append(PromptWritten(seq=0, ts=None, stream=current, pid=pid))
        elif op == "cli":
            if b"\n" not in arg:
                journal.append_frames([arg], current)
        elif op == "spawn":
            pid += 1
            journal.append(ProcessSpawned(seq=0, ts=None, pid=pid, argv=["sim"]))
        elif op == "exit":
            journal.append(ProcessExited(seq=0, ts=None, stream=current, pid=pid, returncode=arg))
        elif op == "interrupt" and current is not None:
            journal.append(InterruptRequested(seq=0, ts=None, stream=current))
        elif op == "escalate" and current is not None:
            journal.append(InterruptEscalated(seq=0, ts=None, stream=current, signal="SIGTERM"))
        elif op == "timeout" and current is not None:
            journal.append(Timeout(seq=0, ts=None, stream=current, which=arg, after_s=1.0))
        elif op == "end" and current is not None and current not in journal.stream_end:
            # What the runtime does for a stream the evidence did not end (shutdown, stop, spawn error).
            journal.append(StreamEnded(seq=0, ts=None, stream=current, outcome=arg, reason="by the runtime"))
    records = journal.read(0, 1_000_000)
    assert [r.entry.seq for r in records] == list(range(1, len(records) + 1))
    ends: dict[str, int] = {}
    for r in records:
        if isinstance(r.entry, StreamEnded):
            assert r.entry.stream is not None
            ends[r.entry.stream] = ends.get(r.entry.stream, 0) + 1
    assert all(n == 1 for n in ends.values()), ends
    for view in fold.streams.values():
        # Terminal by evidence means ended in the log, in the same synchronous step.
        assert not view.terminal or view.id in journal.stream_end, view
    blob = b"".join(r.data + b"\n" for r in records)
    report = replay(read_entries(frames_of(blob)))
    replayed = {s.id: s for s in report.streams}
    assert set(replayed) == set(fold.streams)
    for sid, view in fold.streams.items():
        other = replayed[sid]
        assert (other.state, other.outcome, other.ended) == (view.state, view.outcome, view.ended), sid
        assert other.timing == view.timing, sid
    assert report.session_state == fold.session_state
    fold.close()


def test_fixture_lines_are_loaded() -> None:
    if len(LINES) < 50:
        pytest.fail(f"only {len(LINES)} fixture lines found under {ROOT / 'tests' / 'fixtures'}")
