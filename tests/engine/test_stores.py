"""turnstile.engine.stores: gap-free append, reads from any seq, and crash repair of the file store.

The contract (append continues the log exactly, reads from any seq, no append after close) is checked
against every store — in memory, the NDJSON file, and Redis Streams (a real ``redis-server``; skipped
with a message when it is not installed) — through :class:`Contract`, which awaits the network store's
calls and makes the synchronous stores' alike.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from turnstile.engine.errors import LogCorrupted, LogError, SequenceGap
from turnstile.engine.log import (
    CliLine,
    LogRepaired,
    Record,
    StreamEnded,
    TurnRequested,
    entry_from_frame,
    raw_bytes,
    record,
)
from turnstile.engine.stores import AnyLogStore, AsyncLogStore, LogStore
from turnstile.engine.stores.file import FileLogRepository, FileLogStore
from turnstile.engine.stores.memory import MemoryLogStore

FIXTURE = Path(__file__).parent.parent / "fixtures" / "transcripts"
ROMA = FIXTURE / "jackey8616__roma__test__fixtures__claude-stream__tool-use-turn.jsonl"


def sample_records(n_cli: int = 5) -> list[Record]:
    out = [record(TurnRequested(seq=1, ts=1.0, stream="t1", prompt="hi"))]
    for line in ROMA.read_bytes().splitlines()[:n_cli]:
        made = entry_from_frame(line, seq=len(out) + 1, ts=2.0, stream="t1")
        assert made is not None
        out.append(record(made[0]))
    out.append(
        record(StreamEnded(seq=len(out) + 1, ts=3.0, stream="t1", outcome="completed", reason="result"))
    )
    return out


class Contract:
    """A store of any kind, driven the same way: its calls awaited (a synchronous store's at once)."""

    def __init__(self, store: AnyLogStore) -> None:
        self.store = store

    @property
    def last_seq(self) -> int:
        return self.store.last_seq

    async def append(self, records: Sequence[Record]) -> None:
        if isinstance(self.store, AsyncLogStore):
            await self.store.append_async(records)
        else:
            self.store.append(records)

    async def read(self, after: int = 0, limit: int | None = None) -> list[Record]:
        if isinstance(self.store, AsyncLogStore):
            return await self.store.read_async(after, limit)
        return list(self.store.read(after, limit))

    def close(self) -> None:
        self.store.close()


@pytest.fixture(params=["memory", "file", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Contract]:
    if request.param == "memory":
        yield Contract(MemoryLogStore())
    elif request.param == "file":
        yield Contract(FileLogStore.open(tmp_path / "s.ndjson"))
    else:
        from tests.redisd import running_redis
        from turnstile.engine.stores.redis import RedisRepository, RedisSettings

        with running_redis(tmp_path / "redis") as server:
            repo = RedisRepository(RedisSettings(url=server.url, node="n1"))
            async with repo.connected():
                yield Contract(await repo.open("s-contract"))


async def test_append_and_read_from_any_seq(store: Contract) -> None:
    recs = sample_records()
    await store.append(recs[:3])
    await store.append(recs[3:])
    assert store.last_seq == len(recs)
    assert [r.entry for r in await store.read()] == [r.entry for r in recs]
    for after in range(len(recs) + 2):
        got = await store.read(after=after)
        assert [r.entry.seq for r in got] == list(range(after + 1, len(recs) + 1))
        assert [r.data for r in got] == [r.data for r in recs[after:]]
    assert [r.entry.seq for r in await store.read(after=2, limit=2)] == [3, 4]
    assert isinstance(store.store, LogStore | AsyncLogStore)


async def test_reads_page_through_long_logs(store: Contract) -> None:
    # More entries than one Redis page (1024), appended in batches of odd sizes.
    recs = [
        record(TurnRequested(seq=i, ts=float(i), stream=f"t{i}", prompt="p" * (i % 7)))
        for i in range(1, 2600)
    ]
    for start in range(0, len(recs), 333):
        await store.append(recs[start : start + 333])
    assert store.last_seq == len(recs)
    for after in (0, 1, 1023, 1024, 1025, 2047, 2598, 2599):
        got = await store.read(after=after)
        assert [r.entry.seq for r in got] == list(range(after + 1, len(recs) + 1))
    got = await store.read(after=1500, limit=700)
    assert [r.data for r in got] == [r.data for r in recs[1500:2200]]


async def test_gaps_and_duplicates_are_refused(store: Contract) -> None:
    recs = sample_records()
    await store.append(recs[:2])
    with pytest.raises(SequenceGap):
        await store.append(recs[3:4])
    with pytest.raises(SequenceGap):
        await store.append(recs[1:2])
    assert store.last_seq == 2
    assert [r.entry.seq for r in await store.read()] == [1, 2]


async def test_append_after_close_is_an_error(store: Contract) -> None:
    store.close()
    with pytest.raises(LogError):
        await store.append(sample_records()[:1])


def test_file_store_reopen_continues(tmp_path: Path) -> None:
    recs = sample_records()
    with FileLogStore.open(tmp_path / "a.ndjson") as s:
        s.append(recs)
    with FileLogStore.open(tmp_path / "a.ndjson") as s:
        assert s.last_seq == len(recs) and s.repaired is None
        assert [r.data for r in s.read()] == [r.data for r in recs]
        s.append([record(TurnRequested(seq=len(recs) + 1, ts=5.0, stream="t2", prompt="again"))])
    assert (tmp_path / "a.ndjson").read_bytes().count(b"\n") == len(recs) + 1


def test_truncating_the_last_entry_at_every_byte_never_loses_an_earlier_one(tmp_path: Path) -> None:
    recs = sample_records(3)
    path = tmp_path / "full.ndjson"
    with FileLogStore.open(path) as s:
        s.append(recs)
    full = path.read_bytes()
    last_start = len(full) - len(recs[-1].data) - 1
    for cut in range(last_start, len(full) + 1):
        p = tmp_path / f"cut{cut}.ndjson"
        p.write_bytes(full[:cut])
        with FileLogStore.open(p, clock=lambda: 99.0) as s:
            got = list(s.read())
            # Every complete earlier entry survives, in order, byte for byte.
            assert [r.data for r in got[: len(recs) - 1]] == [r.data for r in recs[:-1]]
            torn = full[last_start:cut]
            if cut >= len(full) - 1:
                # The whole last entry is there (with or without its newline): nothing is lost.
                assert [r.data for r in got] == [r.data for r in recs]
                assert s.repaired is None
            elif torn:
                assert s.repaired is not None and isinstance(got[-1].entry, LogRepaired)
                assert got[-1].entry.seq == len(recs)  # the sequence continues with no gap
                assert raw_bytes(got[-1].entry.raw, got[-1].entry.encoding) == torn
            else:
                assert s.repaired is None and len(got) == len(recs) - 1
            # The repaired file is a valid log that accepts appends.
            nxt = s.last_seq + 1
            s.append([record(TurnRequested(seq=nxt, ts=1.0, stream="t9", prompt="x"))])
        with FileLogStore.open(p) as again:
            assert again.repaired is None and again.last_seq == nxt


def test_damage_before_the_end_is_reported_not_repaired(tmp_path: Path) -> None:
    recs = sample_records(3)
    path = tmp_path / "bad.ndjson"
    with FileLogStore.open(path) as s:
        s.append(recs)
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"kind":"cli","seq":2,"broken'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(LogCorrupted, match=r"bad\.ndjson:2"):
        FileLogStore.open(path)


def test_seq_out_of_order_in_file_is_corruption(tmp_path: Path) -> None:
    recs = sample_records(2)
    path = tmp_path / "order.ndjson"
    path.write_bytes(recs[1].data + b"\n" + recs[0].data + b"\n")
    with pytest.raises(LogCorrupted, match="seq 2 where 1"):
        FileLogStore.open(path)


def test_cli_bytes_survive_the_file_store(tmp_path: Path) -> None:
    recs = sample_records(10)
    with FileLogStore.open(tmp_path / "c.ndjson") as s:
        s.append(recs)
        originals = ROMA.read_bytes().splitlines()[:10]
        cli = [r.entry for r in s.read() if isinstance(r.entry, CliLine)]
        assert [bytes(e.msg) for e in cli] == [o.strip() for o in originals]


@pytest.mark.parametrize("policy", ["always", "lifecycle", "never"])
def test_fsync_policies_write_the_same_bytes(tmp_path: Path, policy: str) -> None:
    recs = sample_records()
    with FileLogStore.open(tmp_path / f"{policy}.ndjson", fsync=policy) as s:  # type: ignore[arg-type]
        s.append(recs)
    assert (tmp_path / f"{policy}.ndjson").read_bytes() == b"".join(r.data + b"\n" for r in recs)


def test_repository_lists_and_validates_ids(tmp_path: Path) -> None:
    repo = FileLogRepository(tmp_path / "data")
    assert repo.list_ids() == [] and repo.writable() is None
    with repo.open("s-1") as s:
        s.append(sample_records(1))
    with repo.open("s_2"):
        pass
    assert set(repo.list_ids()) == {"s-1", "s_2"} and repo.exists("s-1")
    for bad in ["../etc", "a/b", "", ".hidden", "nl\n", "nl\r\n", "a\nb", "x" * 129]:
        with pytest.raises(LogError, match="invalid session id"):
            repo.path_for(bad)
        assert not repo.exists(bad)
    assert repo.path_for("x" * 128).name == "x" * 128 + ".ndjson"


def test_the_writability_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    repo = FileLogRepository(tmp_path / "data")
    (repo.sessions_dir).mkdir(parents=True)
    (repo.sessions_dir / ".write-probe").write_bytes(b"ok")  # left by an older version's crash
    repo.remove_stray_probes()
    for _ in range(3):
        assert repo.writable() is None
    assert list(repo.sessions_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_repository_reports_unwritable_dir(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    assert FileLogRepository(d).writable() is not None


def test_repository_reports_a_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    reason = FileLogRepository(blocker).writable()
    assert reason is not None and "not writable" in reason


def test_lifecycle_policy_defers_fsync_to_sync(tmp_path: Path) -> None:
    recs = sample_records(2)
    with FileLogStore.open(tmp_path / "l.ndjson", fsync="lifecycle") as s:
        s.append(recs[:1])
        s.sync()
        s.append(recs[1:3])  # CLI lines only: nothing more to make durable
        assert not s.sync_pending
    with FileLogStore.open(tmp_path / "m.ndjson", fsync="lifecycle") as s:
        s.append(recs[:1])  # turn.requested
        assert s.sync_pending
        s.sync()
        assert not s.sync_pending
        s.sync()  # idempotent
    with FileLogStore.open(tmp_path / "n.ndjson", fsync="always") as s:
        s.append(recs[:1])
        assert not s.sync_pending  # synced inline
    store = FileLogStore.open(tmp_path / "o.ndjson")
    store.append(recs[:1])
    store.close()  # close syncs what is pending
    assert not store.sync_pending
    store.sync()  # after close: a no-op, never an fsync of a released descriptor
