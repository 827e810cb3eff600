"""Fixtures for the runtime tests, and the guard that fails any test leaving a child process behind.

The guard makes this pytest process a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): a process
whose parent died is re-parented to us instead of to init, so a tool the agent left running after the
agent itself was killed still shows up in our process tree. After each test, every descendant that was
not there before it is a leftover: the test fails, and the leftovers are killed and reaped so the next
test starts clean.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.log import AnyEntry, Record, StreamEnded
from engine.runtime import AgentConfig, Runtime, RuntimeConfig, open_runtime
from engine.runtime.scripted import ScriptedLauncher

_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command) for every process we can see."""
    table: dict[int, tuple[int, str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        close = stat.rindex(")")
        fields = stat[close + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[0], stat[stat.index("(") + 1 : close])
    return table


def descendants() -> dict[int, tuple[str, str]]:
    """Every process below this one: pid -> (state, command)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state, _cmd) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[str, str]] = {}
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out[child] = (table[child][1], table[child][2])
                todo.append(child)
    return out


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


def _reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """Fail the test if it leaves any child process (or orphaned grandchild) behind."""
    before = set(descendants())
    yield
    deadline = time.monotonic() + 1.0
    while True:
        found = {pid: info for pid, info in descendants().items() if pid not in before}
        # A zombie is dead; as our subreaper artefact (an orphaned grandchild) it only needs reaping.
        _reap([pid for pid, (state, _cmd) in found.items() if state == "Z"])
        left = {pid: info for pid, info in found.items() if info[0] != "Z"}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if left:
        _reap(list(left))
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
    from engine.log import kind_of

    return [kind_of(e.entry if isinstance(e, Record) else e) for e in entries]


def assert_gap_free(rt: Runtime, sid: str) -> list[AnyEntry]:
    """The session's whole log has seqs 1..N; every stream has exactly one stream.ended; returned."""
    journal = rt.session(sid).journal
    entries = [r.entry for r in journal.read(0, 1_000_000)]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    ends: dict[str, int] = {}
    for e in entries:
        if isinstance(e, StreamEnded):
            assert e.stream is not None
            ends[e.stream] = ends.get(e.stream, 0) + 1
    assert all(n == 1 for n in ends.values()), ends
    return entries
