"""End-to-end latency: an agent writes a token delta at a known instant -> a client on loopback reads it.

The agent is ``bench/emitter.py``: each delta line carries ``time.time_ns()`` taken just before its
``write``; every client stamps its reads with the same clock. Per event, in one run, interleaved:

* ``pipe``  — the floor: the benchmark runs the emitter as its own child and reads its stdout (no server)
* ``sse``   — ``turnstile serve`` (a child process: hypercorn + the runtime, file log, pool size 0) runs
  the emitter as the session's agent; a lean SSE client reads the turn's ``/events``
* ``ws``    — the same server; a WebSocket client subscribes to the turn

at 1 and at ``--streams`` concurrent streams (one session, one agent process and one client each). Every
stream emits ``--events`` deltas ``--interval-ms`` apart, all starting at one instant set a little ahead
(so that every client is subscribed before anything is written); stream i is offset by i/N of an interval,
as independent streams are (``--aligned`` puts them in phase: bursts of N events at once). Prints p50 /
p99 / max per event and the excess over the pipe floor. Target: p99 <= 5 ms at 100 streams.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common
import trio
from _clients import Received, http_json, pipe_client, sse_client, ws_client
from _common import note, pct, table, target
from _servers import ServerProcess


def prompt(events: int, interval_ms: float, start_ns: int) -> str:
    return f"n={events} interval_us={int(interval_ms * 1000)} start_ns={start_ns}"


async def run_mode(
    mode: str, server: ServerProcess, streams: int, args: argparse.Namespace
) -> list[Received]:
    outs = [Received() for _ in range(streams)]
    margin_s = 0.5 + 0.04 * streams
    # Independent streams are not in phase: stream i starts i/N of an interval after stream 0 (with
    # --aligned every stream writes at the same instants, the worst case of a burst of N events).
    phase_ns = 0 if args.aligned else int(args.interval_ms * 1e6 / streams)

    def text(start_ns: int, i: int) -> str:
        return prompt(args.events, args.interval_ms, start_ns + i * phase_ns)

    async with trio.open_nursery() as nursery:
        if mode == "pipe":
            start_ns = time.time_ns() + int(margin_s * 1e9)
            for i, out in enumerate(outs):
                await nursery.start(pipe_client, _common.emitter_argv(), text(start_ns, i), out)
            return outs
        sids = []
        for _ in range(streams):
            status, body = await http_json(server.http, "POST", "/v1/sessions")
            assert status == 201, (status, body)
            sids.append(body["id"])
        start_ns = time.time_ns() + int(margin_s * 1e9)
        for i, (sid, out) in enumerate(zip(sids, outs, strict=True)):
            body = {"prompt": text(start_ns, i)}
            status, body = await http_json(server.http, "POST", f"/v1/sessions/{sid}/turns", body)
            assert status == 202, (status, body)
            tid = body["turn_id"]
            if mode == "sse":
                path = f"/v1/sessions/{sid}/turns/{tid}/events"
                await nursery.start(sse_client, server.http, path, out)
            else:
                assert server.ws is not None
                await nursery.start(ws_client, server.ws, sid, tid, out)
    return outs


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="turnstile-bench-"))
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    modes = ["pipe", "sse", "ws", "sse, fsync never"]
    counts = [1, args.streams]
    lat: dict[tuple[str, int], list[int]] = {(m, n): [] for m in modes for n in counts}
    late: dict[tuple[str, int], int] = dict.fromkeys(lat, 0)
    with (
        ServerProcess("turnstile", str(tmp / "a")) as server,
        ServerProcess("turnstile", str(tmp / "b"), "never") as no_fsync,
    ):
        for _ in range(args.repeat):
            for n in counts:
                for mode in modes:  # interleaved
                    with trio.fail_after(120 + args.events * args.interval_ms / 1000):
                        if mode.endswith("never"):
                            outs = await run_mode("sse", no_fsync, n, args)
                        else:
                            outs = await run_mode(mode, server, n, args)
                    for out in outs:
                        lat[(mode, n)].extend(out.latencies)
                        if len(out.latencies) < args.events:
                            late[(mode, n)] += 1
    rows = []
    for n in counts:
        floor99 = pct(lat[("pipe", n)], 99) / 1e6
        floor50 = pct(lat[("pipe", n)], 50) / 1e6
        for mode in modes:
            values = lat[(mode, n)]
            p50, p99, top = pct(values, 50) / 1e6, pct(values, 99) / 1e6, pct(values, 100) / 1e6
            rows.append([mode, n, len(values), p50, p99, top, p50 - floor50, p99 - floor99, late[(mode, n)]])
    table(
        f"latency per event, ms ({args.events} deltas {args.interval_ms:g} ms apart per stream, "
        f"{'in phase' if args.aligned else 'phases spread'}, {args.repeat} rounds)",
        ["path", "streams", "events", "p50", "p99", "max", "p50 over pipe", "p99 over pipe", "short streams"],
        rows,
    )
    note("pipe = the emitter read over a plain pipe by this process (the floor)")
    note("sse / ws = through turnstile serve (a child process; file log, fsync on lifecycle entries)")
    note("'short streams' counts clients that missed deltas (0 expected)")
    note(
        "'sse, fsync never': the same server with fsync=never (the default fsyncs lifecycle entries in a "
        "worker thread)"
    )
    for mode in ("sse", "ws"):
        target(
            f"latency: {mode} p99 at {args.streams} streams",
            pct(lat[(mode, args.streams)], 99) / 1e6,
            5.0,
            unit=" ms",
            higher=False,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=100, help="concurrent streams (default 100)")
    ap.add_argument("--events", type=int, default=150, help="deltas per stream (default 150)")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="ms between deltas (default 20)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--aligned", action="store_true", help="every stream writes at the same instants")
    ap.add_argument("--quick", action="store_true", help="10 streams, 30 deltas, 1 round (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.streams, args.events, args.repeat = min(args.streams, 10), min(args.events, 30), 1
    trio.run(run, args)


if __name__ == "__main__":
    main()
