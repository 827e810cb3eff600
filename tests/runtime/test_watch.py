"""SessionWatch: a set of changed sessions that coalesces, wakes its owner, and never grows a backlog."""

from __future__ import annotations

import trio
import trio.testing

from turnstile.engine.runtime.watch import SessionWatch


async def test_marks_coalesce_in_first_change_order() -> None:
    closed: list[SessionWatch] = []
    watch = SessionWatch(closed.append)
    for sid in ["a", "b", "a", "c", "b"]:
        watch.mark(sid)
    assert await watch.changed() == ["a", "b", "c"]
    watch.mark("b")
    assert await watch.changed() == ["b"]
    watch.close()
    watch.close()
    assert closed == [watch]
    watch.mark("z")  # ignored once closed
    assert await watch.changed() == []


async def test_a_waiting_owner_wakes_on_a_mark_a_poke_and_a_close() -> None:
    watch = SessionWatch(lambda w: None)
    got: list[list[str]] = []

    async def owner() -> None:
        while not watch.closed:
            got.append(await watch.changed())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(owner)
        await trio.testing.wait_all_tasks_blocked()
        watch.mark("s1")
        await trio.testing.wait_all_tasks_blocked()
        watch.poke()
        await trio.testing.wait_all_tasks_blocked()
        watch.close()
    assert got == [["s1"], [], []]
