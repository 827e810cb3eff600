"""Every recorded fixture replays to the streams and outcomes read from it by hand, to its golden
trace byte for byte, and ``turnstile replay`` handles bad input with a one-line error.

The corpus: the held-out transcripts in ``tests/fixtures/transcripts/`` (CLI 2.1.29 and 2.1.220, recorded by
other projects) and our own recordings of every CLI version in the compatibility matrix,
``tests/fixtures/cli-<version>/`` (docs/compatibility.md).

Regenerate the golden files after an intended change with ``TURNSTILE_UPDATE_GOLDEN=1 pytest
tests/engine/test_replay.py`` and review the diff.
"""

from __future__ import annotations

import argparse
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from turnstile.adapters.commands import replay as command
from turnstile.engine.errors import LogInputError
from turnstile.engine.replay import ReplayReport, golden_diff, replay
from turnstile.engine.transcript import frames_of, read_entries

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "transcripts"
GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("TURNSTILE_UPDATE_GOLDEN") == "1"

FOKSA = "foksa__open-claude-agent-sdk__tests__snapshots__"
ROMA = "jackey8616__roma__test__fixtures__claude-stream__"

# Written from reading each fixture (see tests/fixtures/transcripts/README.md), not from running the code:
# fixture -> [(stream id, outcome, tool calls)]
EXPECTED: dict[str, list[tuple[str, str, int]]] = {
    f"{FOKSA}custom-model.jsonl": [("t1", "completed", 0)],
    f"{FOKSA}hello-world.jsonl": [("t1", "completed", 0)],
    f"{FOKSA}interrupt.jsonl": [("t1", "cancelled", 0)],
    f"{FOKSA}multi-turn.jsonl": [("t1", "completed", 0), ("t2", "completed", 0)],
    f"{FOKSA}plan-mode-ls.jsonl": [("t1", "completed", 1)],
    f"{FOKSA}streaming-haiku.jsonl": [("t1", "completed", 0)],
    f"{ROMA}compaction-failed.jsonl": [("t1", "completed", 0), ("t2", "completed", 0)],
    f"{ROMA}generation-no-partial-messages.jsonl": [("t1", "completed", 0)],
    f"{ROMA}generation-partial-messages.jsonl": [("t1", "completed", 0)],
    f"{ROMA}interrupted-turn.jsonl": [("t1", "cancelled", 0), ("t2", "completed", 0)],
    f"{ROMA}manual-compaction.jsonl": [(f"t{i}", "completed", 0) for i in range(1, 5)],
    f"{ROMA}manual-compaction-argument.jsonl": [(f"t{i}", "completed", 0) for i in range(1, 5)],
    f"{ROMA}resume-lost.jsonl": [("t1", "failed", 0)],
    f"{ROMA}three-turns-one-process.jsonl": [
        ("t1", "completed", 0),
        ("t2", "cancelled", 0),
        ("t3", "completed", 0),
    ],
    f"{ROMA}tool-use-partial-messages.jsonl": [("t1", "completed", 1)],
    f"{ROMA}tool-use-turn.jsonl": [("t1", "completed", 2), ("t2", "completed", 0)],
    "turnstile__tool-use-two-turns.ndjson": [("t1", "completed", 2), ("t2", "completed", 0)],
    "turnstile__interrupt-escalated-then-recovery.ndjson": [
        ("t1", "cancelled", 0),
        ("t2", "completed", 0),
        ("t3", "timed_out", 0),
        ("t4", "failed", 0),
    ],
}

# The one expected violation: t3's result arrives after its first-event timeout ended it.
EXPECTED_VIOLATIONS = {"turnstile__interrupt-escalated-then-recovery.ndjson": [(25, "t3", "complete")]}

