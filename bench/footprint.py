"""Footprint: resident memory per idle session, per live subscriber, per 10k log entries in memory.

Measured as the growth of this process's RSS (``/proc/self/status``) while adding many of a thing, divided
by their number (agent child processes are never counted: idle sessions in one-shot mode have none):

* idle session      — ``Runtime.create_session`` with pool size 0 (its task, journal, fold, machine models)
  with the file log (the server's default: an open file and its seq index) and with the memory log
* live subscriber   — a task iterating ``Runtime.subscribe`` on one session, waiting for the next entry
* SSE subscriber    — an SSE connection held open on ``turnstile serve`` (a child process: its RSS)
* 10k log entries   — CLI lines (the recorded fixtures) appended through the journal to a memory log:
  each kept as its entry and its encoded bytes (``Record``)

Python keeps freed memory for reuse, so each figure is taken on a fresh runtime, after a warm-up.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from pathlib import Path

import _common  # noqa: F401  (puts the repo root on sys.path)
import trio
from _clients import Received, http_json, sse_client
from _common import FIXTURES, note, rss_bytes, table
from _servers import ServerProcess

from turnstile.engine.framing import LineFramer
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig
from turnstile.engine.runtime.journal import Journal
from turnstile.engine.runtime.runtime import open_runtime
from turnstile.engine.stores.memory import MemoryLogStore

KIB = 1024


def settled_rss() -> int:
    gc.collect()
    return rss_bytes()


def heap() -> int:
    """Bytes Python has allocated and not freed (tracemalloc), after a collection."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


class Growth:
    """RSS and Python-heap growth between :meth:`start` and :meth:`stop`, per item."""

    def start(self) -> None:
        self.rss0, self.heap0 = settled_rss(), heap()

    def stop(self, n: int) -> tuple[float, float]:
        return (settled_rss() - self.rss0) / n, (heap() - self.heap0) / n


async def idle_sessions(n: int, data_dir: str | None) -> tuple[float, float]:
    config = RuntimeConfig(data_dir=data_dir, pool_size=0, default_agent=AgentConfig(agent="sim"))
    async with open_runtime(config) as rt:
        for _ in range(20):  # warm-up: imports, first allocations
            await rt.create_session()
        await trio.sleep(0.1)
        growth = Growth()
        growth.start()
        for _ in range(n):
            await rt.create_session()
        await trio.sleep(0.1)
        return growth.stop(n)


async def live_subscribers(n: int) -> tuple[float, float]:
    config = RuntimeConfig(pool_size=0, default_agent=AgentConfig(agent="sim"))
    async with open_runtime(config) as rt:
        info = await rt.create_session()

        async def follow(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with rt.subscribe(info.id) as sub:
                task_status.started()
                async for _ in sub:
                    pass

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                await nursery.start(follow)
            await trio.sleep(0.1)
            growth = Growth()
            growth.start()
            for _ in range(n):
                await nursery.start(follow)
            await trio.sleep(0.1)  # every subscriber caught up and waits live
            result = growth.stop(n)
            nursery.cancel_scope.cancel()
    return result


async def sse_subscribers(n: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-"))
    with ServerProcess("turnstile", str(tmp)) as server:
        status, body = await http_json(server.http, "POST", "/v1/sessions")
        assert status == 201, body
        path = f"/v1/sessions/{body['id']}/events"
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                await nursery.start(sse_client, server.http, path, Received())
            await trio.sleep(0.3)
            before = rss_bytes(server.pid)
            for _ in range(n):
                await nursery.start(sse_client, server.http, path, Received())
            await trio.sleep(0.5)
            after = rss_bytes(server.pid)
            nursery.cancel_scope.cancel()
    return (after - before) / n


def fixture_frames() -> list[bytes]:
    framer = LineFramer()
    out: list[bytes] = []
    for p in FIXTURES:
        out.extend(f for f in framer.feed(p.read_bytes()) if isinstance(f, bytes) and f.strip())
    return out


def log_entries(n: int) -> tuple[float, float, float]:
    """RSS and heap per 10k entries, and the encoded bytes per 10k (for scale)."""
    frames = fixture_frames()
    journal = Journal("bench", MemoryLogStore())
    warm = Journal("warm", MemoryLogStore())
    warm.append_frames(frames[:1000], "t1")
    growth = Growth()
    growth.start()
    done = 0
    data = 0
    while done < n:
        batch = frames[: min(len(frames), n - done)]
        for made, _ in journal.append_frames(batch, "t1"):
            done += 1
            del made
    rss, mem = growth.stop(n)
    for rec in journal.read(0, n):
        data += len(rec.data)
    return rss * 10_000, mem * 10_000, data / n * 10_000


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-"))
    tracemalloc.start()
    rows = []
    rss, mem = await idle_sessions(args.sessions, str(tmp / "data"))
    rows.append(["idle session (file log)", args.sessions, rss / KIB, mem / KIB])
    rss, mem = await idle_sessions(args.sessions, None)
    rows.append(["idle session (memory log)", args.sessions, rss / KIB, mem / KIB])
    rss, mem = await live_subscribers(args.subscribers)
    rows.append(["live subscriber (in-process)", args.subscribers, rss / KIB, mem / KIB])
    tracemalloc.stop()
    rss = await sse_subscribers(args.sse)
    rows.append(["SSE subscriber (in the server)", args.sse, rss / KIB, float("nan")])
    tracemalloc.start()
    rss, mem, bytes10k = log_entries(args.entries)
    tracemalloc.stop()
    rows.append(["10k log entries in memory", args.entries, rss / KIB, mem / KIB])
    table(
        "footprint (KiB per item; per 10k for log entries)",
        ["what", "items", "RSS KiB", "Python heap KiB"],
        rows,
    )
    note(f"10k fixture entries encode to {bytes10k / 1e6:.1f} MB of log lines; memory holds entry + bytes")
    note("RSS moves in pages and arenas (small items can read 0); the heap column is tracemalloc's count")
    note("agent processes are excluded (pool size 0, no turn run)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000, help="idle sessions (default 1000)")
    ap.add_argument("--subscribers", type=int, default=2000, help="in-process subscribers (default 2000)")
    ap.add_argument("--sse", type=int, default=500, help="SSE connections (default 500)")
    ap.add_argument("--entries", type=int, default=100_000, help="log entries (default 100k)")
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.subscribers, args.sse, args.entries = 100, 200, 50, 20_000
    trio.run(run, args)


if __name__ == "__main__":
    main()
