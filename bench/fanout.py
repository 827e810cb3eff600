"""Fan-out: one turn's events to 1, 100 and 1,000 SSE subscribers, vs a plain sse-starlette endpoint.

Both servers run as child processes (hypercorn's trio worker) and run the same agent, ``bench/emitter.py``,
which writes ``--events`` token deltas ``--interval-ms`` apart, starting at one instant set after every
subscriber is connected:

* ``turnstile``      — ``turnstile serve``; every subscriber GETs the turn's ``/events`` (log-backed,
  resumable)
* ``sse-starlette``  — what a user would likely write instead: read the agent's stdout lines and put each
  one into every subscriber's memory stream, sent by ``sse_starlette.EventSourceResponse`` (one event per
  send; no log, no resume)

The subscribers are lean SSE clients (trio sockets + h11) in this process. Per run: deliveries/s (events
received by all subscribers / seconds from the first write to the last read) and the spread of delivery
latency (agent write -> subscriber read: p50, p99, max). Runs are interleaved; figures are medians over
``--repeat`` rounds. Target: turnstile ahead of sse-starlette at 1,000 subscribers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import _common  # noqa: F401  (puts the repo root on sys.path)
import trio
from _clients import Received, http_json, sse_client
from _common import note, pct, table, target
from _servers import ServerProcess


async def one_run(
    kind: str, server: ServerProcess, subscribers: int, args: argparse.Namespace
) -> tuple[float, list[int], int]:
    """(deliveries/s, every delivery's latency in ns, subscribers that missed events)."""
    outs = [Received() for _ in range(subscribers)]
    margin_s = 1.0 + 0.008 * subscribers
    start_ns = time.time_ns() + int(margin_s * 1e9)
    text = f"n={args.events} interval_us={int(args.interval_ms * 1000)} start_ns={start_ns}"
    if kind == "turnstile":
        status, body = await http_json(server.http, "POST", "/v1/sessions")
        assert status == 201, (status, body)
        sid = body["id"]
        status, body = await http_json(server.http, "POST", f"/v1/sessions/{sid}/turns", {"prompt": text})
        assert status == 202, (status, body)
        path = f"/v1/sessions/{sid}/turns/{body['turn_id']}/events"
    else:
        status, body = await http_json(server.http, "POST", f"/start?prompt={quote(text)}")
        assert status == 202, (status, body)
        path = "/events"
    with trio.fail_after(120 + margin_s + args.events * args.interval_ms / 1000):
        async with trio.open_nursery() as nursery:
            for out in outs:  # one at a time: each is live (headers received) before the next connects
                await nursery.start(sse_client, server.http, path, out)
            if time.time_ns() > start_ns:
                note(f"{kind}: {subscribers} subscribers took longer to connect than the start margin")
    got = sum(len(o.latencies) for o in outs)
    last = max(o.ended_ns for o in outs)
    secs = (last - start_ns) / 1e9
    lat = [x for o in outs for x in o.latencies]
    missed = sum(1 for o in outs if len(o.latencies) < args.events)
    return got / secs if secs > 0 else 0.0, lat, missed


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-"))
    kinds = ["turnstile", "sse-starlette"]
    rates: dict[tuple[str, int], list[float]] = {(k, s): [] for k in kinds for s in args.subscribers}
    lats: dict[tuple[str, int], list[int]] = {key: [] for key in rates}
    missed: dict[tuple[str, int], int] = dict.fromkeys(rates, 0)
    with ServerProcess("turnstile", str(tmp)) as ours, ServerProcess("sse-starlette") as alt:
        servers = {"turnstile": ours, "sse-starlette": alt}
        for _ in range(args.repeat):
            for subs in args.subscribers:
                for kind in kinds:  # interleaved
                    rate, lat, miss = await one_run(kind, servers[kind], subs, args)
                    rates[(kind, subs)].append(rate)
                    lats[(kind, subs)].extend(lat)
                    missed[(kind, subs)] += miss
    rows = []
    for subs in args.subscribers:
        for kind in kinds:
            key = (kind, subs)
            rate = statistics.median(rates[key])
            base = statistics.median(rates[("sse-starlette", subs)])
            lat = lats[key]
            rows.append(
                [
                    kind,
                    subs,
                    rate,
                    rate / base if base else float("nan"),
                    pct(lat, 50) / 1e6,
                    pct(lat, 99) / 1e6,
                    pct(lat, 100) / 1e6,
                    missed[key],
                ]
            )
    table(
        f"fan-out of one turn ({args.events} deltas {args.interval_ms:g} ms apart; median of {args.repeat})",
        ["server", "subscribers", "deliveries/s", "vs sse-starlette", "p50 ms", "p99 ms", "max ms", "short"],
        rows,
    )
    note("deliveries/s = events received by all subscribers / (last read - first write)")
    note("'short' counts subscribers that missed events (0 expected)")
    top = max(args.subscribers)
    ours_rate = statistics.median(rates[("turnstile", top)])
    alt_rate = statistics.median(rates[("sse-starlette", top)])
    target(f"fan-out: turnstile vs sse-starlette at {top} subscribers", ours_rate / alt_rate, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--subscribers", type=int, nargs="+", default=[1, 100, 1000], help="subscriber counts (1 100 1000)"
    )
    ap.add_argument("--events", type=int, default=200, help="deltas in the turn (default 200)")
    ap.add_argument("--interval-ms", type=float, default=2.0, help="ms between deltas (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--quick", action="store_true", help="1 and 20 subscribers, 40 deltas, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.subscribers, args.events, args.repeat = [1, 20], min(args.events, 40), 1
    trio.run(run, args)


if __name__ == "__main__":
    main()
