"""Sessions over the in-memory scripted agent: turns, queueing, interrupts, timeouts, crashes, stop.

These need no real process; timeouts run on trio's autojump clock (minutes of trio time in milliseconds).
"""

from __future__ import annotations

import signal

import pytest
import trio
import trio.testing

from tests.runtime.conftest import assert_gap_free, config, ended, kinds, run_turn, stream_entries
from tests.scripted import ScriptedLauncher
from turnstile.engine.errors import QueueFull, SessionNotFound, SessionStopped, StreamNotFound
from turnstile.engine.log import (
    InterruptEscalated,
    ProcessExited,
    ProcessSpawned,
    Stderr,
    StreamEnded,
    Timeout,
    TurnRequested,
)
from turnstile.engine.log import (
    SessionStopped as SessionStoppedEntry,
)
from turnstile.engine.runtime import AgentConfig, Runtime, open_runtime


async def test_plain_turn_completes_and_log_is_complete(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    stream, entries = await run_turn(scripted_rt, info.id, "hello")
    assert kinds(entries)[0] == "turn.requested"
    assert ended(entries).outcome == "completed"
    assert ended(entries).timing is not None
    log = assert_gap_free(scripted_rt, info.id)
    assert kinds(log)[0] == "session.created"
    turns = scripted_rt.session(info.id).info().turns
    assert [(t.id, t.outcome) for t in turns] == [(stream, "completed")]


async def test_turn_requested_is_logged_before_start_turn_returns(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    stream = await scripted_rt.start_turn(info.id, "hi")
    log = [r.entry for r in scripted_rt.session(info.id).journal.read(0, 100)]
    assert any(isinstance(e, TurnRequested) and e.stream == stream for e in log)
    await stream_entries(scripted_rt, info.id, stream)


async def test_turns_run_one_at_a_time_in_order_and_queue_is_bounded(scripted: ScriptedLauncher) -> None:
    async with open_runtime(config(max_queued_turns=2), launcher=scripted) as rt:
        info = await rt.create_session()
        first = await rt.start_turn(info.id, "[[sim ttft_ms=200]] one")
        second = await rt.start_turn(info.id, "two")
        third = await rt.start_turn(info.id, "three")
        with pytest.raises(QueueFull):
            await rt.start_turn(info.id, "four")
        results = [ended(await stream_entries(rt, info.id, s)) for s in (first, second, third)]
        assert [r.outcome for r in results] == ["completed"] * 3
        # one at a time: each stream ended before the next prompt was written
        log = assert_gap_free(rt, info.id)
        order = [(e.kind if hasattr(e, "kind") else type(e).__name__, e.stream) for e in log]  # type: ignore[attr-defined]
        assert results[0].seq < results[1].seq < results[2].seq
        written = [e for e in log if type(e).__name__ == "PromptWritten"]
        assert [w.stream for w in written] == [first, second, third]
        assert written[1].seq > results[0].seq and written[2].seq > results[1].seq, order


async def test_unknown_session_and_stream(scripted_rt: Runtime) -> None:
    with pytest.raises(SessionNotFound):
        await scripted_rt.start_turn("nope", "x")
    info = await scripted_rt.create_session()
    with pytest.raises(StreamNotFound):
        async with scripted_rt.subscribe(info.id, stream="t99"):
            pass
    with pytest.raises(StreamNotFound):
        await scripted_rt.interrupt(info.id, "t99")


async def test_interrupt_honoured_keeps_the_process(scripted: ScriptedLauncher) -> None:
    async with open_runtime(config(pool_size=1), launcher=scripted) as rt:
        info = await rt.create_session()
        stream = await rt.start_turn(info.id, "[[sim hang=first]]")
        async with rt.subscribe(info.id, stream=stream) as sub:
            async for batch in sub:
                if any(type(r.entry).__name__ == "CliLine" for r in batch):
                    await rt.interrupt(info.id, stream)
        end = ended(await stream_entries(rt, info.id, stream))
        assert end.outcome == "cancelled"
        pid = rt.session(info.id).pid
        _, entries = await run_turn(rt, info.id, "after")
        assert ended(entries).outcome == "completed"
        assert rt.session(info.id).pid == pid  # same process served the next turn
        assert_gap_free(rt, info.id)


async def test_interrupt_ignored_escalates_to_sigterm_and_replaces_process(
    autojump_clock: trio.testing.MockClock,
) -> None:
    launcher = ScriptedLauncher()
    async with open_runtime(config(pool_size=1), launcher=launcher) as rt:
        info = await rt.create_session(AgentConfig(extra_args=("--ignore-interrupt",)))
        stream = await rt.start_turn(info.id, "[[sim hang=first]]")
        await trio.sleep(0.1)
        await rt.interrupt(info.id, stream)
        entries = await stream_entries(rt, info.id, stream)
        end = ended(entries)
        assert end.outcome == "cancelled"
        assert any(isinstance(e, InterruptEscalated) for e in entries)
        log = [r.entry for r in rt.session(info.id).journal.read(0, 1000)]
        pid = next(e.pid for e in log if isinstance(e, ProcessSpawned))
        first = next(p for p in launcher.spawned if p.pid == pid)
        assert signal.SIGTERM in first.signals
        _, entries = await run_turn(rt, info.id, "again")
        assert ended(entries).outcome == "completed"
        assert len(launcher.spawned) >= 2
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert spawned[-1].resume is not None  # the replacement resumes the conversation


async def test_interrupt_of_queued_turn_cancels_it_at_once(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    running = await scripted_rt.start_turn(info.id, "[[sim ttft_ms=200]]")
    queued = await scripted_rt.start_turn(info.id, "later")
    await scripted_rt.interrupt(info.id, queued)
    end = ended(await stream_entries(scripted_rt, info.id, queued))
    assert end.outcome == "cancelled"
    assert ended(await stream_entries(scripted_rt, info.id, running)).outcome == "completed"
    # interrupting an ended stream is a no-op
    await scripted_rt.interrupt(info.id, queued)
    assert_gap_free(scripted_rt, info.id)


@pytest.mark.parametrize(
    ("prompt", "overrides", "which"),
    [
        ("[[sim hang=start]]", {"first_event_timeout_s": 5.0}, "first_event"),
        ("[[sim hang=first]]", {"idle_timeout_s": 7.0}, "idle"),
        ("[[sim tokens=100 token_ms=1000]]", {"turn_timeout_s": 20.0, "idle_timeout_s": 5.0}, "turn"),
    ],
)
async def test_layered_timeouts_end_stream_timed_out_and_replace_process(
    autojump_clock: trio.testing.MockClock, prompt: str, overrides: dict[str, float], which: str
) -> None:
    launcher = ScriptedLauncher()
    async with open_runtime(config(pool_size=1, **overrides), launcher=launcher) as rt:
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, prompt, within=600)
        end = ended(entries)
        assert end.outcome == "timed_out", end
        timeouts = [e for e in entries if isinstance(e, Timeout)]
        assert [t.which for t in timeouts] == [which]
        _, entries = await run_turn(rt, info.id, "next", within=600)
        assert ended(entries).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        exits = [e for e in log if isinstance(e, ProcessExited)]
        assert exits and exits[0].expected and "timeout" in exits[0].reason


async def test_spawn_timeout(autojump_clock: trio.testing.MockClock) -> None:
    launcher = ScriptedLauncher()
    launcher.spawn_delay = 100
    async with open_runtime(config(spawn_timeout_s=3.0), launcher=launcher) as rt:
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "x", within=600)
        assert ended(entries).outcome == "timed_out"
        assert [e.which for e in entries if isinstance(e, Timeout)] == ["spawn"]


async def test_crash_mid_turn_fails_with_exit_status_and_stderr_then_resumes(
    scripted: ScriptedLauncher,
) -> None:
    async with open_runtime(config(pool_size=1), launcher=scripted) as rt:
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "first")
        _, entries = await run_turn(rt, info.id, "[[sim crash=mid]]")
        end = ended(entries)
        assert end.outcome == "failed"
        assert end.exit_status == 1
        assert "crashed mid-turn" in end.reason
        exits = [e for e in entries if isinstance(e, ProcessExited)]
        assert exits[0].returncode == 1 and not exits[0].expected
        assert any("crashed mid-turn" in line for line in exits[0].stderr_tail)
        _, entries = await run_turn(rt, info.id, "after the crash")
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        cli = rt.session(info.id).fold.cli_session_id
        assert spawned[-1].resume == cli and not spawned[-1].warm