# Our recordings of each CLI version (tests/fixtures/record_real_cli.py): the same scripted scenarios for every
# version, so one table per scenario, written from what each scenario scripts (see the directories' READMEs).
CLI_DIRS = sorted(p for p in (ROOT / "tests" / "fixtures").glob("cli-*") if p.is_dir())
CLI_EXPECTED: dict[str, list[tuple[str, str, int]]] = {
    "plain-text.jsonl": [("t1", "completed", 0)],
    "tool-turn.jsonl": [("t1", "completed", 1)],
    "interrupted-turn.jsonl": [("t1", "cancelled", 0)],
    "api-error-400.jsonl": [("t1", "failed", 0)],
    "two-turns-one-process.jsonl": [("t1", "completed", 0), ("t2", "completed", 0)],
    "thinking-turn.jsonl": [("t1", "completed", 0)],
    "api-retry-500.jsonl": [("t1", "completed", 0)],
    "tool-approval.jsonl": [("t1", "completed", 1)],
}
CLI_FIXTURES = [f"../{d.name}/{name}" for d in CLI_DIRS for name in sorted(CLI_EXPECTED)]
EXPECTED.update({name: CLI_EXPECTED[Path(name).name] for name in CLI_FIXTURES})


def _replay(name: str) -> ReplayReport:
    return replay(read_entries(frames_of((FIXTURES / name).read_bytes())))


def _golden_stem(name: str) -> str:
    """Golden file stem: the fixture's stem, prefixed with its directory for a CLI recording."""
    path = Path(name)
    return f"{path.parent.name}__{path.stem}" if name.startswith("../") else path.stem


def test_every_fixture_is_in_the_table() -> None:
    on_disk = {p.name for p in FIXTURES.iterdir() if p.suffix in (".jsonl", ".ndjson")}
    assert on_disk == {name for name in EXPECTED if not name.startswith("../")}
    assert len(CLI_DIRS) >= 4, "the compatibility matrix records at least four CLI versions"
    for d in CLI_DIRS:
        assert {p.name for p in d.glob("*.jsonl")} == set(CLI_EXPECTED), d.name
        assert (d / "README.md").is_file(), f"{d.name} has no provenance README"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_replays_to_the_expected_streams(name: str) -> None:
    report = _replay(name)
    assert [(s.id, s.outcome, s.tool_calls) for s in report.streams] == EXPECTED[name]
    assert [(v.seq, v.id, v.trigger) for v in report.violations] == EXPECTED_VIOLATIONS.get(name, [])
    assert report.entries == report.valid_entries


def test_hand_checked_timings_and_counts() -> None:
    three = {s.id: s for s in _replay(f"{ROMA}three-turns-one-process.jsonl").streams}
    t1 = three["t1"].timing
    # A raw transcript's turn opens with its first line (ttfe 0); the model's first output came 2.258 s later.
    assert (t1.total_ms, t1.ttft_ms, t1.responding_ms, t1.thinking_ms) == (2307.0, 2258.0, 49.0, 0.0)
    assert t1.ttfe_ms == 0.0
    assert three["t2"].timing.cost_usd == 0.0  # the running total did not move
    assert three["t2"].reason.startswith("interrupted: terminal_reason aborted_streaming")
    tools = _replay(f"{ROMA}tool-use-turn.jsonl").streams[0].timing
    assert (tools.tool_ms, tools.tool_calls) == (669.0, 2)
    haiku = _replay(f"{FOKSA}streaming-haiku.jsonl").streams[0]
    assert haiku.deltas == 18 and haiku.timing.total_ms is None  # foksa files carry no timestamps
    partial = _replay(f"{ROMA}generation-partial-messages.jsonl").streams[0]
    assert partial.deltas == 195
    foksa_interrupt = _replay(f"{FOKSA}interrupt.jsonl")
    assert foksa_interrupt.streams[0].requested_seq == 2  # line 1, a control_response, opened no turn
    lost = _replay(f"{ROMA}resume-lost.jsonl").streams[0]
    assert lost.reason.startswith("No conversation found with session ID")


def test_turnstile_log_streams_were_ended_by_the_log() -> None:
    report = _replay("turnstile__interrupt-escalated-then-recovery.ndjson")
    assert all(s.ended for s in report.streams)
    assert report.session_state == "crashed"
    assert [s.reason for s in report.streams] == [
        "interrupted: escalated to SIGTERM",
        "",
        "first_event timeout after 30 s",
        "server restarted",
    ]


# --- golden files ------------------------------------------------------------------------------------------------

GOLDENS = [(name, "trace.txt") for name in sorted(EXPECTED)] + [
    (f"{ROMA}three-turns-one-process.jsonl", "json"),
    ("turnstile__interrupt-escalated-then-recovery.ndjson", "json"),
]


