"""The syncer: fsyncs off the event loop, grouped in bursts, errors to the right caller only."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

from turnstile.engine.errors import LogError
from turnstile.engine.log import Record, TurnRequested, record
from turnstile.engine.runtime.syncer import Syncer
from turnstile.engine.stores.file import FileLogStore


def _lifecycle(seq: int) -> list[Record]:
    return [record(TurnRequested(seq=seq, ts=1.0, stream=f"t{seq}", prompt="hi"))]


class _SlowStore:
    """A store whose fsync takes a while (so requests pile up behind it) and counts its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.pending = True
        self.calls = 0
        self.fail = fail
        self.thread: str | None = None

    @property
    def sync_pending(self) -> bool:
        return self.pending

    def sync(self) -> None:
        self.calls += 1
        self.thread = threading.current_thread().name
        time.sleep(0.02)
        if self.fail:
            raise LogError("disk on fire")
        self.pending = False


async def test_a_burst_of_fsyncs_is_grouped_and_runs_off_the_event_loop(tmp_path: Path) -> None:
    syncer = Syncer()
    stores = [FileLogStore.open(tmp_path / f"{i}.ndjson") for i in range(50)]
    try:
        for store in stores:
            store.append(_lifecycle(1))
            assert store.sync_pending
        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(syncer.sync, store)
        assert not any(s.sync_pending for s in stores)
        assert syncer.requests == 50
        # The first request wakes the thread; the rest queue up behind its fsync and go as one batch or few.
        assert syncer.batches < 50, (syncer.batches, syncer.requests)
    finally:
        for store in stores:
            store.close()


async def test_the_error_goes_to_the_caller_whose_store_failed() -> None:
    syncer = Syncer()
    good, bad = _SlowStore(), _SlowStore(fail=True)
    results: dict[str, str] = {}

    async def run(name: str, store: _SlowStore) -> None:
        try:
            await syncer.sync(store)
            results[name] = "ok"
        except LogError as exc:
            results[name] = str(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "good", good)
        nursery.start_soon(run, "bad", bad)
    assert results == {"good": "ok", "bad": "disk on fire"}
    assert good.thread == bad.thread == "turnstile-fsync"


async def test_a_second_caller_waits_for_the_fsync_already_running(tmp_path: Path) -> None:
    """sync_pending stays true until an fsync *finished*: a caller arriving mid-fsync is not told
    "done" early (it queues, and its batch finds the store synced or syncs it again)."""
    syncer = Syncer()
    store = _SlowStore()
    done: list[float] = []

    async def one() -> None:
        await syncer.sync(store)
        done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.sleep(0.005)  # the first fsync is running
        assert store.sync_pending
        nursery.start_soon(one)
    assert len(done) == 2 and not store.sync_pending


async def test_a_cancelled_caller_stops_waiting_but_the_fsync_happens(tmp_path: Path) -> None:
    syncer = Syncer()
    store = FileLogStore.open(tmp_path / "c.ndjson")
    try:
        store.append(_lifecycle(1))
        with trio.move_on_after(0) as scope:
            await syncer.sync(store)
        assert scope.cancelled_caught
        with trio.fail_after(5):
            while store.sync_pending:  # noqa: ASYNC110 (set by another thread: nothing to wait on)
                await trio.sleep(0.005)
    finally:
        store.close()


@pytest.mark.parametrize("n", [1, 3])
async def test_an_idle_store_costs_no_trip_to_the_thread(n: int) -> None:
    syncer = Syncer()
    store = _SlowStore()
    store.pending = False
    for _ in range(n):
        await syncer.sync(store)
    assert store.calls == 0 and syncer.requests == 0
