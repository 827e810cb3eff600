"""The journal writing behind to Redis (engine.runtime.writer), against a real ``redis-server``.

Entries are folded the instant they are appended and reach subscribers only once Redis took them; a
Redis outage shorter than the grace costs a pause (the backlog is written in order, nothing twice); a
longer one, or more waiting than the backlog bound, begins the storage failure episode of issue 13
(subscribers told, failure hooks run), and the backlog is written first when Redis is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.redisd import RedisServer, running_redis
from tests.reliability.clients import until
from turnstile.engine.errors import StorageFailed
from turnstile.engine.log import CliLine, LogDropped, Record, Stderr, TurnRequested
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.subscription import Subscription
from turnstile.engine.runtime.writer import WriteBehind
from turnstile.engine.stores.redis import RedisRepository, RedisSettings


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    # AOF on: a restart keeps what was written (as a production Redis with appendonly would).
    with running_redis(tmp_path / "redis", appendonly=True) as server:
        yield server


async def journal_on(
    repo: RedisRepository,
    nursery: trio.Nursery,
    *,
    grace_s: float = 30.0,
    backlog_bytes: int = 16 << 20,
    sid: str = "s1",
) -> Journal:
    journal = Journal(sid, await repo.open(sid), backlog_bytes=backlog_bytes)
    writer = WriteBehind(repo, grace_s=grace_s, retry_max_s=0.2)
    writer.add(journal)
    nursery.start_soon(writer.run)
    return journal


def turn(n: int) -> TurnRequested:
    return TurnRequested(seq=0, ts=None, stream=f"t{n}", prompt=f"prompt {n}")


async def take(sub: Subscription, n: int) -> list[Record]:
    """The next ``n`` records the subscription delivers (bounded)."""
    got: list[Record] = []
    with trio.fail_after(20):
        async for batch in sub:
            got.extend(batch)
            if len(got) >= n:
                return got
    return got


async def test_entries_are_folded_at_once_and_sent_once_written(redis: RedisServer) -> None:
    repo = RedisRepository(RedisSettings(url=redis.url, node="n1"))
    folded: list[int] = []
    async with repo.connected(), trio.open_nursery() as nursery:
        journal = await journal_on(repo, nursery)
        journal.add_folded_hook(lambda records: folded.extend(r.entry.seq for r in records))
        sub = Subscription(journal, after=0)
        sub.poke()  # one empty batch once caught up: the log is empty, so it goes live
        assert await sub.__anext__() == [] and sub.live
        redis.command("CLIENT", "PAUSE", "60000", "WRITE")  # Redis holds every write until unpaused
        journal.extend([turn(1), turn(2), turn(3)])
        assert folded == [1, 2, 3]  # folded in the same step as the append
        await trio.testing.wait_all_tasks_blocked()  # the writer is waiting for Redis's answer
        assert journal.last_seq == 0 and journal.pending == 3
        assert journal.next_seq == 4
        redis.command("CLIENT", "UNPAUSE")
        got = await take(sub, 3)
        assert [r.entry.seq for r in got] == [1, 2, 3]
        assert journal.last_seq == 3 and journal.pending == 0
        assert [r.data for r in await journal.read_async(0, 10)] == [r.data for r in got]
        sub.close()
        journal.close()
        nursery.cancel_scope.cancel()


async def test_a_short_outage_is_a_pause_and_nothing_is_written_twice(redis: RedisServer) -> None:
    repo = RedisRepository(RedisSettings(url=redis.url, node="n1"))
    async with repo.connected(), trio.open_nursery() as nursery:
        journal = await journal_on(repo, nursery)
        sub = Subscription(journal, after=0)
        journal.extend([turn(1), turn(2)])
        assert [r.entry.seq for r in await take(sub, 2)] == [1, 2]
        await trio.to_thread.run_sync(redis.stop)
        journal.extend([turn(3), turn(4)])
        await trio.testing.wait_all_tasks_blocked()
        journal.extend([turn(5)])
        assert journal.last_seq == 2 and not journal.failing
        await trio.to_thread.run_sync(redis.start)
        assert [r.entry.seq for r in await take(sub, 3)] == [3, 4, 5]
        assert not journal.failing
        stored = await journal.read_async(0, 100)
        assert [r.entry.seq for r in stored] == [1, 2, 3, 4, 5]  # in order, each once
        sub.close()
        journal.close()
        nursery.cancel_scope.cancel()


async def test_an_outage_past_the_grace_is_a_storage_failure_episode(redis: RedisServer) -> None:
    repo = RedisRepository(RedisSettings(url=redis.url, node="n1", command_timeout_s=1.0))
    failures: list[str] = []
    async with repo.connected(), trio.open_nursery() as nursery:
        journal = await journal_on(repo, nursery, grace_s=0.3)
        journal.add_failure_hook(failures.append)
        journal.extend([turn(1)])
        sub = Subscription(journal, after=0)
        assert [r.entry.seq for r in await take(sub, 1)] == [1]
        await trio.to_thread.run_sync(redis.stop)
        journal.extend([turn(2), turn(3)])
        with pytest.raises(StorageFailed) as caught, trio.fail_after(20):
            async for _batch in sub:
                pass
        assert caught.value.last_seq == 1  # everything written was delivered
        assert journal.failing and failures and "127.0.0.1" in failures[0]
        assert "Redis" in (journal.write_error or "")
        journal.extend([turn(4)])  # appended during the episode: waits with the rest
        await trio.to_thread.run_sync(redis.start)
        with trio.fail_after(20):
            await until(lambda: not journal.failing and not journal.pending)
        stored = await journal.read_async(0, 100)
        assert [r.entry.seq for r in stored] == [1, 2, 3, 4]
        again = Subscription(journal, after=caught.value.last_seq)
        assert [r.entry.seq for r in await take(again, 3)] == [2, 3, 4]
        again.close()
        journal.close()
        nursery.cancel_scope.cancel()


async def test_more_waiting_than_the_bound_ends_it_at_once_and_notes_the_dropped_output(
    redis: RedisServer,
) -> None:
    repo = RedisRepository(RedisSettings(url=redis.url, node="n1"))
    failures: list[str] = []
    line = (
        b'{"type":"stream_event","event":{"type":"content_block_delta","delta":{"text":"'
        + b"x" * 200
        + b'"}}}'
    )
    async with repo.connected(), trio.open_nursery() as nursery:
        journal = await journal_on(repo, nursery, backlog_bytes=4000)
        journal.add_failure_hook(failures.append)
        journal.extend([turn(1)])
        redis.command("CLIENT", "PAUSE", "60000", "WRITE")
        frames = [line] * 40  # ~11 KB of agent output while Redis answers nothing
        for frame in frames:
            journal.append_frames([frame], "t1")
        assert journal.failing and failures  # past the bound: no waiting for the grace
        assert "storage_backlog_bytes=4000" in failures[0]
        journal.extend([Stderr(seq=0, ts=None, stream="t1", text="more output")])
        redis.command("CLIENT", "UNPAUSE")
        with trio.fail_after(20):
            await until(lambda: not journal.failing and not journal.pending)
        stored = [r.entry for r in await journal.read_async(0, 1000)]
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        kept = [e for e in stored if isinstance(e, CliLine)]
        assert 0 < len(kept) < len(frames)  # kept up to the bound, the rest counted ...
        note = stored[-1]
        assert isinstance(note, LogDropped)  # ... and said so
        assert note.entries == len(frames) - len(kept) + 1  # (+ the stderr line)
        journal.close()
        nursery.cancel_scope.cancel()


async def test_one_round_writes_every_session_waiting(redis: RedisServer) -> None:
    repo = RedisRepository(RedisSettings(url=redis.url, node="n1"))
    async with repo.connected(), trio.open_nursery() as nursery:
        writer = WriteBehind(repo, grace_s=30.0, retry_max_s=0.2)
        journals = [Journal(f"s{i}", await repo.open(f"s{i}")) for i in range(20)]
        subs = []
        for journal in journals:
            writer.add(journal)
            subs.append(Subscription(journal, after=0))
        redis.command("CLIENT", "PAUSE", "60000", "WRITE")
        await nursery.start(writer.run)
        for n, journal in enumerate(journals):
            journal.extend([turn(n), turn(n + 100)])
        await trio.testing.wait_all_tasks_blocked()  # the first round is on its way (Redis holds it)
        for journal in journals[:10]:
            journal.extend([turn(999)])  # these wait for the next round
        redis.command("CLIENT", "UNPAUSE")
        for journal, sub in zip(journals, subs, strict=True):
            want = 3 if journal in journals[:10] else 2
            assert [r.entry.seq for r in await take(sub, want)] == list(range(1, want + 1))
            sub.close()
            journal.close()
        assert writer.rounds == 2 and writer.batches == 30  # 20 sessions, then 10: two round trips
        nursery.cancel_scope.cancel()


async def test_the_file_store_still_writes_and_sends_in_one_step(tmp_path: Path) -> None:
    from turnstile.engine.stores.file import FileLogStore

    journal = Journal("f", FileLogStore.open(tmp_path / "f.ndjson"))
    assert not journal.writes_behind
    sub = Subscription(journal, after=0)
    sub.poke()
    assert await sub.__anext__() == [] and sub.live
    journal.extend([turn(1), turn(2)])
    # No checkpoint in between: written, counted as written, and in the subscriber's buffer already.
    assert journal.last_seq == 2 and journal.pending == 0
    assert [r.entry.seq for r in sub._buf] == [1, 2]
    assert (tmp_path / "f.ndjson").read_bytes().count(b"\n") == 2
    sub.close()
    journal.close()
