"""The conductor, fed a recorded log, asks for the entries the live session wrote (``engine.rehearsal``).

Every log the runtime tests make is rehearsed too (``tests/runtime/conftest.py``, ``assert_gap_free``);
here: the Turnstile logs among the fixtures, and logs tampered with, which must not pass.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from turnstile.engine.conductor import Limits
from turnstile.engine.log import AnyEntry, StreamEnded, Timeout
from turnstile.engine.rehearsal import rehearse
from turnstile.engine.replay import replay
from turnstile.engine.transcript import frames_of, read_entries

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
LOGS = sorted(FIXTURES.glob("turnstile__*.ndjson"))
# What the fixtures' sessions ran with (make_turnstile_logs.py: a 30 s first-event timeout).
LIMITS = Limits(first_event_timeout_s=30.0)


def _entries(path: Path) -> list[AnyEntry]:
    return [item.entry for item in read_entries(frames_of(path.read_bytes()))]


@pytest.mark.parametrize("path", LOGS, ids=[p.name for p in LOGS])
def test_the_conductor_asks_for_what_the_fixture_log_holds(path: Path) -> None:
    assert rehearse(_entries(path), LIMITS) == []


@pytest.mark.parametrize("path", LOGS, ids=[p.name for p in LOGS])
def test_replay_gives_every_turn_the_timing_its_stream_ended_carries(path: Path) -> None:
    entries = _entries(path)
    written = {e.stream: e.timing for e in entries if isinstance(e, StreamEnded)}
    report = replay(read_entries(frames_of(path.read_bytes())))
    times = ("total_ms", "ttfe_ms", "ttft_ms", "thinking_ms", "responding_ms", "tool_ms", "stalled_ms")
    for s in report.streams:
        ended = written[s.id]
        assert ended is not None
        # (tokens may differ: a late result after a timeout, a recorded violation, still reports them)
        assert [getattr(ended, t) for t in times] == [getattr(s.timing, t) for t in times], s.id


def test_a_changed_reason_is_a_mismatch() -> None:
    entries = _entries(FIXTURES / "turnstile__tool-use-two-turns.ndjson")
    i = next(i for i, e in enumerate(entries) if isinstance(e, StreamEnded))
    end = entries[i]
    assert isinstance(end, StreamEnded)
    entries[i] = msgspec.structs.replace(end, reason="made up")
    mismatches = rehearse(entries, LIMITS)
    assert mismatches and mismatches[0].seq == end.seq


def test_a_timeout_the_conductor_would_not_fire_is_a_mismatch() -> None:
    entries = _entries(FIXTURES / "turnstile__interrupt-escalated-then-recovery.ndjson")
    timeout = next(e for e in entries if isinstance(e, Timeout))
    # With a first-event timeout of an hour, the recorded 30 s timeout is not the conductor's decision.
    mismatches = rehearse(entries, Limits(first_event_timeout_s=3600.0))
    assert mismatches and mismatches[0].seq == timeout.seq
