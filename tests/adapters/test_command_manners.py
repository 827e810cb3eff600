"""The ``turnstile`` command's manners, run as real processes (the console script a user runs).

Exit codes a script can trust — 0 ok, 1 findings, 2 usage or configuration error, 141 for a closed
stdout — documented in every ``--help``; no traceback when the reader of a pipe goes away.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TURNSTILE = Path(sys.executable).parent / "turnstile"
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "transcripts"
GOLDEN = ROOT / "tests" / "golden"
CLEAN_LOG = TRANSCRIPTS / "turnstile__tool-use-two-turns.ndjson"
VIOLATION_LOG = TRANSCRIPTS / "turnstile__interrupt-escalated-then-recovery.ndjson"
CLEAN_TRANSCRIPT = TRANSCRIPTS / "jackey8616__roma__test__fixtures__claude-stream__interrupted-turn.jsonl"
TIMEOUT = 60


def turnstile(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert TURNSTILE.exists(), f"the console script is missing: {TURNSTILE} (pip install -e .)"
    return subprocess.run(
        [str(TURNSTILE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
    )


@pytest.fixture(scope="module")
def bad_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transcript with thousands of bad lines: a report far larger than a pipe's buffer."""
    good = CLEAN_TRANSCRIPT.read_bytes().splitlines()
    lines = [good[0]]
    for i in range(4000):
        lines.append(b'{"type":"assistant","mess' if i % 2 else b"[SandboxDebug] noise %d" % i)
    path = tmp_path_factory.mktemp("logs") / "bad.jsonl"
    path.write_bytes(b"\n".join([*lines, *good[1:]]) + b"\n")
    return path


def assert_quiet(proc: subprocess.CompletedProcess[str]) -> None:
    for word in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert word not in proc.stderr, proc.stderr


# --- exit codes -------------------------------------------------------------------------------------------


def test_log_stats_exits_like_a_linter(bad_log: Path) -> None:
    clean = turnstile("log", "stats", CLEAN_TRANSCRIPT)
    assert clean.returncode == 0 and "0 errors" in clean.stdout
    found = turnstile("log", "stats", bad_log)
    assert found.returncode == 1 and "4000 errors" in found.stdout
    assert turnstile("log", "stats", bad_log, "--json").returncode == 1
    opted_out = turnstile("log", "stats", bad_log, "--exit-zero")
    assert opted_out.returncode == 0 and opted_out.stdout == found.stdout
    missing = turnstile("log", "stats", bad_log.parent / "missing.jsonl")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert turnstile("log", "stats").returncode == 2  # usage: FILE missing
    for proc in (clean, found, opted_out, missing):
        assert_quiet(proc)


def test_replay_exits_non_zero_on_violations(tmp_path: Path) -> None:
    clean = turnstile("replay", CLEAN_LOG)
    assert clean.returncode == 0 and "no violations" in clean.stdout
    found = turnstile("replay", VIOLATION_LOG)
    assert found.returncode == 1 and "1 violation:" in found.stdout
    assert turnstile("replay", VIOLATION_LOG, "--json").returncode == 1
    # A golden file holds the violations it expects: a match is a pass.
    golden = GOLDEN / f"{VIOLATION_LOG.stem}.trace.txt"
    assert turnstile("replay", VIOLATION_LOG, "--trace", "--check", golden).returncode == 0
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    assert turnstile("replay", empty).returncode == 2
    assert turnstile("replay", VIOLATION_LOG, "--check", tmp_path / "missing.txt").returncode == 2
    for proc in (clean, found):
        assert_quiet(proc)


def test_replay_explains_its_question_marks() -> None:
    timed = turnstile("replay", VIOLATION_LOG).stdout  # t3 never saw a CLI event; t1 and t4 no result
    assert "? = not in the log — ttfe: no CLI event came before the stream ended" in timed
    assert "cost: no result line reported one" in timed
    untimed = turnstile(
        "replay", TRANSCRIPTS / "foksa__open-claude-agent-sdk__tests__snapshots__hello-world.jsonl"
    )
    assert "ttfe, thinking, tools, total: the log has no times" in untimed.stdout
    assert "?" not in turnstile("replay", CLEAN_LOG).stdout  # nothing unknown, no footnote


