"""Crash safety of the server itself: durable logs, event-sourced recovery, and the process ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest
import trio

from tests.runtime.conftest import assert_gap_free, config, ended, live_descendants, run_turn
from tests.scripted import ScriptedLauncher
from turnstile.engine.errors import SessionExists, SessionStopped
from turnstile.engine.log import ProcessSpawned, SessionRecovered, StreamEnded
from turnstile.engine.runtime import open_runtime
from turnstile.engine.runtime.ledger import ProcessLedger

ROOT = Path(__file__).resolve().parents[2]

_SERVER = textwrap.dedent(
    """
    import sys, trio
    from turnstile.engine.runtime import AgentConfig, RuntimeConfig, open_runtime

    async def main():
        agent = AgentConfig(binary=sys.argv[2], extra_args=("--speed", "0"))
        cfg = RuntimeConfig(data_dir=sys.argv[1], pool_size=0, default_agent=agent)
        async with open_runtime(cfg) as rt:
            await rt.create_session(session_id="crashy")
            first = await rt.start_turn("crashy", "first")
            async with rt.subscribe("crashy", stream=first) as sub:
                async for _ in sub:
                    pass
            second = await rt.start_turn("crashy", "[[sim hang=mid]] second")
            async with rt.subscribe("crashy", stream=second) as sub:
                async for batch in sub:
                    if any(b"text_delta" in r.data for r in batch):
                        break
            print(rt.session("crashy").pid, flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


@pytest.mark.slow
async def test_a_killed_server_is_recovered_from_its_log_and_its_leftovers_reaped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # An agent that outlives its stdin (the sim exits on EOF; this wrapper lingers like a wedged CLI).
    wrapper = tmp_path / "lingering-agent.sh"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{ROOT}" "{sys.executable}" -m turnstile.engine.agents.sim "$@"\nsleep 300\n'
    )
    wrapper.chmod(0o755)
    server = await trio.to_thread.run_sync(
        lambda: subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(data), str(wrapper)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    )
    try:
        assert server.stdout is not None
        agent_pid = int(await trio.to_thread.run_sync(server.stdout.readline))
    finally:
        server.kill()  # SIGKILL: no cleanup at all, like a crash
        server.wait()
    assert agent_pid in live_descendants()  # the agent outlived its server

    await trio.sleep(0.2)  # the sim inside sees stdin EOF and exits; the wrapper lingers
    async with open_runtime(config(data_dir=str(data), pool_size=0)) as rt:
        assert [e.pid for e in rt.reaped] == [agent_pid]
        with trio.fail_after(5):
            while agent_pid in live_descendants():  # noqa: ASYNC110 (no event for another's exit)
                await trio.sleep(0.01)
        assert rt.readiness().ready or rt.readiness().recovering
        info = await rt.create_session()  # waits for recovery
        sessions = {s.id: s for s in rt.sessions()}
        assert "crashy" in sessions and info.id in sessions
        turns = {t.id: t for t in sessions["crashy"].turns}
        assert turns["t1"].outcome == "completed"
        assert turns["t2"].outcome == "failed" and turns["t2"].reason == "server restarted"
        log = assert_gap_free(rt, "crashy")
        recovered = [e for e in log if isinstance(e, SessionRecovered)]
        assert recovered and recovered[0].ended == ["t2"]
        # the session goes on: the next turn resumes the CLI's conversation
        with trio.fail_after(20):
            _, entries = await run_turn(rt, "crashy", "third")
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, "crashy") if isinstance(e, ProcessSpawned)]
        assert spawned[0].resume is None
        assert spawned[-1].resume == rt.session("crashy").fold.cli_session_id is not None


async def test_logs_survive_a_clean_restart_and_subscriptions_resume(tmp_path: Path) -> None:
    launcher = ScriptedLauncher()
    cfg = config(data_dir=str(tmp_path), pool_size=1)
    async with open_runtime(cfg, launcher=launcher) as rt:
        info = await rt.create_session(session_id="keep")
        stream, first = await run_turn(rt, "keep", "one")
        hanging = await rt.start_turn("keep", "[[sim hang=first]]")
        stopped = await rt.create_session(session_id="done")
        await rt.stop_session("done")
        last = rt.session("keep").journal.last_seq
    async with open_runtime(cfg, launcher=launcher) as rt:
        with pytest.raises(SessionExists):
            await rt.create_session(session_id="keep")
        session = rt.session("keep")
        assert session.info().turns[0].outcome == "completed"
        # the orderly shutdown ended the hanging turn; nothing is left open
        end = [e for e in assert_gap_free(rt, "keep") if isinstance(e, StreamEnded) and e.stream == hanging]
        assert end[0].outcome == "cancelled" and end[0].reason == "server shutting down"
        # resume a subscription from a seq of the previous run: no gap, no duplicate
        async with rt.subscribe("keep", after=last - 2) as sub:
            seqs: list[int] = []
            with trio.move_on_after(0.2):
                async for batch in sub:
                    seqs.extend(r.entry.seq for r in batch)
        assert seqs[0] == last - 1 and seqs == list(range(last - 1, seqs[-1] + 1))
        _, entries = await run_turn(rt, "keep", "two")
        assert ended(entries).outcome == "completed"
        # the stopped session is readable, not runnable
        assert rt.session("done").state == "stopped" and stopped.id == "done"
        with pytest.raises(SessionStopped):
            await rt.start_turn("done", "x")
    assert info.id == "keep" and stream == "t1" and first