async def test_failed_resume_is_reported_plainly(scripted: ScriptedLauncher) -> None:
    async with open_runtime(config(pool_size=0), launcher=scripted) as rt:
        info = await rt.create_session()
        await run_turn(rt, info.id, "first")
        session = rt.session(info.id)
        session.fold.cli_session_id = "lost-conversation"
        _, entries = await run_turn(rt, info.id, "second")
        end = ended(entries)
        assert end.outcome == "failed"
        assert "could not resume" in end.reason and "lost-conversation" in end.reason
        assert session.info().resume_failed == "lost-conversation"
        _, entries = await run_turn(rt, info.id, "third")
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert spawned[-1].resume is None


async def test_error_result_fails_the_stream(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    _, entries = await run_turn(scripted_rt, info.id, "[[sim api_error=500]]")
    end = ended(entries)
    assert end.outcome == "failed" and "500" in end.reason


async def test_stderr_is_logged_and_rate_limited(scripted: ScriptedLauncher) -> None:
    async with open_runtime(config(stderr_burst=5, stderr_lines_per_s=0.001), launcher=scripted) as rt:
        info = await rt.create_session()
        await run_turn(rt, info.id, "[[sim stderr_flood=50]]")
        await rt.stop_session(info.id)
        log = assert_gap_free(rt, info.id)
        err = [e for e in log if isinstance(e, Stderr)]
        kept = [e for e in err if e.text]
        assert len(kept) == 5
        assert sum(e.dropped for e in err) == 45


async def test_stop_session_cancels_open_streams_and_refuses_turns(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    running = await scripted_rt.start_turn(info.id, "[[sim hang=first]]")
    queued = await scripted_rt.start_turn(info.id, "later")
    await trio.sleep(0.01)
    await scripted_rt.stop_session(info.id)
    for stream in (running, queued):
        end = ended(await stream_entries(scripted_rt, info.id, stream))
        assert end.outcome == "cancelled" and end.reason == "session stopped"
    with pytest.raises(SessionStopped):
        await scripted_rt.start_turn(info.id, "x")
    log = assert_gap_free(scripted_rt, info.id)
    assert isinstance(log[-1], SessionStoppedEntry)
    assert scripted_rt.session(info.id).state == "stopped"
    # a whole-session subscription of a stopped session replays the log and ends
    async with scripted_rt.subscribe(info.id) as sub:
        seen = [r.entry.seq async for batch in sub for r in batch]
    assert seen == list(range(1, len(log) + 1))


async def test_cancelling_the_root_mid_turn_still_writes_the_terminal_entry(
    scripted: ScriptedLauncher,
) -> None:
    with trio.CancelScope() as outer:
        async with open_runtime(config(pool_size=1), launcher=scripted) as rt:
            info = await rt.create_session()
            stream = await rt.start_turn(info.id, "[[sim hang=first]]")
            await trio.sleep(0.05)
            outer.cancel()
            await trio.sleep_forever()
    assert outer.cancelled_caught
    entries = [r.entry for r in rt.session(info.id).journal.read(0, 1000)]
    mine = [e for e in entries if e.stream == stream]
    assert isinstance(mine[-1], StreamEnded) and mine[-1].outcome == "cancelled"
    assert mine[-1].reason == "server shutting down"
    assert any(isinstance(e, ProcessExited) for e in entries)
    assert scripted.spawned[0].returncode is not None


async def test_start_turn_after_shutdown_raises() -> None:
    from turnstile.engine.errors import RuntimeClosed

    async with open_runtime(config(), launcher=ScriptedLauncher()) as rt:
        info = await rt.create_session()
    with pytest.raises(RuntimeClosed):
        await rt.start_turn(info.id, "x")