def test_usage_and_configuration_errors_exit_2(tmp_path: Path) -> None:
    for args in (
        (),
        ("bogus",),
        ("diagram", "bogus"),
        ("diagram", "all", "--format", "svg"),  # SVG holds one diagram
        ("diagram", "--update-doc", str(tmp_path / "missing.md")),
        ("serve", "--pool-size", "many"),
        ("serve", "--host", "0.0.0.0", "--port", "0"),  # beyond loopback without a token
        ("log",),
    ):
        proc = turnstile(*args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert proc.stderr.strip() and "Traceback" not in proc.stderr, args
    ok = turnstile("diagram", "all", "--format", "dot")
    assert ok.returncode == 0 and "digraph" in ok.stdout


@pytest.mark.parametrize(
    "args",
    [(), ("serve",), ("replay",), ("diagram",), ("log", "stats")],
    ids=lambda a: " ".join(a) or "turnstile",
)
def test_every_help_documents_the_exit_codes(args: tuple[str, ...]) -> None:
    proc = turnstile(*args, "--help")
    assert proc.returncode == 0
    assert "exit status" in proc.stdout
    assert "  2  " in proc.stdout or "  2    " in proc.stdout


def test_sim_help_is_short_and_the_directives_are_one_flag_away() -> None:
    short = turnstile("sim", "--help")
    assert short.returncode == 0 and short.stdout.startswith("usage: turnstile sim")
    assert len(short.stdout.splitlines()) < 80 and "--help-directives" in short.stdout
    table = turnstile("sim", "--help-directives")
    assert table.returncode == 0 and "hang=first|mid" in table.stdout and "stderr_flood=N" in table.stdout


# --- closed pipes ---------------------------------------------------------------------------------------------


def _with_closed_stdout(*args: str | Path, unbuffered: bool = False) -> subprocess.CompletedProcess[str]:
    """Run with a stdout whose reader is already gone: the first write (or flush) fails with EPIPE.

    A shell has no PYTHONUNBUFFERED (stdout to a pipe is then block-buffered and fails at the flush);
    ``unbuffered`` sets it (every write fails at once).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(TURNSTILE), *map(str, args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            cwd=ROOT,
            env=env,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ("log", "stats", "BAD"),
        ("log", "stats", "BAD", "--json"),
        ("replay", str(VIOLATION_LOG), "--trace"),
        ("replay", str(VIOLATION_LOG), "--json"),
        ("diagram", "all"),
        ("--help",),
        ("sim", "--help-directives"),
    ],
    ids=lambda a: " ".join(Path(x).name if "/" in x else x for x in a),
)
def test_a_closed_stdout_exits_141_without_a_traceback(args: tuple[str, ...], bad_log: Path) -> None:
    argv = [str(bad_log) if a == "BAD" else a for a in args]
    proc = _with_closed_stdout(*argv)
    assert proc.returncode == 141, proc.stderr
    assert_quiet(proc)
    if "--help" not in argv:  # (argparse itself ignores a failed write of its help when unbuffered)
        proc = _with_closed_stdout(*argv, unbuffered=True)
        assert proc.returncode == 141, proc.stderr
        assert_quiet(proc)


def test_piped_into_head(bad_log: Path) -> None:
    # The real thing: `head` reads one line and exits while the report (far larger than the pipe's
    # buffer) is still being written.
    proc = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" log stats "$1" | head -1', str(TURNSTILE), str(bad_log)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.stdout.startswith(f"{bad_log}: transcript") and proc.stdout.count("\n") == 1
    assert proc.returncode == 141  # pipefail reports the writer's status
    assert_quiet(proc)
