"""The runtime driving the REAL Claude Code CLI against the fake model API (``tests/fakeapi.py``).

A plain turn, a tool turn, an interrupt mid-stream, a hung API (idle timeout), an API error and a killed
process — each must end with the right outcome, a gap-free log, and a session that takes the next turn.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tests.fakeapi import ApiError, FakeModelAPI, Hang, Text, ToolUse
from tests.realcli import claude_binary_or_skip, offline_cli_env
from tests.runtime.conftest import assert_gap_free, config, ended, run_turn, stream_entries
from turnstile.engine.log import (
    CliLine,
    ProcessExited,
    ProcessSpawned,
    StreamStalled,
    Timeout,
    view_of,
)
from turnstile.engine.protocol import ApiRetry, ControlResponse
from turnstile.engine.runtime import AgentConfig, Runtime, open_runtime
from turnstile.engine.runtime.priming import PRIME_REQUEST_PREFIX

pytestmark = [pytest.mark.realcli, pytest.mark.slow]

TURN_S = 60  # generous: the CLI takes ~0.5 s per cold start, far less hot


@pytest.fixture
def api() -> Iterator[FakeModelAPI]:
    with FakeModelAPI() as fake:
        yield fake


@pytest.fixture
def claude(api: FakeModelAPI, tmp_path: Path) -> AgentConfig:
    binary = claude_binary_or_skip()
    workdir = tmp_path / "wd"
    workdir.mkdir()
    return AgentConfig(
        agent="claude",
        binary=binary,
        cwd=str(workdir),
        allowed_tools=("Bash",),
        env=offline_cli_env(api, tmp_path),
        inherit_env=False,
    )


@pytest.fixture
async def rt(claude: AgentConfig) -> AsyncIterator[Runtime]:
    async with open_runtime(config(pool_size=1, default_agent=claude, interrupt_grace_s=3.0)) as runtime:
        yield runtime


async def test_plain_turn_then_a_hot_second_turn(rt: Runtime, api: FakeModelAPI) -> None:
    api.push(Text("Hello from the fake model.", chunks=4), Text("Second answer."))
    info = await rt.create_session()
    _, entries = await run_turn(rt, info.id, "say hello", within=TURN_S)
    end = ended(entries)
    assert end.outcome == "completed", end
    assert any(isinstance(e, CliLine) and e.type == "stream_event" for e in entries)
    pid = rt.session(info.id).pid
    _, entries = await run_turn(rt, info.id, "again", within=TURN_S)
    assert ended(entries).outcome == "completed"
    assert rt.session(info.id).pid == pid  # the same hot process
    log = assert_gap_free(rt, info.id)
    assert rt.session(info.id).fold.cli_session_id
    assert sum(isinstance(e, ProcessSpawned) for e in log) == 1


async def test_tool_turn(rt: Runtime, api: FakeModelAPI) -> None:
    api.push(ToolUse(input={"command": "echo tool-ran"}), Text("The tool said tool-ran."))
    info = await rt.create_session()
    _, entries = await run_turn(rt, info.id, "run a tool", within=TURN_S)
    end = ended(entries)
    assert end.outcome == "completed", end
    assert end.timing is not None and end.timing.tool_calls == 1
    assert any(isinstance(e, CliLine) and b"tool-ran" in bytes(e.msg) for e in entries)


async def test_interrupt_mid_stream(rt: Runtime, api: FakeModelAPI) -> None:
    api.push(Text("word " * 60, chunks=60, token_delay=0.1), Text("after the interrupt"))
    info = await rt.create_session()
    stream = await rt.start_turn(info.id, "talk slowly")
    with trio.fail_after(TURN_S):
        async with rt.subscribe(info.id, stream=stream) as sub:
            async for batch in sub:
                if any(b"text_delta" in r.data for r in batch):
                    await rt.interrupt(info.id, stream)
    end = ended(await stream_entries(rt, info.id, stream))
    assert end.outcome == "cancelled", end
    pid = rt.session(info.id).pid
    _, entries = await run_turn(rt, info.id, "next", within=TURN_S)
    assert ended(entries).outcome == "completed"
    assert rt.session(info.id).pid == pid  # the CLI honoured the interrupt: no respawn
    assert_gap_free(rt, info.id)


async def test_hung_api_times_out_and_the_session_resumes(claude: AgentConfig, api: FakeModelAPI) -> None:
    api.push(Hang(), Text("back again"))
    async with open_runtime(config(pool_size=1, default_agent=claude, idle_timeout_s=3.0)) as rt:
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "hang please", within=TURN_S)
        end = ended(entries)
        assert end.outcome == "timed_out", end
        assert [e.which for e in entries if isinstance(e, Timeout)] == ["idle"]
        _, entries = await run_turn(rt, info.id, "are you back?", within=TURN_S)
        assert ended(entries).outcome == "completed"
        spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
        assert len(spawned) == 2 and spawned[1].resume == rt.session(info.id).fold.cli_session_id


async def test_api_error_fails_the_turn(rt: Runtime, api: FakeModelAPI) -> None:
    # x-should-retry: false makes the CLI fail at once instead of retrying for minutes.
    api.push(ApiError(status=500, message="fake overload", should_retry=False), Text("fine now"))
    info = await rt.create_session()
    _, entries = await run_turn(rt, info.id, "cause an error", within=TURN_S)
    end = ended(entries)
    assert end.outcome == "failed", end
    assert "fake overload" in end.reason or "500" in end.reason, end
    _, entries = await run_turn(rt, info.id, "and now?", within=TURN_S)
    assert ended(entries).outcome == "completed"


async def test_killed_process_fails_the_turn_and_the_next_turn_resumes(
    rt: Runtime, api: FakeModelAPI
) -> None:
    api.push(Text("first"), Text("word " * 100, chunks=100, token_delay=0.1), Text("resumed"))
    info = await rt.create_session()
    await run_turn(rt, info.id, "first", within=TURN_S)
    stream = await rt.start_turn(info.id, "talk slowly")
    with trio.fail_after(TURN_S):
        async with rt.subscribe(info.id, stream=stream) as sub:
            async for batch in sub:
                if any(b"text_delta" in r.data for r in batch):
                    pid = rt.session(info.id).pid
                    assert pid is not None
                    os.killpg(pid, signal.SIGKILL)
    end = ended(await stream_entries(rt, info.id, stream))
    assert end.outcome == "failed" and end.exit_status == -signal.SIGKILL, end
    _, entries = await run_turn(rt, info.id, "still there?", within=TURN_S)
    assert ended(entries).outcome == "completed"
    spawned = [e for e in assert_gap_free(rt, info.id) if isinstance(e, ProcessSpawned)]
    assert spawned[-1].resume == rt.session(info.id).fold.cli_session_id is not None


async def test_a_warm_real_cli_is_primed_before_it_is_handed_out(rt: Runtime, api: FakeModelAPI) -> None:
    """CLI 2.1.327 answers both priming requests with success; the turn after them is an ordinary one."""
    with trio.fail_after(TURN_S):
        while rt.readiness().pool.ready < 1:  # noqa: ASYNC110  (the pool's state is polled, as in test_pool)
            await trio.sleep(0.05)
    api.push(Text("Primed and ready."))
    info = await rt.create_session()
    _, entries = await run_turn(rt, info.id, "hello", within=TURN_S)
    assert ended(entries).outcome == "completed"
    log = assert_gap_free(rt, info.id)
    spawned = next(i for i, e in enumerate(log) if isinstance(e, ProcessSpawned))
    assert isinstance(log[spawned], ProcessSpawned) and log[spawned].warm
    answers = [view_of(e) for e in log[spawned + 1 : spawned + 3] if isinstance(e, CliLine)]
    assert [
        (a.response.request_id, a.response.subtype) for a in answers if isinstance(a, ControlResponse)
    ] == [
        (f"{PRIME_REQUEST_PREFIX}initialize", "success"),
        (f"{PRIME_REQUEST_PREFIX}context", "success"),
    ]
    context = answers[1]
    assert isinstance(context, ControlResponse) and context.response.response is not None
    assert "categories" in context.response.response  # what the CLI built: the system prompt's share etc.


async def test_a_stalled_api_that_sends_pings_times_out_for_no_progress(
    claude: AgentConfig, api: FakeModelAPI
) -> None:
    """Keep-alive pings are signs of life, not progress: a stream that only pings is stalled."""
    api.push(Hang(ping_every_s=0.3), Text("back again"))
    cfg = config(pool_size=1, default_agent=claude, stall_notice_s=1.0, stall_timeout_s=4.0)
    async with open_runtime(cfg) as rt:
        info = await rt.create_session()
        _, entries = await run_turn(rt, info.id, "hang with pings", within=TURN_S)
        end = ended(entries)
        assert end.outcome == "timed_out", end
        assert "no progress for 4 s" in end.reason, end
        kinds = [type(e) for e in entries]
        assert StreamStalled in kinds and kinds.index(StreamStalled) < kinds.index(Timeout)
        assert [e.which for e in entries if isinstance(e, Timeout)] == ["stall"]
        assert end.timing is not None and end.timing.stalled_ms and end.timing.stalled_ms >= 3000
        _, entries = await run_turn(rt, info.id, "are you back?", within=TURN_S)
        assert ended(entries).outcome == "completed"
        assert_gap_free(rt, info.id)


async def test_api_retries_are_their_own_phase_and_the_first_event_comes_at_once(
    rt: Runtime, api: FakeModelAPI
) -> None:
    api.push(
        ApiError(status=500, message="flaky", should_retry=True),
        ApiError(status=500, message="flaky", should_retry=True),
        Text("made it", chunks=3),
    )
    info = await rt.create_session()
    _, entries = await run_turn(rt, info.id, "retry please", within=TURN_S)
    end = ended(entries)
    assert end.outcome == "completed", end
    retries = [v for v in (view_of(e) for e in entries if isinstance(e, CliLine)) if isinstance(v, ApiRetry)]
    assert len(retries) == 2
    t = end.timing
    assert t is not None and t.ttfe_ms is not None and t.ttft_ms is not None and t.stalled_ms is not None
    # system/init came before the retries; the first token after them; the wait was not "thinking".
    assert t.ttfe_ms < t.ttft_ms
    waited = sum(r.retry_delay_ms or 0 for r in retries)
    assert t.stalled_ms >= 0.9 * waited > 0, (t, waited)
    assert (t.thinking_ms or 0) < t.stalled_ms
    assert_gap_free(rt, info.id)


async def test_stopping_a_busy_session_signals_at_once(claude: AgentConfig, api: FakeModelAPI) -> None:
    """The CLI ignores stdin EOF mid-turn: a stop of a busy session must not wait out the close grace."""
    api.push(Text("word " * 300, chunks=300, token_delay=0.1))
    cfg = config(pool_size=1, default_agent=claude, close_grace_s=120.0)
    async with open_runtime(cfg) as rt:
        info = await rt.create_session()
        stream = await rt.start_turn(info.id, "talk slowly")
        with trio.fail_after(TURN_S):
            async with rt.subscribe(info.id, stream=stream) as sub:
                async for batch in sub:
                    if any(b"text_delta" in r.data for r in batch):
                        break
        with trio.fail_after(30):  # far less than close_grace_s: no stdin-EOF grace was waited out
            await rt.stop_session(info.id)
        entries = [r.entry for r in rt.session(info.id).journal.read(0, 100_000)]
        mine = [e for e in entries if e.stream == stream]
        assert ended(mine).outcome == "cancelled"
        exits = [e for e in entries if isinstance(e, ProcessExited)]
        assert exits and exits[-1].expected and exits[-1].reason.startswith("session stopped")
        assert_gap_free(rt, info.id)
