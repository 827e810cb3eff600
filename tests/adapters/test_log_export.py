"""``turnstile log export``: a log file's entries as NDJSON, bad lines named and left out (the Redis
source is tested with real servers in tests/cluster/test_nodes.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.engine.test_stores import sample_records

ROOT = Path(__file__).resolve().parents[2]


def export(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "turnstile.adapters.cli", "log", "export", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )


def test_a_file_log_exports_byte_for_byte(tmp_path: Path) -> None:
    recs = sample_records(5)
    log = tmp_path / "s.ndjson"
    log.write_bytes(b"".join(r.data + b"\n" for r in recs))
    done = export(str(log))
    assert done.returncode == 0, done.stderr
    assert done.stdout == log.read_bytes()
    out = tmp_path / "out.ndjson"
    assert export(str(log), "-o", str(out)).returncode == 0 and out.read_bytes() == log.read_bytes()


def test_bad_lines_are_named_and_left_out(tmp_path: Path) -> None:
    recs = sample_records(3)
    log = tmp_path / "damaged.ndjson"
    lines = [r.data for r in recs]
    lines.insert(2, b'{"kind":"cli","seq":')
    log.write_bytes(b"\n".join(lines) + b"\n\n")
    done = export(str(log))
    assert done.returncode == 1
    assert done.stdout == b"".join(r.data + b"\n" for r in recs)
    assert b"damaged.ndjson:3: not a log entry" in done.stderr


def test_unusable_sources_exit_2(tmp_path: Path) -> None:
    transcript = tmp_path / "raw.jsonl"
    transcript.write_bytes(b'{"type":"system","subtype":"init"}\n')
    for source, message in [
        (str(tmp_path / "missing.ndjson"), b"cannot read"),
        (str(transcript), b"holds no Turnstile log entry"),
        ("redis://127.0.0.1:1/0", b"is not a session in Redis"),
    ]:
        done = export(source)
        assert done.returncode == 2 and message in done.stderr, done.stderr
