"""Fan-out across nodes: one turn, run by node A, read by ``--subscribers`` SSE clients on each of three
``turnstile serve`` processes sharing one Redis — vs all those clients on one node with a file log.

Every server is a child process (hypercorn's trio worker, pool size 0, ``bench/emitter.py`` as the agent,
which writes ``--events`` token deltas ``--interval-ms`` apart from an instant set after every client is
connected). Node A runs the turn and writes it to Redis; B and C serve it from the shared log: one tailer
per node (one ``XREAD BLOCK`` connection) feeds all of that node's clients. Per node: deliveries/s (events
received by its clients / (last read - first write)) and the delivery latency (agent write -> client read:
p50, p99, max). The reference is one node with a file log serving every client (3 x ``--subscribers``):
the same fan-out on the same cores. (On this 2-core machine three servers, Redis and the clients share
the cores, so more nodes cannot add capacity here; the figures show what the shared log costs.)

Target (a ratio in the same run): the followers' p99 (B, C) <= 2x the single file-backed node's p99.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import _common
import trio
from _clients import Received, http_json, sse_client
from _common import note, pct, table, target
from _servers import ServerProcess


async def one_turn(
    owner: ServerProcess, readers: list[ServerProcess], per_node: int, args: argparse.Namespace
) -> dict[int, list[Received]]:
    """Start a turn on ``owner``; ``per_node`` clients on each of ``readers`` read it. Clients by node."""
    outs = {i: [Received() for _ in range(per_node)] for i in range(len(readers))}
    total = per_node * len(readers)
    margin_s = 1.5 + 0.008 * total
    status, body = await http_json(owner.http, "POST", "/v1/sessions")
    assert status == 201, (status, body)
    sid = body["id"]
    start_ns = time.time_ns() + int(margin_s * 1e9)
    text = f"n={args.events} interval_us={int(args.interval_ms * 1000)} start_ns={start_ns}"
    status, body = await http_json(owner.http, "POST", f"/v1/sessions/{sid}/turns", {"prompt": text})
    assert status == 202, (status, body)
    path = f"/v1/sessions/{sid}/turns/{body['turn_id']}/events"
    sema = trio.Semaphore(64)
    with trio.fail_after(180 + margin_s + args.events * args.interval_ms / 1000):
        async with trio.open_nursery() as nursery:
            for i, server in enumerate(readers):
                for out in outs[i]:
                    await nursery.start(partial(sse_client, server.http, path, out, connected=sema))
            if time.time_ns() > start_ns:
                note(f"{total} clients took longer to connect than the start margin")
    for group in outs.values():
        for out in group:
            out.started_ns = start_ns
    return outs


def summary(name: str, outs: list[Received], events: int) -> tuple[list[object], float]:
    """A table row for these clients, and their p99 in ms."""
    got = sum(len(o.latencies) for o in outs)
    secs = (max(o.ended_ns for o in outs) - outs[0].started_ns) / 1e9
    lat = [x for o in outs for x in o.latencies]
    short = sum(1 for o in outs if len(o.latencies) < events)
    p99 = pct(lat, 99) / 1e6
    rate = got / secs if secs > 0 else 0.0
    return [name, len(outs), rate, pct(lat, 50) / 1e6, p99, pct(lat, 100) / 1e6, short], p99


async def run(args: argparse.Namespace) -> None:
    from tests.redisd import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-nodes-"))
    redis = RedisServer(tmp / "redis")
    redis.start()
    rows: list[list[object]] = []
    p99: dict[str, float] = {}
    try:
        for name in ("a", "b", "c", "file"):
            (tmp / name).mkdir()
        with (
            ServerProcess("turnstile", str(tmp / "a"), "lifecycle", redis.url, "a") as a,
            ServerProcess("turnstile", str(tmp / "b"), "lifecycle", redis.url, "b") as b,
            ServerProcess("turnstile", str(tmp / "c"), "lifecycle", redis.url, "c") as c,
            ServerProcess("turnstile", str(tmp / "file")) as single,
        ):
            shared = await one_turn(a, [a, b, c], args.subscribers, args)
            alone = await one_turn(single, [single], 3 * args.subscribers, args)
    finally:
        redis.stop()
    for i, name in enumerate(("A (runs the turn)", "B (follower)", "C (follower)")):
        row, p99[name[0]] = summary(name, shared[i], args.events)
        rows.append(row)
    everyone = [o for group in shared.values() for o in group]
    rows.append(summary("A+B+C", everyone, args.events)[0])
    ref, ref_p99 = summary("one node, file log", alone[0], args.events)
    rows.append(ref)
    table(
        f"fan-out of one turn across 3 nodes on one Redis, {args.subscribers} SSE clients per node "
        f"({args.events} deltas {args.interval_ms:g} ms apart)",
        ["node", "clients", "deliveries/s", "p50 ms", "p99 ms", "max ms", "short"],
        rows,
    )
    note("A runs the turn (writes to Redis, sends to its clients once written); B and C read it from Redis")
    note("(one XREAD BLOCK tailer per node feeds all of its clients); 'one node, file log': every client on")
    note("one file-backed node, the reference (the same fan-out on the same two cores)")
    note("'short' counts clients that missed deltas (0 expected)")
    worst_p99 = max(p99["B"], p99["C"])
    target(
        "fan-out across nodes: follower p99 vs one file-backed node", worst_p99 / ref_p99, 2.0, higher=False
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=300, help="SSE clients per node (default 300)")
    ap.add_argument("--events", type=int, default=200, help="deltas in the turn (default 200)")
    ap.add_argument("--interval-ms", type=float, default=5.0, help="ms between deltas (default 5)")
    ap.add_argument("--quick", action="store_true", help="20 clients per node, 40 deltas")
    args = ap.parse_args()
    if args.quick:
        args.subscribers, args.events = min(args.subscribers, 20), min(args.events, 40)
    _common.ROOT  # noqa: B018 (puts the repo root on sys.path for tests.redisd)
    trio.run(run, args)


if __name__ == "__main__":
    main()
