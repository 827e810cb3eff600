"""Every fault against a real child process: the built-in simulated agent (``--speed 0``).

Each case checks the stream's terminal outcome, that the log is intact and gap-free, and that the session
takes another turn afterwards. The autouse fixture checks that no process is left behind.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.runtime.conftest import (
    SIM,
    assert_gap_free,
    config,
    ended,
    process_group,
    run_turn,
    stream_entries,
)
from turnstile.engine.fold import SessionFold
from turnstile.engine.log import (
    CliDecodeError,
    CliOversized,
    InterruptEscalated,
    ProcessExited,
    ProcessSpawned,
    Stderr,
    StreamEnded,
    Timeout,
)
from turnstile.engine.runtime import AgentConfig, open_runtime
from turnstile.engine.stores.file import FileLogStore

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("directive", "outcome", "check"),
    [
        ("crash=mid", "failed", {"exit_status": 1}),
        ("kill=mid", "failed", {"exit_status": -9}),
        ("exit0", "failed", {"exit_status": 0}),
        ("truncate", "failed", {"kind": CliDecodeError}),
        ("garbage", "completed", {"kind": CliDecodeError}),
        ("nonutf8", "completed", {"kind": CliDecodeError}),
        ("oversized=20000", "completed", {"kind": CliOversized}),
        ("stderr_flood=500", "completed", {"kind": Stderr}),
        ("api_error=500 retries=2", "failed", {"reason": "500"}),
        ("tools=2 tool_s=0.01", "completed", {"tool_calls": 2}),
    ],
)
async def test_fault_gives_the_right_outcome_and_the_session_goes_on(
    directive: str, outcome: str, check: dict[str, Any]
) -> None:
    async with open_runtime(config(pool_size=1, max_line=4096)) as rt:
        info = await rt.create_session(SIM)
        await run_turn(rt, info.id, "warm up")
        _, entries = await run_turn(rt, info.id, f"[[sim {directive}]] go")
        end = ended(entries)
        assert end.outcome == outcome, end
        if "exit_status" in check:
            assert end.exit_status == check["exit_status"], end
            exits = [e for e in entries if isinstance(e, ProcessExited)]
            assert exits and not exits[0].expected
        if "reason" in check:
            assert check["reason"] in end.reason
        if "tool_calls" in check:
            assert end.timing is not None and end.timing.tool_calls == check["tool_calls"]
        _, entries = await run_turn(rt, info.id, "and again")
        assert ended(entries).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        if "kind" in check:
            # (stderr is read by its own task: by the next turn's end it is surely in)
            assert any(isinstance(e, check["kind"]) for e in log), [type(e).__name__ for e in log]


async def test_crash_reason_carries_exit_status_and_stderr() -> None:
    async with open_runtime(config(pool_size=0)) as rt:
        info = await rt.create_session(SIM)
        await run_turn(rt, info.id, "first")
        _, entries = await run_turn(rt, info.id, "[[sim crash=mid]]")
        end = ended(entries)
        assert end.outcome == "failed" and end.exit_status == 1
        assert "status 1" in end.reason
        exited = next(e for e in entries if isinstance(e, ProcessExited))
        assert exited.stderr_tail, exited
        assert exited.stderr_tail[-1] in end.reason
        # the next turn resumes the CLI's conversation
        _, entries = await run_turn(rt, info.id, "after")
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert spawned[-1].resume == rt.session(info.id).fold.cli_session_id is not None


async def test_interrupt_honoured_by_the_agent() -> None:
    async with open_runtime(config(pool_size=1)) as rt:
        info = await rt.create_session(SIM)
        stream = await rt.start_turn(info.id, "[[sim hang=mid tokens=10]]")
        with trio.fail_after(20):
            async with rt.subscribe(info.id, stream=stream) as sub:
                async for batch in sub:
                    if any(b"text_delta" in r.data for r in batch):
                        await rt.interrupt(info.id, stream)
        entries = await stream_entries(rt, info.id, stream)
        end = ended(entries)
        assert end.outcome == "cancelled"
        assert not any(isinstance(e, InterruptEscalated) for e in entries)
        pid = rt.session(info.id).pid
        _, entries = await run_turn(rt, info.id, "next")
        assert ended(entries).outcome == "completed"
        assert rt.session(info.id).pid == pid


async def test_interrupt_ignored_is_escalated_and_the_process_replaced() -> None:
    agent = AgentConfig(extra_args=("--speed", "0", "--ignore-interrupt"))
    async with open_runtime(config(pool_size=1, interrupt_grace_s=0.5)) as rt:
        info = await rt.create_session(agent)
        stream = await rt.start_turn(info.id, "[[sim hang=first]]")
        await trio.sleep(0.3)
        await rt.interrupt(info.id, stream)
        with trio.fail_after(20):
            entries = await stream_entries(rt, info.id, stream)
        end = ended(entries)
        assert end.outcome == "cancelled"
        assert any(isinstance(e, InterruptEscalated) and e.signal == "SIGTERM" for e in entries)
        with trio.fail_after(20):
            _, after = await run_turn(rt, info.id, "next")
        assert ended(after).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        exited = [e for e in log if isinstance(e, ProcessExited)]
        assert exited[0].expected and exited[0].returncode in (143, -15)


async def test_idle_timeout_on_a_hung_agent() -> None:
    async with open_runtime(config(pool_size=1, idle_timeout_s=0.5)) as rt:
        info = await rt.create_session(SIM)
        with trio.fail_after(20):
            _, entries = await run_turn(rt, info.id, "[[sim hang=mid]]")
        assert ended(entries).outcome == "timed_out"
        assert [e.which for e in entries if isinstance(e, Timeout)] == ["idle"]
        with trio.fail_after(20):
            _, entries = await run_turn(rt, info.id, "next")
        assert ended(entries).outcome == "completed"


async def test_first_event_timeout_on_a_slow_starting_agent() -> None:
    agent = AgentConfig(extra_args=("--speed", "0", "--slow-start", "30"))
    async with open_runtime(config(first_event_timeout_s=0.5)) as rt:
        info = await rt.create_session(agent)
        with trio.fail_after(20):
            _, entries = await run_turn(rt, info.id, "hello")
        assert ended(entries).outcome == "timed_out"
        assert [e.which for e in entries if isinstance(e, Timeout)] == ["first_event"]


async def test_lost_resume_is_reported_and_the_next_turn_starts_afresh() -> None:
    async with open_runtime(config(pool_size=0)) as rt:
        info = await rt.create_session(SIM)
        await run_turn(rt, info.id, "first")
        rt.session(info.id).fold.cli_session_id = "lost-abc"
        _, entries = await run_turn(rt, info.id, "second")
        end = ended(entries)
        assert end.outcome == "failed"
        assert "could not resume" in end.reason and "lost-abc" in end.reason
        _, entries = await run_turn(rt, info.id, "third")
        assert ended(entries).outcome == "completed"


async def test_one_shot_mode_spawns_a_process_per_turn_with_resume() -> None:
    async with open_runtime(config(pool_size=0)) as rt:
        info = await rt.create_session(SIM)
        for prompt in ("one", "two", "three"):
            _, entries = await run_turn(rt, info.id, prompt)
            assert ended(entries).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        spawned = [e for e in log if isinstance(e, ProcessSpawned)]
        exited = [e for e in log if isinstance(e, ProcessExited)]
        assert len(spawned) == 3
        assert spawned[0].resume is None
        assert spawned[1].resume == spawned[2].resume is not None
        assert len(exited) >= 2 and all(e.expected and e.returncode == 0 for e in exited)
        # A planned exit is not a crash: between one-shot turns the session is dormant.
        with trio.fail_after(10):
            async with rt.subscribe(info.id) as sub:
                exits = 0
                async for batch in sub:
                    exits += sum(isinstance(r.entry, ProcessExited) for r in batch)
                    if exits == 3:
                        break
        assert rt.session(info.id).state == "dormant"
        refold = SessionFold(info.id)
        dests = [
            c.dest for e in assert_gap_free(rt, info.id) for c in refold.apply(e) if c.machine == "session"
        ]
        assert "dormant" in dests and "crashed" not in dests


def _script_with_grandchild(tmp_path: Path) -> str:
    """An agent wrapper that leaves a background ``sleep`` in its process group, then runs the sim."""
    script = tmp_path / "agent-with-tool.sh"
    root = Path(__file__).resolve().parents[2]
    script.write_text(
        f'#!/bin/sh\nsleep 300 &\nPYTHONPATH="{root}" exec "{sys.executable}" -m turnstile.engine.agents.sim "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_the_whole_process_group_dies_with_the_session(tmp_path: Path) -> None:
    agent = AgentConfig(binary=_script_with_grandchild(tmp_path), extra_args=("--speed", "0"))
    async with open_runtime(config(pool_size=1)) as rt:
        info = await rt.create_session(agent)
        await run_turn(rt, info.id, "hello")
        pid = rt.session(info.id).pid
        assert pid is not None
        group = process_group(pid)
        assert len(group) == 2, group  # the agent and its background tool
        await rt.stop_session(info.id)
        # SIGKILL is delivered asynchronously: give the kernel a moment to finish the group off.
        for _ in range(250):
            if not process_group(pid):
                break
            await trio.sleep(0.02)
        assert process_group(pid) == []


async def test_a_killed_agent_leaves_no_grandchild(tmp_path: Path) -> None:
    agent = AgentConfig(binary=_script_with_grandchild(tmp_path), extra_args=("--speed", "0"))
    async with open_runtime(config(pool_size=1)) as rt:
        info = await rt.create_session(agent)
        _, entries = await run_turn(rt, info.id, "[[sim kill=mid]]")
        assert ended(entries).outcome == "failed"
        _, entries = await run_turn(rt, info.id, "again")
        assert ended(entries).outcome == "completed"


async def test_external_sigkill_of_the_process_group_mid_turn() -> None:
    async with open_runtime(config(pool_size=1)) as rt:
        info = await rt.create_session(SIM)
        stream = await rt.start_turn(info.id, "[[sim hang=mid]]")
        with trio.fail_after(20):
            async with rt.subscribe(info.id, stream=stream) as sub:
                async for batch in sub:
                    if any(b"text_delta" in r.data for r in batch):
                        pid = rt.session(info.id).pid
                        assert pid is not None
                        os.killpg(pid, signal.SIGKILL)
        end = ended(await stream_entries(rt, info.id, stream))
        assert end.outcome == "failed" and end.exit_status == -9
        _, entries = await run_turn(rt, info.id, "next")
        assert ended(entries).outcome == "completed"


async def test_cancelling_the_root_mid_turn_leaves_the_terminal_entry_on_disk(tmp_path: Path) -> None:
    with trio.CancelScope() as outer:
        async with open_runtime(config(data_dir=str(tmp_path), pool_size=1)) as rt:
            info = await rt.create_session(SIM)
            stream = await rt.start_turn(info.id, "[[sim hang=mid]]")
            async with rt.subscribe(info.id, stream=stream) as sub:
                async for batch in sub:
                    if any(b"text_delta" in r.data for r in batch):
                        outer.cancel()
    assert outer.cancelled_caught
    with FileLogStore.open(tmp_path / "sessions" / f"{info.id}.ndjson") as store:
        entries = [r.entry for r in store.read(0)]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    mine = [e for e in entries if e.stream == stream]
    assert isinstance(mine[-1], StreamEnded) and mine[-1].outcome == "cancelled"
    assert any(isinstance(e, ProcessExited) for e in entries)
