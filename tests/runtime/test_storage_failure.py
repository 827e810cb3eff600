"""A log that cannot be written: nothing is sent that is not written, turns end, the backlog comes back.

The "disk" here is :class:`tests.fulldisk.Disk`: a quota on log appends that fails like a full file
system (the real thing — a full tmpfs, real processes, real clients — is
``tests/reliability/test_disk_full.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.fulldisk import ENOSPC, Disk, full_disk
from tests.runtime.conftest import config, run_turn
from tests.scripted import EchoCli, ScriptedLauncher
from turnstile.engine.errors import StorageFailed, StorageUnavailable
from turnstile.engine.log import LogDropped, ProcessExited, Record, StreamEnded, decode_entry
from turnstile.engine.runtime import open_runtime


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    yield from full_disk(monkeypatch)


def _file(data: Path, sid: str) -> list[bytes]:
    return [line for line in (data / "sessions" / f"{sid}.ndjson").read_bytes().split(b"\n") if line]


async def _wait(condition: object, limit_s: float = 10.0) -> None:
    with trio.fail_after(limit_s):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - state of other tasks
            await trio.sleep(0.01)


def _ends(lines: list[bytes]) -> dict[str, list[StreamEnded]]:
    out: dict[str, list[StreamEnded]] = {}
    for line in lines:
        entry = decode_entry(line)
        if isinstance(entry, StreamEnded) and entry.stream is not None:
            out.setdefault(entry.stream, []).append(entry)
    return out


async def test_a_running_turn_ends_at_once_and_nothing_unwritten_is_sent(
    tmp_path: Path, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    launcher = ScriptedLauncher()
    cfg = config(data_dir=str(tmp_path), storage_retry_s=0.05)
    async with open_runtime(cfg, launcher=launcher) as rt:
        info = await rt.create_session(session_id="s")
        await run_turn(rt, "s", "warm up")
        disk.free = 4000  # the disk fills a few dozen lines into the next turn
        folded: list[object] = []
        rt.session("s").journal.add_folded_hook(lambda records: folded.extend(r.entry for r in records))
        tid = await rt.start_turn("s", "[[sim tokens=400 token_ms=2]]")
        got: list[Record] = []
        with trio.fail_after(10), pytest.raises(StorageFailed) as failed:
            async with rt.subscribe("s", after=info.last_seq, stream=None) as sub:
                async for batch in sub:
                    got.extend(batch)
        # Everything sent is in the file, byte for byte; nothing past the last written seq was sent.
        lines = _file(tmp_path, "s")
        assert got and got[-1].entry.seq == failed.value.last_seq == len(lines)
        assert [r.data for r in got] == lines[info.last_seq :]
        assert ENOSPC in failed.value.reason and str(tmp_path) in failed.value.reason
        # The turn ended (in memory: its stream.ended waits to be written) and its process is retired.
        turn = next(t for t in rt.session("s").info().turns if t.id == tid)
        assert turn.ended and turn.outcome == "failed" and turn.reason is not None
        assert (
            turn.reason.startswith("storage failed:") and ENOSPC in turn.reason and "s.ndjson" in turn.reason
        )
        await _wait(lambda: all(p.returncode is not None for p in launcher.spawned))
        pid = launcher.spawned[-1].pid  # the turn's agent: its exit is in (in memory) before we go on
        await _wait(lambda: any(isinstance(e, ProcessExited) and e.pid == pid for e in folded))
        # While it fails: no new turn, no new session, not ready, a new subscriber is told at once.
        with pytest.raises(StorageUnavailable):
            await rt.start_turn("s", "more")
        with pytest.raises(StorageUnavailable):
            await rt.create_session(session_id="other")
        assert not (tmp_path / "sessions" / "other.ndjson").exists()
        ready = rt.readiness()
        assert not ready.ready and any(ENOSPC in r for r in ready.reasons)
        with pytest.raises(StorageFailed):
            async with rt.subscribe("s", after=failed.value.last_seq, stream=tid) as sub:
                async for _ in sub:
                    pass
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "turnstile.journal"]
        assert len(errors) == 1 and "s.ndjson" in errors[0].getMessage(), (
            "one ERROR per episode, with the path"
        )
        # Space comes back: the retry timer writes the backlog first; readiness recovers by itself.
        before = _file(tmp_path, "s")
        disk.free = None
        await _wait(lambda: rt.readiness().ready)
        lines = _file(tmp_path, "s")
        assert [decode_entry(line).seq for line in lines] == list(range(1, len(lines) + 1))
        assert lines[: len(before)] == before and len(lines) > len(before)
        ends = _ends(lines)
        assert len(ends[tid]) == 1 and ends[tid][0].reason == turn.reason
        # A client resuming after the last seq it was sent gets the rest, ending with the real end.
        rest: list[Record] = []
        async with rt.subscribe("s", after=failed.value.last_seq, stream=tid) as sub:
            with trio.fail_after(10):
                async for batch in sub:
                    rest.extend(batch)
        assert isinstance(rest[-1].entry, StreamEnded) and rest[-1].entry.outcome == "failed"
        assert any(isinstance(decode_entry(line), ProcessExited) for line in lines[len(before) :])
        _, entries = await run_turn(rt, "s", "after the disk came back")
        assert isinstance(entries[-1], StreamEnded) and entries[-1].outcome == "completed"


async def test_output_past_the_backlog_bound_is_counted_in_a_log_dropped_entry(
    tmp_path: Path, disk: Disk
) -> None:
    cfg = config(data_dir=str(tmp_path), storage_retry_s=0.05, storage_backlog_bytes=2048, kill_after_s=2.0)
    # An agent that ignores SIGTERM: it goes on printing until the SIGKILL, long past the bound.
    stubborn = ScriptedLauncher(lambda agent, resume: EchoCli(resume=resume, ignore_sigterm=True))
    async with open_runtime(cfg, launcher=stubborn) as rt:
        await rt.create_session(session_id="s")
        disk.free = 1500  # the turn request fits; its output does not
        session = rt.session("s")
        folded: list[object] = []
        session.journal.add_folded_hook(lambda records: folded.extend(r.entry for r in records))
        tid = await rt.start_turn("s", "[[sim stderr_flood=5 tokens=200 token_ms=1]]")
        # Until the agent's exit is in (in memory): its output after the bound is all counted by then.
        await _wait(lambda: any(isinstance(e, ProcessExited) for e in folded))
        assert session.journal.failing
        disk.free = None
        await _wait(lambda: not session.journal.failing)
        entries = [decode_entry(line) for line in _file(tmp_path, "s")]
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        dropped = [e for e in entries if isinstance(e, LogDropped)]
        assert len(dropped) == 1 and dropped[0].entries > 0 and dropped[0].bytes > 0
        assert dropped[0].limit == 2048 and entries[-1] == dropped[0], "written after what was kept"
        # Lifecycle entries are kept whatever the bound: the turn's end and the process's exit.
        assert len(_ends(_file(tmp_path, "s"))[tid]) == 1
        assert any(isinstance(e, ProcessExited) for e in entries)


async def test_a_session_stopped_while_storage_fails_is_written_once_space_returns(
    tmp_path: Path, disk: Disk
) -> None:
    async with open_runtime(
        config(data_dir=str(tmp_path), storage_retry_s=0.05), launcher=ScriptedLauncher()
    ) as rt:
        await rt.create_session(session_id="s")
        tid = await rt.start_turn("s", "[[sim hang=first]]")
        session = rt.session("s")
        await _wait(lambda: session.fold.streams[tid].state != "queued")
        disk.free = 0
        await rt.stop_session("s")
        assert session.journal.failing and session.journal.closed
        disk.free = None
        await _wait(lambda: not session.journal.failing)
        kinds = [type(decode_entry(line)).__name__ for line in _file(tmp_path, "s")]
        assert kinds[-1] == "SessionStopped" and len(_ends(_file(tmp_path, "s"))[tid]) == 1


async def test_a_restart_while_storage_fails_reuses_no_seq_anybody_was_sent(
    tmp_path: Path, disk: Disk
) -> None:
    cfg = config(data_dir=str(tmp_path), storage_retry_s=0.05)
    sent: list[Record] = []
    async with open_runtime(cfg, launcher=ScriptedLauncher()) as rt:
        await rt.create_session(session_id="s")
        disk.free = 3000
        tid = await rt.start_turn("s", "[[sim tokens=400 token_ms=2]]")
        with trio.fail_after(10), pytest.raises(StorageFailed):
            async with rt.subscribe("s") as sub:
                async for batch in sub:
                    sent.extend(batch)
        # The runtime exits with the disk still full: what waits in memory is lost (nobody saw it).
    disk.free = None
    async with open_runtime(cfg, launcher=ScriptedLauncher()) as rt:
        await rt.wait_recovered()
        lines = _file(tmp_path, "s")
        assert [decode_entry(line).seq for line in lines] == list(range(1, len(lines) + 1))
        for rec in sent:
            assert lines[rec.entry.seq - 1] == rec.data, f"seq {rec.entry.seq} names another entry"
        ends = _ends(lines)
        assert len(ends[tid]) == 1 and ends[tid][0].reason == "server restarted"


async def test_an_append_that_fails_before_the_session_exists_leaves_no_log(
    tmp_path: Path, disk: Disk
) -> None:
    async with open_runtime(config(data_dir=str(tmp_path)), launcher=ScriptedLauncher()) as rt:
        disk.free = 0
        with pytest.raises(StorageUnavailable) as refused:
            await rt.create_session(session_id="new")
        assert ENOSPC in str(refused.value)
        assert not (tmp_path / "sessions" / "new.ndjson").exists()
        assert [s.id for s in rt.sessions()] == []
        disk.free = None
        info = await rt.create_session(session_id="new")
        assert info.last_seq == 1
