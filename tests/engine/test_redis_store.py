"""The Redis Streams store against a real ``redis-server``: what the shared contract does not cover.

A batch whose answer was lost is not written twice; a log that Redis lost, or that another writer moved
on, is refused loudly; the stream's ids carry the seq; trimming; the session index and ownership keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redisd import RedisServer, running_redis
from turnstile.engine.errors import ConfigError, LogError
from turnstile.engine.log import Record, SessionCreated, SessionStopped, TurnRequested, record
from turnstile.engine.stores.redis import (
    RedisLogStore,
    RedisRepository,
    RedisSettings,
    Trim,
    parse_trim,
    split_session_url,
)


def turns(first: int, last: int) -> list[Record]:
    return [
        record(TurnRequested(seq=i, ts=float(i), stream=f"t{i}", prompt=f"p{i}"))
        for i in range(first, last + 1)
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as s:
        yield s


async def repository(server: RedisServer, **kw: object) -> RedisRepository:
    return RedisRepository(RedisSettings(url=server.url, node="n1", **kw))  # type: ignore[arg-type]


async def stream_seqs(repo: RedisRepository, sid: str) -> list[tuple[str, int]]:
    entries = await repo.client.xrange(repo.keys.log(sid), "-", "+")
    return [(e.identifier.decode(), int(e.field_values[b"seq"])) for e in entries]


async def test_a_batch_sent_again_is_not_written_twice(server: RedisServer) -> None:
    repo = await repository(server)
    async with repo.connected():
        store = await repo.open("s1")
        await store.append_async(turns(1, 3))
        # The same batch again from a writer that never heard the answer (a lost reply) ...
        deaf = RedisLogStore(repo, "s1", 0, 0)
        await deaf.append_async(turns(1, 3))
        # ... and a longer one whose first part was written: only the rest is added.
        deaf2 = RedisLogStore(repo, "s1", 0, 0)
        await deaf2.append_async(turns(1, 5))
        seqs = await stream_seqs(repo, "s1")
        assert [s for _, s in seqs] == [1, 2, 3, 4, 5]
        # Every id is "<ms>-<seq>": the seq is the id's sequence part, as in the field.
        assert all(ident.endswith(f"-{seq}") for ident, seq in seqs)
        assert [r.data for r in await store.read_async(0)] == [r.data for r in turns(1, 5)]
        assert await repo.last_seq("s1") == 5


async def test_a_log_that_redis_lost_is_refused_not_continued(server: RedisServer) -> None:
    repo = await repository(server)
    async with repo.connected():
        store = await repo.open("s1")
        await store.append_async(turns(1, 4))
        server.command("FLUSHALL")  # what a restart without persistence does
        with pytest.raises(LogError, match=r"ends at seq 0 but seq 4 was written: .* lost entries"):
            await store.append_async(turns(5, 6))
        assert await stream_seqs(repo, "s1") == []  # nothing was written after the gap


async def test_a_second_writer_is_refused(server: RedisServer) -> None:
    repo = await repository(server)
    async with repo.connected():
        first = await repo.open("s1")
        await first.append_async(turns(1, 2))
        second = await repo.open("s1")  # a second server with the same node id
        await second.append_async(turns(3, 6))
        with pytest.raises(LogError, match=r"already goes on to seq 6 .* another server writes to it"):
            await first.append_async(turns(3, 3))
        assert [s for _, s in await stream_seqs(repo, "s1")] == [1, 2, 3, 4, 5, 6]


async def test_reads_find_every_seq_after_a_reopen(server: RedisServer) -> None:
    repo = await repository(server)
    async with repo.connected():
        writer = await repo.open("s1")
        for start in range(1, 300, 7):
            await writer.append_async(turns(start, start + 6))
        reader = await repo.open("s1")  # knows no ids yet: reads the first page from the start
        assert reader.last_seq == 301
        for after in (0, 1, 150, 299, 300, 301):
            got = await reader.read_async(after)
            assert [r.entry.seq for r in got] == list(range(after + 1, 302))
        assert reader.id_after(150).endswith("-150")


async def test_maxlen_keeps_about_the_newest_entries(server: RedisServer) -> None:
    repo = await repository(server, trim=Trim("maxlen", 100))
    async with repo.connected():
        store = await repo.open("s1")
        for start in range(1, 2001, 50):
            await store.append_async(turns(start, start + 49))
        length = await repo.client.xlen(repo.keys.log("s1"))
        assert 100 <= length < 2000  # approximate (~): whole radix-tree nodes are dropped
        got = await (await repo.open("s1")).read_async(0)
        assert got[-1].entry.seq == 2000 and got[0].entry.seq == 2001 - length
        assert [r.entry.seq for r in got] == list(range(2001 - length, 2001))
        assert await repo.last_seq("s1") == 2000  # the meta keeps counting


async def test_age_trim_lets_a_stopped_session_expire(server: RedisServer) -> None:
    repo = await repository(server, trim=parse_trim("age:3600"))
    async with repo.connected():
        assert await repo.claim("s1")
        store = await repo.open("s1")
        created = SessionCreated(seq=1, ts=1.0, session_id="s1", agent="sim")
        await store.append_async([record(created)])
        assert await repo.client.ttl(repo.keys.log("s1")) == -1  # running: no expiry
        await store.append_async([record(SessionStopped(seq=2, ts=2.0, reason="done"))])
        for key in (repo.keys.log("s1"), repo.keys.meta("s1"), repo.keys.owner("s1")):
            assert 3500 < await repo.client.ttl(key) <= 3600


async def test_the_session_index_and_ownership(server: RedisServer) -> None:
    repo = await repository(server)
    other = RedisRepository(RedisSettings(url=server.url, node="n2"))
    async with repo.connected(), other.connected():
        assert await repo.claim("s-a")
        assert not await other.claim("s-a")  # taken
        assert await other.claim("s-b")
        store = await repo.open("s-a")
        created = SessionCreated(seq=1, ts=1.0, session_id="s-a", agent="sim")
        await store.append_async([record(created)])
        assert await repo.created_entry("s-a") == record(created).data
        assert await repo.all_ids() == ["s-a", "s-b"]
        assert await repo.session_ids() == ["s-a"] and await other.session_ids() == ["s-b"]
        assert await other.owner("s-a") == "n1" and await repo.owner("nope") is None
        # A claim whose session.created was never written can be given back; a written one cannot.
        await other.release("s-b")
        await repo.release("s-a")
        assert await repo.all_ids() == ["s-a"] and await repo.owner("s-b") is None
        assert await repo.exists("s-a") and not await repo.exists("s-b")


async def test_an_unreachable_redis_is_a_log_error_and_a_problem(tmp_path: Path) -> None:
    from tests.net import free_port

    repo = RedisRepository(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", node="n1"))
    async with repo.connected():
        assert await repo.check() is not None
        assert repo.problem() is not None and "127.0.0.1" in (repo.problem() or "")
        with pytest.raises(LogError):
            await repo.open("s1")


def test_settings_and_urls_are_checked() -> None:
    assert parse_trim("none") == Trim("none")
    assert parse_trim("maxlen:5") == Trim("maxlen", 5)
    assert parse_trim("age:2h") == Trim("age", 7200) and parse_trim("age:30") == Trim("age", 30)
    for bad in ("maxlen", "maxlen:x", "age:0", "forever", "maxlen:-3"):
        with pytest.raises(ConfigError, match="redis_trim"):
            parse_trim(bad)
    assert split_session_url("redis://h:6379/2/s-1") == ("redis://h:6379/2", "s-1")
    for bad in (
        "redis://h:6379/s-1",
        "http://h/0/s",
        "redis://h:6379/0/../x",
        "redis://h/0/a/b",
        "redis://h/0/.x",
    ):
        with pytest.raises(ConfigError):
            split_session_url(bad)
    with pytest.raises(ConfigError, match="must start with redis://"):
        RedisSettings(url="http://127.0.0.1:6379/0", node="n")
    with pytest.raises(ConfigError, match="node_id"):
        RedisSettings(url="redis://127.0.0.1:6379/0", node="has space")
    assert RedisSettings(url="redis://u:secret@h:1/0", node="n").where == "redis://h:1/0"
