"""Subscriptions: catch-up then live with no gap and no duplicate, stream filters, lagging subscribers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime.conftest import run_turn
from turnstile.engine.errors import Lagged, LogError, StorageFailed, StorageUnavailable
from turnstile.engine.log import Record, Stderr, StreamEnded, TurnRequested
from turnstile.engine.runtime import Runtime
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.subscription import Subscription
from turnstile.engine.stores.file import FileLogStore
from turnstile.engine.stores.memory import MemoryLogStore


def _journal(tmp_path: Path | None = None) -> Journal:
    store = FileLogStore.open(tmp_path / "log.ndjson") if tmp_path is not None else MemoryLogStore()
    return Journal("test", store)


def _note(journal: Journal, n: int, stream: str | None = None) -> None:
    journal.extend(Stderr(seq=0, ts=None, stream=stream, text=f"line {i}") for i in range(n))


async def _drain(sub: Subscription, into: list[int]) -> None:
    async for batch in sub:
        into.extend(r.entry.seq for r in batch)


@pytest.mark.parametrize("on_disk", [False, True])
async def test_catch_up_racing_appends_has_no_gap_and_no_duplicate(tmp_path: Path, on_disk: bool) -> None:
    journal = _journal(tmp_path if on_disk else None)
    _note(journal, 3000)
    seen: list[int] = []
    sub = Subscription(journal, after=0, buffer=100_000)

    async def writer() -> None:
        for _ in range(300):
            _note(journal, 7)
            await trio.lowlevel.checkpoint()
        journal.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, sub, seen)
        nursery.start_soon(writer)
    assert seen == list(range(1, 3000 + 300 * 7 + 1))


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(["append", "read", "yield"]), st.integers(1, 40)), max_size=60),
    after=st.integers(0, 30),
)
async def test_any_interleaving_delivers_each_seq_once_in_order(
    ops: list[tuple[str, int]], after: int
) -> None:
    journal = _journal()
    _note(journal, 20)
    sub = Subscription(journal, after=after, buffer=100_000)
    seen: list[int] = []
    it = sub.__aiter__()
    for op, n in ops:
        if op == "append":
            _note(journal, n)
        elif op == "read":
            with trio.move_on_after(0):
                seen.extend(r.entry.seq for r in await it.__anext__())
        else:
            await trio.lowlevel.checkpoint()
    journal.close()
    async for batch in it:
        seen.extend(r.entry.seq for r in batch)
    assert seen == list(range(after + 1, journal.last_seq + 1))


async def test_a_slow_subscriber_is_ended_with_lagged_and_resumes_from_the_log() -> None:
    journal = _journal()
    _note(journal, 5)
    sub = Subscription(journal, after=0, buffer=10)
    first = await sub.__anext__()  # catch-up
    assert [r.entry.seq for r in first] == [1, 2, 3, 4, 5]
    assert (await _next_or_none(sub)) is None  # now live, nothing new
    _note(journal, 50)  # the writer never waits on it
    with pytest.raises(Lagged) as info:
        await sub.__anext__()
    assert info.value.last_seq == 5
    assert journal.lagged_total == 1
    again = Subscription(journal, after=info.value.last_seq, buffer=10)
    journal.close()
    seen: list[int] = []
    await _drain(again, seen)
    assert seen == list(range(6, 56))


async def _next_or_none(sub: Subscription) -> list[int] | None:
    with trio.move_on_after(0.01):
        return [r.entry.seq for r in await sub.__anext__()]
    return None


async def test_a_stuck_subscriber_never_blocks_the_writer_or_others() -> None:
    journal = _journal()
    stuck = Subscription(journal, buffer=16)
    healthy = Subscription(journal, buffer=100_000)
    await _next_or_none(stuck)  # goes live, then never reads again
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, healthy, seen)
        with trio.fail_after(5):
            for _ in range(1000):
                _note(journal, 10)
                await trio.lowlevel.checkpoint()
        journal.close()
    assert seen == list(range(1, 10_001))
    assert stuck.lagged


def _turn(journal: Journal, stream: str, n: int) -> None:
    journal.append(TurnRequested(seq=0, ts=None, stream=stream, prompt="p"))
    _note(journal, n, stream)


async def test_stream_subscription_ends_after_its_stream_ended_entry() -> None:
    journal = _journal()
    _turn(journal, "t1", 3)
    _note(journal, 2)  # session-level noise
    _turn(journal, "t2", 2)
    sub = Subscription(journal, stream="t1")
    got: list[int] = []

    async def finish() -> None:
        await trio.sleep(0.01)
        _note(journal, 2, "t1")
        journal.append(StreamEnded(seq=0, ts=None, stream="t1", outcome="completed"))
        _note(journal, 2, "t2")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish)
        with trio.fail_after(5):
            await _drain(sub, got)
    entries = [r.entry for r in journal.read(0, 1000)]
    t1 = [e.seq for e in entries if e.stream == "t1"]
    assert got == t1
    assert isinstance(entries[got[-1] - 1], StreamEnded)


async def test_ended_stream_replays_history_terminal_then_ends() -> None:
    journal = _journal()
    _turn(journal, "t1", 3)
    end = journal.append(StreamEnded(seq=0, ts=None, stream="t1", outcome="failed", reason="x"))
    _note(journal, 3)
    got: list[int] = []
    with trio.fail_after(1):
        await _drain(Subscription(journal, stream="t1"), got)
    assert got == [1, 2, 3, 4, end.entry.seq]
    # resuming at or past the terminal entry gives nothing and ends at once (SSE answers 204)
    got = []
    with trio.fail_after(1):
        await _drain(Subscription(journal, stream="t1", after=end.entry.seq), got)
    assert got == []
    # resuming in the middle gives the rest
    with trio.fail_after(1):
        await _drain(Subscription(journal, stream="t1", after=2), got)
    assert got == [3, 4, end.entry.seq]


async def test_runtime_subscribe_replays_a_finished_stream(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    stream, entries = await run_turn(scripted_rt, info.id, "hello")
    for after in (0, entries[2].seq):
        async with scripted_rt.subscribe(info.id, stream=stream, after=after) as sub:
            seqs = [r.entry.seq async for batch in sub for r in batch]
        assert seqs == [e.seq for e in entries if e.seq > after]
    assert scripted_rt.metrics().subscribers == 0


async def test_metrics_count_subscribers_and_lagging(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    async with scripted_rt.subscribe(info.id) as sub:
        assert scripted_rt.metrics().subscribers == 1
        await _next_or_none(sub)
    assert scripted_rt.metrics().subscribers == 0


class _FlakyStore(MemoryLogStore):
    """A store whose appends fail while ``failing`` (a full disk)."""

    failing = False

    def append(self, records: Sequence[Record]) -> None:
        if self.failing:
            raise LogError("disk full (test)")
        super().append(records)


async def test_a_failing_store_sends_nothing_unwritten_and_writes_the_backlog_first() -> None:
    store = _FlakyStore()
    journal = Journal("flaky", store)
    heard: list[int] = []
    journal.add_listener(lambda records: heard.extend(r.entry.seq for r in records))
    _note(journal, 3)
    live = Subscription(journal, buffer=1000)
    assert [r.entry.seq for r in await live.__anext__()] == [1, 2, 3]
    store.failing = True
    _note(journal, 4)
    assert journal.failing and store.last_seq == 3 and journal.last_seq == 3 and journal.pending == 4
    # The live subscriber is told at once (it would otherwise wait for entries that cannot come) ...
    with pytest.raises(StorageFailed) as failed:
        await live.__anext__()
    assert failed.value.last_seq == 3 and "disk full (test)" in failed.value.reason
    # ... and a new one gets what is written, then the same; nobody has seen seqs 4-7, listeners neither.
    late: list[int] = []
    with pytest.raises(StorageFailed):
        await _drain(Subscription(journal), late)
    assert late == [1, 2, 3] and heard == [1, 2, 3]
    assert [r.entry.seq for r in journal.read(0, 100)] == [1, 2, 3]
    _note(journal, 1)  # appended while failing: waits behind the others, in order
    assert not journal.retry() and store.last_seq == 3
    store.failing = False
    assert journal.retry() and not journal.failing and journal.write_error is None
    assert store.last_seq == 8 and heard == list(range(1, 9))
    journal.close()
    again: list[int] = []
    await _drain(Subscription(journal, after=3), again)
    assert again == list(range(4, 9))


async def test_a_session_whose_log_fails_refuses_turns_and_is_not_ready(scripted_rt: Runtime) -> None:
    info = await scripted_rt.create_session()
    journal = scripted_rt.session(info.id).journal
    flaky = _FlakyStore()
    flaky.append(list(journal.store.read(0)))
    journal.store = flaky
    flaky.failing = True
    with pytest.raises(StorageUnavailable):
        await scripted_rt.start_turn(info.id, "x")
    ready = scripted_rt.readiness()
    assert not ready.ready and any("cannot be written" in r for r in ready.reasons)
    with pytest.raises(StorageUnavailable):
        await scripted_rt.create_session()
    flaky.failing = False  # the disk has room again: the next turn stores the backlog first
    _, entries = await run_turn(scripted_rt, info.id, "z")
    assert isinstance(entries[-1], StreamEnded) and entries[-1].outcome == "completed"
    assert [r.entry.seq for r in flaky.read(0)] == list(range(1, journal.next_seq))
    assert scripted_rt.readiness().ready
