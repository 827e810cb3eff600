"""The shared log: Redis Streams vs the file store, end to end, at 1 and ``--streams`` concurrent streams.

Two ``turnstile serve`` processes (hypercorn + the runtime, pool size 0, ``bench/emitter.py`` as the
agent): one keeps its logs in files (the embedded default: one write per batch, fsync of lifecycle
entries in a worker thread), the other in a Redis on loopback (``redis-server`` started here, persistence
off: the write-behind journal, one append script per batch, sent to subscribers once Redis answered).
Per store and stream count, interleaved, lean SSE clients in this process read every turn:

* ``paced``   — ``--events`` deltas ``--interval-ms`` apart per stream: per-event latency (the agent's
  write -> the client's read) p50 / p99 / max;
* ``flat out`` — ``--burst`` deltas per stream written as fast as the pipe takes them: events/s delivered
  (events received by every client / (last read - first write)).

Targets (ratios, Redis / file, measured in the same run): events/s at 100 streams >= 0.33x (Redis and its
client take CPU on the same two cores); p99 at 100 streams <= 2x the file store's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import _common
import trio
from _clients import Received, http_json, sse_client
from _common import note, pct, table, target
from _servers import ServerProcess


async def one_run(server: ServerProcess, streams: int, events: int, interval_ms: float) -> list[Received]:
    outs = [Received() for _ in range(streams)]
    sids = []
    for _ in range(streams):
        status, body = await http_json(server.http, "POST", "/v1/sessions")
        assert status == 201, (status, body)
        sids.append(body["id"])
    margin_s = 0.5 + 0.04 * streams
    start_ns = time.time_ns() + int(margin_s * 1e9)
    phase_ns = int(interval_ms * 1e6 / streams) if interval_ms else 0
    sema = trio.Semaphore(32)
    with trio.fail_after(120 + events * interval_ms / 1000 + margin_s):
        async with trio.open_nursery() as nursery:
            for i, (sid, out) in enumerate(zip(sids, outs, strict=True)):
                text = f"n={events} interval_us={int(interval_ms * 1000)} start_ns={start_ns + i * phase_ns}"
                status, body = await http_json(
                    server.http, "POST", f"/v1/sessions/{sid}/turns", {"prompt": text}
                )
                assert status == 202, (status, body)
                path = f"/v1/sessions/{sid}/turns/{body['turn_id']}/events"
                await nursery.start(partial(sse_client, server.http, path, out, connected=sema))
    for out in outs:
        out.started_ns = start_ns
    return outs


async def run(args: argparse.Namespace) -> None:
    from tests.redisd import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-redis-"))
    redis = RedisServer(tmp / "redis")
    redis.start()
    stores = ["file", "redis"]
    counts = [1, args.streams]
    lat: dict[tuple[str, int], list[int]] = {(s, n): [] for s in stores for n in counts}
    rate: dict[tuple[str, int], list[float]] = {key: [] for key in lat}
    short: dict[tuple[str, int], int] = dict.fromkeys(lat, 0)
    try:
        (tmp / "f").mkdir()
        (tmp / "r").mkdir()
        with (
            ServerProcess("turnstile", str(tmp / "f")) as on_file,
            ServerProcess("turnstile", str(tmp / "r"), "lifecycle", redis.url, "bench") as on_redis,
        ):
            servers = {"file": on_file, "redis": on_redis}
            for _ in range(args.repeat):
                for n in counts:
                    for store in stores:  # interleaved
                        outs = await one_run(servers[store], n, args.events, args.interval_ms)
                        for out in outs:
                            lat[(store, n)].extend(out.latencies)
                            short[(store, n)] += len(out.latencies) < args.events
                        burst = max(args.burst // n, 50)
                        outs = await one_run(servers[store], n, burst, 0.0)
                        got = sum(len(o.latencies) for o in outs)
                        secs = (max(o.ended_ns for o in outs) - outs[0].started_ns) / 1e9
                        rate[(store, n)].append(got / secs if secs > 0 else 0.0)
                        short[(store, n)] += sum(len(o.latencies) < burst for o in outs)
    finally:
        redis.stop()
    rows = []
    for n in counts:
        base_rate = statistics.median(rate[("file", n)])
        base_p99 = pct(lat[("file", n)], 99)
        for store in stores:
            values = lat[(store, n)]
            r = statistics.median(rate[(store, n)])
            rows.append(
                [
                    store,
                    n,
                    r,
                    r / base_rate if base_rate else float("nan"),
                    pct(values, 50) / 1e6,
                    pct(values, 99) / 1e6,
                    pct(values, 100) / 1e6,
                    pct(values, 99) / base_p99 if base_p99 else float("nan"),
                    short[(store, n)],
                ]
            )
    table(
        f"Redis Streams vs file log, end to end (paced: {args.events} deltas {args.interval_ms:g} ms apart; "
        f"flat out: {args.burst} deltas per round; median of {args.repeat})",
        ["store", "streams", "events/s", "vs file", "p50 ms", "p99 ms", "max ms", "p99 vs file", "short"],
        rows,
    )
    note("events/s: flat-out turns, every delta received by its SSE client / (last read - first write)")
    note("p50/p99/max: paced turns, per delta, agent write -> SSE client read (same clock)")
    note("redis: redis-server 7 on loopback, persistence off; one append script per batch (write-behind)")
    note("'short' counts clients that missed deltas (0 expected)")
    top = args.streams
    target(
        f"redis store: events/s vs file at {top} streams",
        statistics.median(rate[("redis", top)]) / statistics.median(rate[("file", top)]),
        0.33,
    )
    target(
        f"redis store: p99 vs file at {top} streams",
        pct(lat[("redis", top)], 99) / pct(lat[("file", top)], 99),
        2.0,
        higher=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=100, help="concurrent streams (default 100)")
    ap.add_argument("--events", type=int, default=100, help="paced deltas per stream (default 100)")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="ms between paced deltas (default 20)")
    ap.add_argument("--burst", type=int, default=20000, help="flat-out deltas per round, over all streams")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--quick", action="store_true", help="10 streams, 20 deltas, 2000 flat out, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.streams, args.events, args.burst, args.repeat = min(args.streams, 10), 20, 2000, 1
    _common.ROOT  # noqa: B018 (puts the repo root on sys.path for tests.redisd)
    trio.run(run, args)


if __name__ == "__main__":
    main()
