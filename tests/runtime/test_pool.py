"""The hot pool: warm checkout, replenishment, keys, cold fallback, degraded states, no spawn storms."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from tests.runtime.conftest import SIM, assert_gap_free, config, ended, run_turn
from tests.scripted import ScriptedLauncher
from turnstile.engine.log import (
    AnyEntry,
    CliLine,
    PoolCheckout,
    PoolDegraded,
    PoolProcessLost,
    PoolSpawnFailed,
    ProcessSpawned,
    view_of,
)
from turnstile.engine.protocol import ControlResponse
from turnstile.engine.replay import replay
from turnstile.engine.runtime import AgentConfig, open_runtime
from turnstile.engine.runtime.priming import PRIME_REQUEST_PREFIX
from turnstile.engine.transcript import Item


async def _until(predicate: Callable[[], bool]) -> None:
    # Polling is fine in a test: the pool's state is a fold, with no event to wait on from outside.
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


@pytest.mark.slow
async def test_warm_processes_are_checked_out_and_replenished() -> None:
    async with open_runtime(config(pool_size=2)) as rt:
        await _until(lambda: rt.readiness().pool.state == "ready")
        assert rt.readiness().pool.ready == 2
        info = await rt.create_session(SIM)
        _, entries = await run_turn(rt, info.id, "hello")
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert spawned[0].warm
        assert any(isinstance(r.entry, PoolCheckout) for r in rt.pool.journal.read(0, 1000))
        await _until(lambda: rt.readiness().pool.ready == 2)  # replenished
        metrics = rt.metrics()
        assert metrics.pool_spawns >= 3
        assert metrics.streams_by_outcome == {"completed": 1}


@pytest.mark.slow
async def test_a_warm_process_serves_only_its_own_spawn_config() -> None:
    async with open_runtime(config(pool_size=1)) as rt:
        await _until(lambda: rt.readiness().pool.state == "ready")
        other = AgentConfig(extra_args=("--speed", "0"), model="another-model")
        info = await rt.create_session(other)
        await run_turn(rt, info.id, "hi")
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert not spawned[0].warm  # the default's warm process was not used
        assert "another-model" in spawned[0].argv


async def test_session_creation_never_waits_for_a_slow_spawn() -> None:
    launcher = ScriptedLauncher()
    launcher.spawn_delay = 30.0
    async with open_runtime(config(pool_size=2), launcher=launcher) as rt:
        with trio.fail_after(1.0):
            info = await rt.create_session()
            ready = rt.readiness()
        assert ready.ready and ready.pool.state == "warming"
        assert info.state == "starting"
        # a turn on a cold pool gets its own (cold) process, not a warm one
        launcher.spawn_delay = 0.0
        with trio.fail_after(5.0):
            _, entries = await run_turn(rt, info.id, "first")
        assert ended(entries).outcome == "completed"


@pytest.mark.slow
async def test_slow_starting_real_agent_does_not_delay_creation() -> None:
    slow = AgentConfig(extra_args=("--speed", "0", "--slow-start", "0.5"))
    async with open_runtime(config(pool_size=1, default_agent=slow)) as rt:
        with trio.fail_after(1.0):
            info = await rt.create_session()
            assert rt.readiness().ready
        with trio.fail_after(20):
            _, entries = await run_turn(rt, info.id, "hi")
        assert ended(entries).outcome == "completed"


async def test_missing_binary_degrades_the_pool_without_a_spawn_storm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    missing = AgentConfig(agent="claude", binary="/nonexistent/claude")
    cfg = config(pool_size=2, default_agent=missing, pool_backoff_max_s=30.0)
    async with open_runtime(cfg) as rt:
        await trio.sleep(1.0)
        ready = rt.readiness()
        assert ready.pool.state == "degraded"
        assert ready.pool.reason is not None and "not found" in ready.pool.reason
        assert not ready.ready and any("not found" in r for r in ready.reasons)
        first = rt.pool.spawns
        await trio.sleep(60.0)
        # one retry per pool_backoff_max_s for each missing slot, not a storm
        assert rt.pool.spawns - first <= 2 * (60 // 30 + 1)
        # a session still works — it just fails its turns with the reason
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "x")
        end = ended(entries)
        assert end.outcome == "failed" and "not found" in end.reason


async def test_crashing_warm_processes_back_off_then_degrade(autojump_clock: trio.testing.MockClock) -> None:
    launcher = ScriptedLauncher()
    crashing = AgentConfig(extra_args=("--crash-at-start",))
    cfg = config(
        pool_size=1,
        default_agent=crashing,
        pool_restart_budget=3,
        pool_backoff_base_s=0.5,
        pool_backoff_max_s=20.0,
        pool_ready_after_s=0.2,
    )
    async with open_runtime(cfg, launcher=launcher) as rt:
        await trio.sleep(10.0)
        status = rt.readiness().pool
        assert status.state == "degraded"
        assert status.reason is not None and "failures within" in status.reason
        spawned = rt.pool.spawns
        assert spawned <= 6  # 0, 0.5, 1.5, 3.5 s, then every 20 s
        await trio.sleep(100.0)
        assert rt.pool.spawns - spawned <= 100 // 20 + 1
        assert any(isinstance(r.entry, PoolDegraded) for r in rt.pool.journal.read(0, 1000))


async def test_pool_recovers_from_degraded_when_spawns_work_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    launcher = ScriptedLauncher()
    launcher.missing = "agent binary not found (test)"
    async with open_runtime(config(pool_size=1, pool_backoff_max_s=5.0), launcher=launcher) as rt:
        await trio.sleep(1.0)
        assert rt.readiness().pool.state == "degraded"
        launcher.missing = None
        await trio.sleep(10.0)
        assert rt.readiness().pool.state == "ready"
        assert rt.readiness().pool.reason is None


async def test_warm_processes_are_recycled_after_max_age(autojump_clock: trio.testing.MockClock) -> None:
    launcher = ScriptedLauncher()
    async with open_runtime(config(pool_size=1, pool_max_age_s=60.0), launcher=launcher) as rt:
        await trio.sleep(200.0)
        lost = [r.entry for r in rt.pool.journal.read(0, 1000) if isinstance(r.entry, PoolProcessLost)]
        assert len(lost) >= 2 and all("recycled" in e.reason for e in lost)
        assert rt.readiness().pool.ready == 1


async def test_sessions_recycle_their_process_after_max_turns(autojump_clock: trio.testing.MockClock) -> None:
    launcher = ScriptedLauncher()
    async with open_runtime(
        config(pool_size=1, pool_max_turns=2, pool_max_turns_jitter=0.0), launcher=launcher
    ) as rt:
        await trio.sleep(1.0)  # let the pool warm up
        info = await rt.create_session()
        for i in range(5):
            _, entries = await run_turn(rt, info.id, f"turn {i}")
            assert ended(entries).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        spawned = [e for e in log if isinstance(e, ProcessSpawned)]
        assert len(spawned) == 3
        assert spawned[0].warm and all(s.resume for s in spawned[1:])


async def test_pool_size_zero_never_spawns_ahead(scripted: ScriptedLauncher) -> None:
    async with open_runtime(config(pool_size=0), launcher=scripted) as rt:
        assert rt.readiness().pool.state == "ready"
        info = await rt.create_session()
        await trio.sleep(0.05)
        assert scripted.spawned == []
        _, entries = await run_turn(rt, info.id, "hi")
        assert ended(entries).outcome == "completed"
        assert len(scripted.spawned) == 1


async def test_pool_processes_are_closed_on_shutdown(scripted: ScriptedLauncher) -> None:
    async with open_runtime(config(pool_size=3), launcher=scripted) as rt:
        await _until(lambda: rt.readiness().pool.ready == 3)
    assert scripted.spawned and all(p.returncode is not None for p in scripted.spawned)
    assert rt.pool.status().state == "stopped"


async def test_another_config_is_kept_warm_only_once_asked_for_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    launcher = ScriptedLauncher()
    other = AgentConfig(model="other")
    async with open_runtime(config(pool_size=1), launcher=launcher) as rt:
        await trio.sleep(1.0)
        assert rt.readiness().pool.keys == 1
        spawns = rt.pool.spawns
        first = await rt.create_session(other)  # a one-off: no warm-up for it
        await trio.sleep(1.0)
        assert rt.pool.spawns == spawns and rt.readiness().pool.keys == 1
        second = await rt.create_session(other)  # asked again: now kept warm
        await trio.sleep(1.0)
        assert rt.readiness().pool.keys == 2
        third = await rt.create_session(other)
        await trio.sleep(1.0)
        warm = {
            s.id: [e.warm for e in assert_gap_free(rt, s.id) if isinstance(e, ProcessSpawned)]
            for s in (first, second, third)
        }
        assert warm == {first.id: [False], second.id: [False], third.id: [True]}


# --- priming: the start-up handshake a warm process answers before it is handed out ---------------------


def _prime_answers(entries: list[AnyEntry]) -> list[tuple[int, str, str]]:
    """(index, request id, subtype) of the priming answers in a session log."""
    out = []
    for i, e in enumerate(entries):
        if isinstance(e, CliLine) and e.type == "control_response":
            view = view_of(e)
            assert isinstance(view, ControlResponse)
            rid = view.response.request_id or ""
            if rid.startswith(PRIME_REQUEST_PREFIX):
                out.append((i, rid, view.response.subtype))
    return out


@pytest.mark.slow
async def test_a_warm_process_is_primed_and_its_answers_open_the_session_log() -> None:
    async with open_runtime(config(pool_size=1)) as rt:
        await _until(lambda: rt.readiness().pool.state == "ready")
        info = await rt.create_session(SIM)
        stream, entries = await run_turn(rt, info.id, "hello")
        assert ended(entries).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        spawned = next(i for i, e in enumerate(log) if isinstance(e, ProcessSpawned))
        assert isinstance(log[spawned], ProcessSpawned) and log[spawned].warm
        answers = _prime_answers(log)
        # The simulator knows `initialize` and, like CLI 2.1.327 for requests it lacks, answers the other
        # with an error: both count as answered.
        assert [(rid, sub) for _, rid, sub in answers] == [
            (f"{PRIME_REQUEST_PREFIX}initialize", "success"),
            (f"{PRIME_REQUEST_PREFIX}context", "error"),
        ]
        assert [i for i, _, _ in answers] == [spawned + 1, spawned + 2]  # right after process.spawned
        assert all(log[i].stream is None for i, _, _ in answers)  # no turn's lines (nor its first event)
        turn_lines = [e for e in log if isinstance(e, CliLine) and e.stream == stream]
        assert turn_lines[0].type == "system"  # the turn's first line is its own system/init
        report = replay([Item(n, e, None) for n, e in enumerate(log, 1)])
        assert report.violations == [] and [s.outcome for s in report.streams] == ["completed"]


async def test_a_process_that_never_answers_priming_is_never_handed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    launcher = ScriptedLauncher()
    mute = AgentConfig(extra_args=("--ignore-control",))
    cfg = config(pool_size=1, default_agent=mute, pool_prime_timeout_s=5.0, pool_backoff_max_s=20.0)
    async with open_runtime(cfg, launcher=launcher) as rt:
        await trio.sleep(30.0)
        pool = rt.readiness().pool
        assert pool.ready == 0 and rt.readiness().ready  # the server is ready; only the pool is not
        failed = [r.entry for r in rt.pool.journal.read(0, 1000) if isinstance(r.entry, PoolSpawnFailed)]
        assert failed and all(
            "did not answer the pool's priming requests within 5 s" in f.error for f in failed
        )
        assert sum(p.returncode is not None for p in launcher.spawned) >= len(failed)  # retired, not kept
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "[[sim tokens=1]] hi")
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert not spawned[0].warm  # a cold process of its own


async def test_without_priming_a_process_is_ready_by_age_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    launcher = ScriptedLauncher()
    mute = AgentConfig(extra_args=("--ignore-control",))
    async with open_runtime(
        config(pool_size=1, default_agent=mute, pool_prime=False), launcher=launcher
    ) as rt:
        await trio.sleep(1.0)
        assert rt.readiness().pool.ready == 1
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "hi")
        assert ended(entries).outcome == "completed"
        log = assert_gap_free(rt, info.id)
        assert next(e for e in log if isinstance(e, ProcessSpawned)).warm
        assert _prime_answers(log) == []
