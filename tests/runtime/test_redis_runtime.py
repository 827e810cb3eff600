"""Runtimes sharing one Redis log (two nodes in one trio run, scripted agents, a real ``redis-server``).

A turn run on node n1 is read on node n2 (a follower) exactly as on n1; n2 lists it, says who runs it,
and refuses to command it; n1 restarted with the same node id reads its sessions back from Redis and
ends the turns a crash left open; a Redis that cannot be reached makes the runtime unready and refuses
new work with StorageUnavailable, until it answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.net import free_port
from tests.redisd import RedisServer, running_redis
from tests.reliability.clients import until
from tests.runtime.conftest import config, ended, stream_entries
from tests.scripted import ScriptedLauncher
from turnstile.engine.errors import SessionNotFound, SessionOwnedElsewhere, StorageUnavailable
from turnstile.engine.log import Record, SessionRecovered, StreamEnded
from turnstile.engine.runtime import Runtime, open_runtime
from turnstile.engine.runtime.followers import Follower


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def node(redis_url: str, name: str, tmp_path: Path, **kw: Any) -> Any:
    return open_runtime(
        config(redis_url=redis_url, node_id=name, data_dir=str(tmp_path / name), **{"pool_size": 1, **kw}),
        launcher=ScriptedLauncher(),
    )


async def records_of(rt: Runtime, sid: str, stream: str | None = None, after: int = 0) -> list[Record]:
    out: list[Record] = []
    with trio.fail_after(20):
        async with rt.subscribe(sid, after=after, stream=stream) as sub:
            async for batch in sub:
                out.extend(batch)
                if stream is None and out and out[-1].entry.seq >= (await rt.reader(sid)).journal.last_seq:
                    break
    return out


async def test_a_turn_on_one_node_reads_the_same_on_another(redis: RedisServer, tmp_path: Path) -> None:
    async with node(redis.url, "n1", tmp_path) as n1, node(redis.url, "n2", tmp_path) as n2:
        info = await n1.create_session()
        sid = info.id
        assert info.node == "n1"
        tid = await n1.start_turn(sid, "hello [[deltas=20]]")
        async with trio.open_nursery() as nursery:
            got: dict[str, list[Record]] = {}

            async def read(name: str, rt: Runtime) -> None:
                async with rt.subscribe(sid, stream=tid) as sub:
                    got[name] = []
                    async for batch in sub:
                        got[name].extend(batch)

            nursery.start_soon(read, "n1", n1)
            nursery.start_soon(read, "n2", n2)
        assert [r.data for r in got["n2"]] == [r.data for r in got["n1"]]
        assert sum(type(r.entry) is StreamEnded for r in got["n2"]) == 1
        assert isinstance(got["n2"][-1].entry, StreamEnded) and got["n2"][-1].entry.outcome == "completed"
        # n2 knows the session as n1 folds it: same turns, same outcome, and who runs it.
        follower = await n2.reader(sid)
        assert isinstance(follower, Follower)
        remote = n2.info_of(follower)
        local = n1.info_of(n1.session(sid))
        assert remote.node == "n1" and remote.last_seq == local.last_seq
        assert [(t.id, t.outcome) for t in remote.turns] == [(t.id, t.outcome) for t in local.turns]
        assert [s.id for s in await n2.list_sessions()] == [sid]
        # Commands go to the owner: n2 says so.
        for call in (
            lambda: n2.start_turn(sid, "again"),
            lambda: n2.interrupt(sid, tid),
            lambda: n2.stop_session(sid),
        ):
            with pytest.raises(SessionOwnedElsewhere, match="run by node 'n1'"):
                await call()
        with pytest.raises(SessionNotFound):
            await n2.reader("s-nothing")


async def test_a_follower_catches_up_live_from_any_seq(redis: RedisServer, tmp_path: Path) -> None:
    async with node(redis.url, "n1", tmp_path) as n1, node(redis.url, "n2", tmp_path) as n2:
        sid = (await n1.create_session()).id
        first = await n1.start_turn(sid, "one [[deltas=5]]")
        await stream_entries(n1, sid, first)
        whole = await records_of(n1, sid)
        for after in (0, 3, len(whole) - 1, len(whole)):
            again = await records_of(n2, sid, after=after) if after < len(whole) else []
            assert [r.data for r in again] == [r.data for r in whole[after:]]
        # Live: n2 subscribed before the second turn exists gets it as it is written.
        async with n2.subscribe(sid, after=len(whole)) as sub:
            second = await n1.start_turn(sid, "two [[deltas=30 delta_s=0.01]]")
            live: list[Record] = []
            with trio.fail_after(20):
                async for batch in sub:
                    live.extend(batch)
                    if any(type(r.entry) is StreamEnded and r.entry.stream == second for r in batch):
                        break
        on_n1 = await records_of(n1, sid, after=len(whole))
        assert [r.data for r in live] == [r.data for r in on_n1[: len(live)]]
        assert n2.metrics().subscribers == 0


async def test_a_restarted_node_reads_its_sessions_back_from_redis(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with node(redis.url, "n1", tmp_path) as n1:
        sid = (await n1.create_session()).id
        done = await n1.start_turn(sid, "first [[deltas=3]]")
        assert ended(await stream_entries(n1, sid, done)).outcome == "completed"
        before = n1.session(sid).journal.last_seq
    async with node(redis.url, "n1", tmp_path) as again, node(redis.url, "n2", tmp_path) as other:
        await again.wait_recovered()
        session = again.session(sid)  # n1's again (n2 did not take it)
        assert session.journal.last_seq > before
        recovered = await records_of(again, sid, after=before)
        assert any(isinstance(r.entry, SessionRecovered) for r in recovered)
        assert other.sessions() == []
        tid = await again.start_turn(sid, "second")
        assert ended(await stream_entries(again, sid, tid)).outcome == "completed"
        entries = [r.entry for r in await records_of(again, sid)]
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))


async def test_an_unreachable_redis_makes_it_unready_until_it_answers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    try:
        async with node(server.url, "n1", tmp_path, storage_retry_s=0.1) as rt:
            where = f"127.0.0.1:{server.port}"
            with trio.fail_after(20):
                await until(lambda: any(where in reason for reason in rt.readiness().reasons))
            assert not rt.readiness().ready
            with pytest.raises(StorageUnavailable):
                await rt.create_session()
            await trio.to_thread.run_sync(server.start)
            with trio.fail_after(20):
                await until(lambda: rt.readiness().ready)
            sid = (await rt.create_session()).id
            tid = await rt.start_turn(sid, "hello")
            assert ended(await stream_entries(rt, sid, tid)).outcome == "completed"
    finally:
        server.stop()


@pytest.fixture
async def two_nodes(redis: RedisServer, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    async with node(redis.url, "n1", tmp_path) as n1, node(redis.url, "n2", tmp_path) as n2:
        yield n1, n2


async def test_a_stopped_session_reads_stopped_everywhere(two_nodes: tuple[Runtime, Runtime]) -> None:
    n1, n2 = two_nodes
    sid = (await n1.create_session()).id
    await n1.stop_session(sid)
    follower = await n2.reader(sid)
    with trio.fail_after(20):
        await until(lambda: follower.state == "stopped")
    whole = await records_of(n2, sid)
    assert whole[-1].entry.seq == n1.session(sid).journal.last_seq
