"""What session lists show, folded from the log (title, first prompt, a restart that is not a crash), the
incremental replay the replay viewer runs on, and the drawing both the docs and the viewer use."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.engine.test_fold import dispatched, result, started, text
from turnstile.engine.diagram import drawing, mermaid
from turnstile.engine.fold import PROMPT_PREVIEW
from turnstile.engine.log import (
    ProcessExited,
    ProcessSpawned,
    ProcessSpawnFailed,
    SessionRecovered,
    SessionStopRequested,
    SessionTitled,
    TurnRequested,
    decode_entry,
    encode_entry,
)
from turnstile.engine.replay import Replayer, render_json, replay
from turnstile.engine.specs import load_specs
from turnstile.engine.transcript import frames_of, read_entries

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"


def test_title_and_first_prompt_come_from_the_log() -> None:
    feed = started()
    fold = feed.fold
    assert (fold.title, fold.first_prompt) == (None, None)
    feed.add(TurnRequested, stream="t1", prompt="x" * (PROMPT_PREVIEW + 50))
    assert fold.first_prompt == "x" * PROMPT_PREVIEW
    feed.add(TurnRequested, stream="t2", prompt="second")
    assert fold.first_prompt == "x" * PROMPT_PREVIEW  # the first one stays
    feed.add(SessionTitled, title="  Refactor the fold  ")
    assert fold.title == "Refactor the fold"
    feed.add(SessionTitled, title="")
    assert fold.title is None
    assert fold.violations == []


def test_a_content_block_prompt_previews_its_text() -> None:
    feed = started()
    feed.add(TurnRequested, stream="t1", prompt=[{"type": "image"}, {"type": "text", "text": "look at this"}])
    assert feed.fold.first_prompt == "look at this"


def test_the_title_entry_round_trips() -> None:
    entry = SessionTitled(seq=4, ts=1.5, title="Fix the build")
    data = encode_entry(entry)
    assert msgspec.json.decode(data)["kind"] == "session.titled"
    assert decode_entry(data) == entry


def test_restarted_is_a_restart_not_a_crash_until_a_process_runs() -> None:
    feed = started()
    fold = feed.fold
    dispatched(feed)
    feed.add(SessionRecovered, ended=["t1"])
    assert (fold.session_state, fold.restarted) == ("crashed", True)
    feed.add(ProcessSpawned, pid=8, argv=["claude"], resume="cli-1")
    assert (fold.session_state, fold.restarted) == ("idle", False)

    # A real crash is not a restart.
    crash = started()
    dispatched(crash)
    crash.add(ProcessExited, pid=7, returncode=-9)
    assert (crash.fold.session_state, crash.fold.restarted) == ("crashed", False)

    # A restart, then a failed spawn: a crash after all.
    failed = started()
    failed.add(SessionRecovered, ended=[])
    assert failed.fold.restarted
    failed.add(ProcessSpawnFailed, error="no binary")
    assert (failed.fold.session_state, failed.fold.restarted) == ("crashed", False)

    # A restart of a stopping session is not "resumable".
    stopping = started()
    stopping.add(SessionStopRequested, reason="bye")
    stopping.add(SessionRecovered, ended=[])
    assert (stopping.fold.session_state, stopping.fold.restarted) == ("stopping", False)


def test_a_plain_turn_leaves_restarted_false() -> None:
    feed = started()
    dispatched(feed)
    feed.cli(text(), "t1")
    feed.cli(result(), "t1")
    assert feed.fold.restarted is False


@pytest.mark.parametrize(
    "name",
    [
        "turnstile__interrupt-escalated-then-recovery.ndjson",
        "jackey8616__roma__test__fixtures__claude-stream__tool-use-partial-messages.jsonl",
    ],
)
@pytest.mark.parametrize("batch", [1, 7, 100_000])
def test_an_incremental_replay_reports_exactly_what_replay_does(name: str, batch: int) -> None:
    data = (FIXTURES / name).read_bytes()
    whole = replay(read_entries(frames_of(data)), keep_trace=True)
    items = list(read_entries(frames_of(data)))
    replayer = Replayer(keep_trace=True)
    try:
        for i in range(0, len(items), batch):
            replayer.feed(items[i : i + batch])
        report = replayer.report()
    finally:
        replayer.close()
    assert render_json(report) == render_json(whole)
    assert report.changes and report.changes == whole.changes


def test_the_drawing_is_what_mermaid_draws() -> None:
    for spec in load_specs().values():
        drawn = drawing(spec)
        text = mermaid(spec)
        for group, arrows in drawn.inner.items():
            assert f"state {group} {{" in text
            for arrow in arrows:
                assert f"        {arrow.source} --> {arrow.dest}: {arrow.label}\n" in text
        for arrow in drawn.outer:
            assert f"\n    {arrow.source} --> {arrow.dest}: {arrow.label}\n" in text
        arrows = text.count(" --> ") - text.count("[*]")
        assert arrows == len(drawn.outer) + sum(len(a) for a in drawn.inner.values())
        assert set(drawn.terminal) == spec.terminal
        members = [m for ms in drawn.groups.values() for m in ms]
        assert len(members) == len(set(members))
        assert all(spec.states[m].group == g for g, ms in drawn.groups.items() for m in ms)


def test_the_stream_drawing_has_the_shape_the_viewer_lays_out() -> None:
    drawn = drawing(load_specs()["stream"])
    assert drawn.groups == {
        "waiting": ["queued", "dispatched"],
        "streaming": ["thinking", "responding", "tool_running"],
    }
    assert ("waiting", "streaming") in {(a.source, a.dest) for a in drawn.outer}
    assert ("thinking", "tool_running") in {(a.source, a.dest) for a in drawn.inner["streaming"]}