@pytest.mark.parametrize(("name", "suffix"), GOLDENS)
def test_fixture_replays_to_its_golden_file(name: str, suffix: str) -> None:
    text = command.replay_text(FIXTURES / name, as_json=suffix == "json", trace=True)
    golden = GOLDEN / f"{_golden_stem(name)}.{suffix}"
    if UPDATE:
        golden.write_text(text, encoding="utf-8")
    diff = golden_diff(text, golden.read_text(encoding="utf-8"), name=str(golden))
    assert diff is None, f"replay of {name} changed; if intended, regenerate the golden files:\n{diff}"


def test_replay_is_deterministic() -> None:
    path = FIXTURES / f"{ROMA}tool-use-partial-messages.jsonl"
    for as_json in (False, True):
        runs = {command.replay_text(path, as_json=as_json, trace=True) for _ in range(3)}
        assert len(runs) == 1


def test_json_shape() -> None:
    data = json.loads(command.replay_text(FIXTURES / f"{ROMA}interrupted-turn.jsonl", as_json=True))
    assert {"streams", "violations", "entries", "session_state"} <= set(data)
    stream = data["streams"][0]
    assert {"id", "outcome", "timing", "tool_calls", "reason", "pct"} <= set(stream)
    assert set(stream["timing"]) >= {
        "total_ms",
        "ttfe_ms",
        "thinking_ms",
        "tool_ms",
        "responding_ms",
        "cost_usd",
    }
    assert data["violations"] == [] and data["changes"] is None


def test_golden_diff_is_readable() -> None:
    assert golden_diff("a\nb\n", "a\nb\n") is None
    diff = golden_diff("a\nc\n", "a\nb\n", name="g.txt")
    assert diff is not None and "-b\n" in diff and "+c\n" in diff and "g.txt (expected)" in diff


# --- the command ------------------------------------------------------------------------------------------------------


def _args(path: Path, **kw: object) -> argparse.Namespace:
    return argparse.Namespace(
        file=path, json=kw.get("json", False), trace=kw.get("trace", False), check=kw.get("check")
    )


def test_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(_args(FIXTURES / f"{ROMA}three-turns-one-process.jsonl", trace=True)) == 0
    out = capsys.readouterr().out
    assert out.startswith("      1  stream ")  # the trace streams out first
    assert "t2      cancelled" in out and "no violations" in out


def test_command_check_passes_and_fails_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture = FIXTURES / f"{FOKSA}multi-turn.jsonl"
    golden = GOLDEN / f"{fixture.stem}.trace.txt"
    assert command.run(_args(fixture, trace=True, check=golden)) == 0
    assert "matches" in capsys.readouterr().err
    changed = tmp_path / "golden.txt"
    changed.write_text(golden.read_text().replace("completed", "failed", 1))
    assert command.run(_args(fixture, trace=True, check=changed)) == 1
    captured = capsys.readouterr()
    assert "+t1      completed" in captured.out or "completed" in captured.out
    assert "no longer replays to" in captured.err
    assert command.run(_args(fixture, check=tmp_path / "missing.txt")) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "is empty"),
        (b"\n\n  \n", "only blank lines"),
        (
            b"\x7fELF\x02\x01\x01\x00garbage\x00\xff\n\x00\x01binary",
            "neither a Turnstile log nor a CLI transcript",
        ),
        (b"hello world\nthis is not json\n", "neither a Turnstile log nor a CLI transcript"),
    ],
)
def test_command_rejects_bad_files_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_bytes(content)
    assert command.run(_args(path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("turnstile replay: ")
    with pytest.raises(LogInputError):
        command.replay_text(path)


def test_a_directory_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(_args(tmp_path)) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_large_logs_stream_through_in_bounded_memory(tmp_path: Path) -> None:
    one = (FIXTURES / f"{ROMA}generation-partial-messages.jsonl").read_bytes()
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        for _ in range(150):  # ~17 MB, ~31k entries
            f.write(one)
    tracemalloc.start()
    try:
        text = command.replay_text(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "150 streams (150 completed)" in text
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {big.stat().st_size / 1e6:.0f} MB log"
