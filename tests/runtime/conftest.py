"""Fixtures for the runtime tests, and the guard that fails any test leaving a child process behind.

The guard makes this pytest process a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): a process
whose parent died is re-parented to us instead of to init, so a tool the agent left running after the
agent itself was killed still shows up in our process tree. After each test, every descendant that was
not there before it is a leftover: the test fails, and the leftovers are killed and reaped so the next
test starts clean.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from tests.procs import become_subreaper, descendants, kill_and_reap
from tests.scripted import ScriptedLauncher
from turnstile.engine.log import AnyEntry, Record, StreamEnded
from turnstile.engine.rehearsal import rehearse
from turnstile.engine.runtime import AgentConfig, Runtime, RuntimeConfig, open_runtime

become_subreaper()


def live_descendants() -> dict[int, tuple[str, str]]:
    """:func:`descendants` without zombies."""
    return {pid: info for pid, info in descendants().items() if info[0] != "Z"}


def process_group(pgid: int) -> list[int]:
    """Live descendants in process group ``pgid``."""
    out = []
    for pid in live_descendants():
        try:
            if os.getpgid(pid) == pgid:
                out.append(pid)
        except ProcessLookupError:
            pass
    return out


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Fail the test if it leaves any child process (or orphaned grandchild) behind."""
    before = set(descendants())
    yield
    deadline = time.monotonic() + 1.0
    while True:
        found = {pid: info for pid, info in descendants().items() if pid not in before}
        # A zombie is dead; as our subreaper artefact (an orphaned grandchild) it only needs reaping.
        kill_and_reap([pid for pid, (state, _cmd) in found.items() if state == "Z"])
        left = {pid: info for pid, info in found.items() if info[0] != "Z"}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if left:
        kill_and_reap(list(left))
        pytest.fail(
            "the test left child processes behind: "
            + ", ".join(f"{pid} ({cmd}, state {state})" for pid, (state, cmd) in sorted(left.items()))
        )


# --- runtime helpers --------------------------------------------------------------------------------------

SIM = AgentConfig(agent="sim", extra_args=("--speed", "0"))
"""The simulated agent with no sleeps: real processes, fast."""


def config(**overrides: Any) -> RuntimeConfig:
    """A runtime config for tests: small timeouts for teardown; pool off unless asked."""
    base: dict[str, Any] = {
        "pool_size": 0,
        "close_grace_s": 1.0,
        "kill_after_s": 1.0,
        "interrupt_grace_s": 1.0,
        "pool_ready_after_s": 0.05,
        "default_agent": SIM,
    }
    base.update(overrides)
    return RuntimeConfig(**base)


@pytest.fixture
def scripted() -> ScriptedLauncher:
    """An in-memory launcher (no processes)."""
    return ScriptedLauncher()


@pytest.fixture
async def scripted_rt(scripted: ScriptedLauncher) -> AsyncIterator[Runtime]:
    """A runtime over the scripted agent, pool off."""
    async with open_runtime(config(), launcher=scripted) as rt:
        yield rt


async def stream_entries(rt: Runtime, sid: str, stream: str, after: int = 0) -> list[AnyEntry]:
    """Every entry of ``stream`` until its ``stream.ended`` (waits for it)."""
    out: list[AnyEntry] = []
    async with rt.subscribe(sid, after=after, stream=stream) as sub:
        async for batch in sub:
            out.extend(r.entry for r in batch)
    return out


async def run_turn(rt: Runtime, sid: str, prompt: str, within: float = 30) -> tuple[str, list[AnyEntry]]:
    """Start a turn and collect its entries until it ends (failing after ``within`` seconds)."""
    stream = await rt.start_turn(sid, prompt)
    with trio.fail_after(within):
        return stream, await stream_entries(rt, sid, stream)


def ended(entries: list[AnyEntry]) -> StreamEnded:
    """The stream.ended entry of a stream's entries (asserting it is the last one)."""
    last = entries[-1]
    assert isinstance(last, StreamEnded), f"last entry is {last!r}"
    return last


def kinds(entries: list[AnyEntry] | list[Record]) -> list[str]:
    """The ``kind`` of each entry (or record)."""
    from turnstile.engine.log import kind_of

    return [kind_of(e.entry if isinstance(e, Record) else e) for e in entries]


def assert_gap_free(rt: Runtime, sid: str) -> list[AnyEntry]:
    """The session's whole log has seqs 1..N; every stream has exactly one stream.ended; a conductor fed
    the log asks for the entries the live session wrote (``engine.rehearsal``); returned."""
    journal = rt.session(sid).journal
    entries = [r.entry for r in journal.read(0, 1_000_000)]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert rehearse(entries, rt.config.limits()) == []
    ends: dict[str, int] = {}
    for e in entries:
        if isinstance(e, StreamEnded):
            assert e.stream is not None
            ends[e.stream] = ends.get(e.stream, 0) + 1
    assert all(n == 1 for n in ends.values()), ends
    return entries