async def test_a_damaged_log_does_not_stop_the_others(tmp_path: Path) -> None:
    cfg = config(data_dir=str(tmp_path))
    async with open_runtime(cfg, launcher=ScriptedLauncher()) as rt:
        await rt.create_session(session_id="good")
        await rt.create_session(session_id="bad")
        await run_turn(rt, "bad", "x")
    path = tmp_path / "sessions" / "bad.ndjson"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"{damaged"
    path.write_bytes(b"\n".join(lines))
    async with open_runtime(cfg, launcher=ScriptedLauncher()) as rt:
        await rt.create_session(session_id="new")
        assert {s.id for s in rt.sessions()} == {"good", "new"}
        assert "bad" in rt.recovery_errors


def test_ledger_reaps_only_processes_that_are_provably_ours(tmp_path: Path) -> None:
    ours = subprocess.Popen(["sleep", "30"], start_new_session=True)
    theirs = subprocess.Popen(["sleep", "31"], start_new_session=True)
    try:
        ledger = ProcessLedger(tmp_path / "processes.json")
        ledger.add(ours.pid, ["sleep", "30"])
        real = ledger.add(theirs.pid, ["sleep", "31"])
        ledger.add(999_999_999, ["gone"])
        # Forge what a reused pid looks like: the right pid, but another start time / another program.
        forged = [
            msgspec.structs.replace(real, start_ticks=(real.start_ticks or 0) - 1),
            msgspec.structs.replace(real, pid=real.pid, argv=["other"], cmdline=["other"], exe="/bin/other"),
        ]
        entries = [e for e in ledger.entries() if e.pid != theirs.pid]
        for fake in forged:
            (tmp_path / "processes.json").write_bytes(msgspec.json.encode([*entries, fake]))
            assert not ProcessLedger(tmp_path / "processes.json").is_ours(fake)
        reloaded = ProcessLedger(tmp_path / "processes.json")
        assert len(reloaded) == 3
        killed = reloaded.reap_leftovers()
        assert [e.pid for e in killed] == [ours.pid]
        assert ours.wait(timeout=5) == -signal.SIGKILL
        time.sleep(0.05)
        assert theirs.poll() is None
        assert len(ProcessLedger(tmp_path / "processes.json")) == 0
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait()


@pytest.mark.slow
async def test_the_ledger_holds_live_processes_only(tmp_path: Path) -> None:
    async with open_runtime(config(data_dir=str(tmp_path), pool_size=1)) as rt:
        info = await rt.create_session()
        await run_turn(rt, info.id, "hi")
        pids = {e.pid for e in rt.ledger.entries()}
        assert rt.session(info.id).pid in pids
    assert len(ProcessLedger(tmp_path / "processes.json")) == 0


def test_the_ledger_is_appended_and_reads_back_after_a_torn_write(tmp_path: Path) -> None:
    """One line per change (no rewrite per spawn); a crash mid-write leaves a torn last line, which is
    skipped; many changes compact the file down to the live entries."""
    path = tmp_path / "processes.json"
    ledger = ProcessLedger(path)
    me = os.getpid()
    ledger.add(me, ["python"])
    ledger.add(999_999_998, ["gone-1"])
    ledger.remove(999_999_998)
    assert len(path.read_bytes().splitlines()) == 3
    with path.open("ab") as f:
        f.write(b'{"pid": 12, "argv": ["tor')  # what a SIGKILL mid-write can leave
    reloaded = ProcessLedger(path)
    assert [e.pid for e in reloaded.entries()] == [me]
    for i in range(600):
        reloaded.add(1_000_000 + i, ["x"])
        reloaded.remove(1_000_000 + i)
    lines = path.read_bytes().splitlines()
    assert len(lines) < 300, len(lines)  # compacted at least once
    assert [e.pid for e in ProcessLedger(path).entries()] == [me]
