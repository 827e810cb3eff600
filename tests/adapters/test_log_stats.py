"""``turnstile log stats``: counts, errors with line numbers, and clean failures for unusable input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from turnstile.adapters.cli import main
from turnstile.engine.log import StreamEnded, TurnRequested, entry_from_frame, record

TRANSCRIPTS = Path(__file__).parent.parent / "fixtures" / "transcripts"
INTERRUPTED = TRANSCRIPTS / "jackey8616__roma__test__fixtures__claude-stream__interrupted-turn.jsonl"
HAIKU = TRANSCRIPTS / "foksa__open-claude-agent-sdk__tests__snapshots__streaming-haiku.jsonl"


def stats_json(path: Path, capsys: pytest.CaptureFixture[str], *, code: int = 0) -> dict[str, object]:
    assert main(["log", "stats", str(path), "--json"]) == code
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_raw_transcript_with_recorder_times(capsys: pytest.CaptureFixture[str]) -> None:
    # Counted by reading the fixture: 12 lines — 2 init, 3 assistant, 3 user, 1 control_response,
    # 1 rate_limit_event, 2 results (one error_during_execution, one success).
    s = stats_json(INTERRUPTED, capsys)
    assert s["format"] == "transcript" and s["lines"] == 12 and s["entries"] == 12 and s["errors"] == []
    assert s["by_type"] == {
        "assistant": 3,
        "control_response": 1,
        "rate_limit_event": 1,
        "result": 2,
        "system": 2,
        "user": 3,
    }
    assert s["by_subtype"] == {"result/error_during_execution": 1, "result/success": 1, "system/init": 2}


def test_partial_messages_counted_by_event_type(capsys: pytest.CaptureFixture[str]) -> None:
    s = stats_json(HAIKU, capsys)
    by_subtype = s["by_subtype"]
    assert isinstance(by_subtype, dict)
    assert by_subtype["stream_event/message_start"] == 1
    assert by_subtype["stream_event/content_block_delta"] == 18
    assert by_subtype["stream_event/message_stop"] == 1


def test_errors_have_line_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = INTERRUPTED.read_bytes().splitlines()
    bad = [
        lines[0],
        b"[SandboxDebug] noise",
        lines[1],
        b'{"type":"assistant","mess',
        b'{"type":"active_goal"}',
        lines[2],
    ]
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b"\n".join(bad) + b'\n{"type":"res')
    s = stats_json(p, capsys, code=1)  # errors found: non-zero, as linters do
    errors = s["errors"]
    assert isinstance(errors, list)
    assert [(e["line"], e["kind"]) for e in errors] == [(2, "noise"), (4, "malformed"), (7, "truncated")]
    assert s["unknown_types"] == {"active_goal": 1}
    assert s["lines"] == 7


def test_turnstile_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recs = [record(TurnRequested(seq=1, ts=1.0, stream="t1", prompt="hi"))]
    for line in INTERRUPTED.read_bytes().splitlines()[:3]:
        made = entry_from_frame(line, seq=len(recs) + 1, ts=2.0, stream="t1")
        assert made is not None
        recs.append(record(made[0]))
    recs.append(record(StreamEnded(seq=len(recs) + 1, ts=3.0, stream="t1", outcome="completed")))
    p = tmp_path / "s.ndjson"
    p.write_bytes(b"".join(r.data + b"\n" for r in recs))
    s = stats_json(p, capsys)
    assert s["format"] == "turnstile"
    assert s["by_kind"] == {"cli": 3, "stream.ended": 1, "turn.requested": 1}
    assert main(["log", "stats", str(p)]) == 0
    assert "by kind:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"\n \n\t\n", "the file is empty"),
        (bytes(range(256)) * 40, "not a Turnstile log nor a CLI stream-json transcript"),
        (b"hello world\nthis is prose\n", "not a Turnstile log nor a CLI stream-json transcript"),
    ],
)
def test_unusable_input_is_one_line_and_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    p = tmp_path / "input.jsonl"
    if content is not None:
        p.write_bytes(content)
    assert main(["log", "stats", str(p), "--json"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "turnstile.adapters.cli", "log", "stats", str(tmp_path / "missing"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no such file" in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "turnstile.adapters.cli", "log", "stats", str(INTERRUPTED), "--json"],
        capture_output=True,
        timeout=60,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["entries"] == 12
