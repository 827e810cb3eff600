"""Load: many sessions and subscribers, a stalled subscriber: nothing lost, every stream ends, memory bounded.

Three scenarios against ``turnstile serve`` run as a child process (so its memory is measured apart from
the clients'), with lean loopback SSE clients (trio sockets + h11; no httpx on the hot path):

``sessions``  N concurrent sessions on the fast simulator (``--speed 0``), S session-level SSE
              subscribers each (opened before the first turn), T turns each one after another. Every
              subscriber must receive every entry of its session's log, in order, each once, up to the
              last turn's ``stream.ended``; every turn must end exactly once. Reports the server's RSS:
              per session, per subscriber, and after each round of turns (bounded = no growth beyond
              the logs' own indexes).
``fanout``    one turn, K subscribers (all live before it starts; the simulator paced at 10 ms a token):
              all must receive the same sequence; reports the delivery latency (client read minus the
              entry's ``ts``) and its spread across subscribers per entry.
``stall``     a subscriber stops reading and a filler turn (20,000 deltas, ~6 MB) fills its socket, so the
              server's writes to it block (its unsent bytes are read from /proc/net/tcp); then K-1 live
              subscribers get a paced probe turn. Their latency must be unchanged — reported next to the
              same run without the staller — and the staller must still get every entry once it reads.

Run ``python bench/load.py`` (the full sizes: 200 sessions x 3 subscribers x 3 turns, 1,000 subscribers,
a stalled subscriber among 100) or ``--quick``; ``tests/reliability/test_load.py`` runs small sizes of the
same functions in CI. Prints Markdown tables and ends with ``held:`` lines; never asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import h11  # noqa: E402
import trio  # noqa: E402

from bench._clients import http_json as http  # noqa: E402
from tests.procs import descendants, rss_bytes  # noqa: E402
from tests.reliability.clients import until  # noqa: E402
from tests.reliability.servers import ServerProcess, wait_healthy  # noqa: E402

__all__ = ["Reader", "fanout", "http", "raise_fd_limit", "read_sse", "sessions", "stall"]

_TS = re.compile(rb'"ts":([0-9.eE+-]+)')
_CONNECT = 64  # connections opened at once (listen backlogs are small)


# --- a lean SSE client --------------------------------------------------------------------------------------


@dataclass
class Reader:
    """What one subscriber received: seqs in arrival order, arrival times, the entries' own times."""

    seqs: list[int] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    ends: int = 0
    live_at: float = 0.0  # when the first response's headers arrived
    connections: int = 0
    status: int = 0
    dropped: int = 0  # responses that ended (or broke) before the reader was done
    errors: list[str] = field(default_factory=list)

    def latencies(self) -> list[float]:
        """Delivery latency of every entry appended while this subscriber was live (not its history)."""
        return [a - t for a, t in zip(self.arrived, self.ts, strict=True) if t >= self.live_at > 0]


def _parse(block: bytes, r: Reader, now: float) -> bool:
    """Take one SSE block; True when it was a ``stream.ended`` event."""
    seq = -1
    ended = False
    ts = 0.0
    for line in block.split(b"\n"):
        if line.startswith(b"id: "):
            seq = int(line[4:])
        elif line.startswith(b"event: "):
            ended = line[7:] == b"stream.ended"
        elif line.startswith(b"data: "):
            m = _TS.search(line, 0, 200)
            if m:
                ts = float(m.group(1))
    if seq < 0:
        return False
    r.seqs.append(seq)
    r.arrived.append(now)
    r.ts.append(ts)
    return ended


async def read_sse(
    port: int,
    path: str,
    r: Reader,
    *,
    want_ends: int = 1,
    stall: trio.Event | None = None,
    disconnect_after: int | None = None,
    after: int = 0,
    connect_limit: trio.Semaphore | None = None,
    deadline: float = 300.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> Reader:
    """GET an SSE stream until ``want_ends`` ``stream.ended`` events have arrived, resuming with
    ``Last-Event-ID`` whenever the response ends early. ``task_status.started()`` fires when the first
    response's headers arrive (the subscription is live). ``stall``: after the first event, stop reading
    until it is set (once the kernel's buffers for that connection are full — the server's send queue
    and this reader's receive buffer — the server's writes to it block). ``disconnect_after=N``: drop the
    connection once after N events, then resume. ``after``: start after this seq (the first request's
    ``Last-Event-ID``)."""
    started = False
    end_at = trio.current_time() + deadline
    try:
        while r.ends < want_ends and trio.current_time() < end_at:
            headers = [("host", "127.0.0.1"), ("accept", "text/event-stream")]
            last = r.seqs[-1] if r.seqs else after
            if last:
                headers.append(("last-event-id", str(last)))
            try:
                if connect_limit is not None:
                    async with connect_limit:
                        stream = await trio.open_tcp_stream("127.0.0.1", port)
                else:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError as exc:
                r.errors.append(f"connect: {exc}")
                await trio.sleep(0.1)
                continue
            r.connections += 1
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                request = conn.send(h11.Request(method="GET", target=path, headers=headers))
                await stream.send_all(request + conn.send(h11.EndOfMessage()))
                buf = b""
                now = time.time()
                done = False
                try:
                    while not done:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            data = await stream.receive_some(262144)
                            now = time.time()
                            conn.receive_data(data)
                            continue
                        if isinstance(event, h11.Response):
                            r.status = event.status_code
                            if not started:
                                started = True
                                r.live_at = time.time()
                                task_status.started()
                            if event.status_code == 204:
                                return r
                            if event.status_code != 200:
                                r.errors.append(f"status {event.status_code}")
                                return r
                        elif isinstance(event, h11.Data):
                            buf += bytes(event.data)
                            while (i := buf.find(b"\n\n")) >= 0:
                                block, buf = buf[:i], buf[i + 2 :]
                                if _parse(block, r, now):
                                    r.ends += 1
                                    if r.ends >= want_ends:
                                        done = True
                                        break
                                if disconnect_after is not None and len(r.seqs) >= disconnect_after:
                                    disconnect_after = None
                                    done = True  # drop this connection; the loop resumes
                                    break
                            if stall is not None and r.seqs and not stall.is_set():
                                with trio.move_on_at(end_at):
                                    await stall.wait()
                        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                            break
                except (h11.RemoteProtocolError, trio.BrokenResourceError, OSError):
                    pass
                if not done:
                    r.dropped += 1
            if r.ends < want_ends:
                await trio.sleep(0.05)
        if r.ends < want_ends:
            r.errors.append(f"only {r.ends} of {want_ends} stream.ended within {deadline}s")
    finally:
        if not started:
            task_status.started()
    return r


async def log_of(port: int, sid: str) -> list[dict[str, Any]]:
    status, body = await http(port, "GET", f"/v1/sessions/{sid}/log")
    if status != 200:
        raise RuntimeError(f"GET log of {sid}: {status}")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


# --- helpers ------------------------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _agents(pid: int) -> tuple[int, int]:
    """(number, total RSS) of the server's agent processes."""
    kids = [p for p, (state, _cmd) in descendants(pid).items() if state != "Z"]
    return len(kids), sum(rss_bytes(p) for p in kids)


def expected_seqs(entries: list[dict[str, Any]], ends: int) -> list[int]:
    """The seqs a session subscriber from 0 must get: 1.. up to the ``ends``-th ``stream.ended``."""
    seen = 0
    for e in entries:
        if e.get("kind") == "stream.ended":
            seen += 1
            if seen == ends:
                return list(range(1, e["seq"] + 1))
    return [e["seq"] for e in entries]


def check_log(entries: list[dict[str, Any]]) -> list[str]:
    problems = []
    seqs = [e["seq"] for e in entries]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append("log seqs are not 1..N")
    requested = [e["stream"] for e in entries if e.get("kind") == "turn.requested"]
    ended = [e["stream"] for e in entries if e.get("kind") == "stream.ended"]
    for s in requested:
        if ended.count(s) != 1:
            problems.append(f"stream {s} has {ended.count(s)} stream.ended")
    return problems


@dataclass
class Server:
    """``turnstile serve`` for a scenario, in a temporary data directory."""

    pool_size: int = 2
    speed: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="turnstile-load-")
        self.proc = ServerProcess(
            data_dir=Path(self._tmp.name) / "data", pool_size=self.pool_size, env=self.env, speed=self.speed
        )

    async def __aenter__(self) -> Server:
        self.proc.start()
        await wait_healthy(self.proc.base, 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        code = self.proc.stop()
        self.exit_code = code
        self._tmp.cleanup()

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid


# --- scenario: many sessions --------------------------------------------------------------------------------


async def sessions(
    n_sessions: int = 200, subs: int = 3, turns: int = 3, tokens: int = 40, pool_size: int = 2
) -> dict[str, Any]:
    """N sessions x S subscribers x T turns on the fast simulator; see the module docstring."""
    raise_fd_limit()
    result: dict[str, Any] = {"sessions": n_sessions, "subscribers": n_sessions * subs, "turns": turns}
    prompt = f"load [[sim tokens={tokens}]]"
    async with Server(pool_size=pool_size) as srv:
        port = srv.port
        await trio.sleep(1.0)  # let the pool warm
        rss0 = rss_bytes(srv.pid)
        sids: list[str] = []
        limit = trio.Semaphore(_CONNECT)

        async def create() -> None:
            async with limit:
                status, body = await http(port, "POST", "/v1/sessions")
            if status != 201:
                raise RuntimeError(f"create session: {status} {body}")
            sids.append(body["id"])

        t0 = time.monotonic()
        async with trio.open_nursery() as n:
            for _ in range(n_sessions):
                n.start_soon(create)
        rss_sessions = rss_bytes(srv.pid)
        readers: dict[str, list[Reader]] = {sid: [Reader() for _ in range(subs)] for sid in sids}
        round_rss: list[int] = []
        samples: list[int] = []

        async def sample(stop: trio.Event) -> None:
            while not stop.is_set():
                samples.append(rss_bytes(srv.pid))
                with trio.move_on_after(0.25):
                    await stop.wait()

        async def drive(sid: str, k: int) -> None:
            """Turn ``k`` of session ``sid``; returns once its first subscriber has its end."""
            watch = readers[sid][0]
            async with limit:
                status, body = await http(port, "POST", f"/v1/sessions/{sid}/turns", {"prompt": prompt})
            if status != 202:
                raise RuntimeError(f"turn on {sid}: {status} {body}")
            with trio.fail_after(120):
                await until(lambda: watch.ends >= k or bool(watch.errors), 0.01)

        stop = trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(sample, stop)
            async with trio.open_nursery() as subs_n:
                for sid in sids:
                    for r in readers[sid]:
                        await subs_n.start(
                            lambda r=r, sid=sid, task_status=trio.TASK_STATUS_IGNORED: read_sse(
                                port,
                                f"/v1/sessions/{sid}/events",
                                r,
                                want_ends=turns,
                                connect_limit=limit,
                                task_status=task_status,
                            )
                        )
                await trio.sleep(0.5)
                rss_subs = rss_bytes(srv.pid)
                t_turns = time.monotonic()
                for k in range(1, turns + 1):
                    # Round k: every session runs its k-th turn at once.
                    async with trio.open_nursery() as drivers:
                        for sid in sids:
                            drivers.start_soon(drive, sid, k)
                    round_rss.append(rss_bytes(srv.pid))
                turns_s = time.monotonic() - t_turns
            stop.set()
        await trio.sleep(0.5)
        rss_after = rss_bytes(srv.pid)
        agents, agents_rss = _agents(srv.pid)
        problems: list[str] = []
        delivered = 0
        lat: list[float] = []
        entries_total = 0
        for sid in sids:
            entries = await log_of(port, sid)
            entries_total += len(entries)
            problems += [f"{sid}: {p}" for p in check_log(entries)]
            want = expected_seqs(entries, turns)
            for i, r in enumerate(readers[sid]):
                delivered += len(r.seqs)
                lat += r.latencies()
                if r.seqs != want:
                    problems.append(f"{sid} subscriber {i}: {len(r.seqs)} entries, log has {len(want)}")
                problems += [f"{sid} subscriber {i}: {e}" for e in r.errors]
        result.update(
            {
                "create_s": round(t_turns - t0, 2),
                "turns_s": round(turns_s, 2),
                "entries": entries_total,
                "deliveries": delivered,
                "deliveries_per_s": round(delivered / turns_s) if turns_s else None,
                "latency_p50_ms": _ms(pct(lat, 50)),
                "latency_p99_ms": _ms(pct(lat, 99)),
                "rss_start_mb": round(rss0 / 1e6, 1),
                "rss_peak_mb": round(max(samples or [0]) / 1e6, 1),
                "rss_end_mb": round(rss_after / 1e6, 1),
                "rss_after_each_round_mb": [round(x / 1e6, 1) for x in round_rss],
                "per_session_kb": round((rss_sessions - rss0) / n_sessions / 1024, 1),
                "per_session_after_turns_kb": round((rss_after - rss0) / n_sessions / 1024, 1),
                "per_subscriber_kb": round((rss_subs - rss_sessions) / (n_sessions * subs) / 1024, 1),
                "per_entry_bytes": round((rss_after - rss_sessions) / max(1, entries_total), 1),
                "agents_alive": agents,
                "agents_rss_mb": round(agents_rss / 1e6, 1),
                "problems": problems,
            }
        )
    result["server_exit"] = srv.exit_code
    return result


# --- scenario: one turn, many subscribers -------------------------------------------------------------------


async def _one_turn(
    srv: Server, k: int, prompt: str, *, stalled: int = 0
) -> tuple[list[Reader], list[Reader], list[dict[str, Any]]]:
    """K session subscribers (``stalled`` of them stop reading), live before one turn; waits for all."""
    port = srv.port
    status, body = await http(port, "POST", "/v1/sessions")
    sid = body["id"]
    limit = trio.Semaphore(_CONNECT)
    release = trio.Event()
    normal = [Reader() for _ in range(k - stalled)]
    stallers = [Reader() for _ in range(stalled)]
    async with trio.open_nursery() as n:
        for r in normal:
            await n.start(
                lambda r=r, task_status=trio.TASK_STATUS_IGNORED: read_sse(
                    port, f"/v1/sessions/{sid}/events", r, connect_limit=limit, task_status=task_status
                )
            )
        for r in stallers:
            await n.start(
                lambda r=r, task_status=trio.TASK_STATUS_IGNORED: read_sse(
                    port,
                    f"/v1/sessions/{sid}/events",
                    r,
                    stall=release,
                    connect_limit=limit,
                    task_status=task_status,
                )
            )
        status, body = await http(port, "POST", f"/v1/sessions/{sid}/turns", {"prompt": prompt})
        if status != 202:
            raise RuntimeError(f"turn: {status} {body}")
        with trio.fail_after(300):
            await until(lambda: all(r.ends >= 1 or r.errors for r in normal), 0.05)
        release.set()
    return normal, stallers, await log_of(port, sid)


def _same_sequence(readers: list[Reader], entries: list[dict[str, Any]]) -> list[str]:
    want = expected_seqs(entries, 1)
    problems = check_log(entries)
    bad = [i for i, r in enumerate(readers) if r.seqs != want]
    if bad:
        problems.append(f"{len(bad)} of {len(readers)} subscribers did not get the log's {len(want)} entries")
    for r in readers:
        problems += r.errors[:1]
    return problems


def _latency_figures(readers: list[Reader]) -> dict[str, Any]:
    lat = [x for r in readers for x in r.latencies()]
    # Spread: per entry appended once every subscriber was live, last arrival minus first.
    live = max((r.live_at for r in readers), default=0.0)
    by_seq: dict[int, list[float]] = {}
    for r in readers:
        for s, a, t in zip(r.seqs, r.arrived, r.ts, strict=True):
            if t >= live:
                by_seq.setdefault(s, []).append(a)
    spread = [max(v) - min(v) for v in by_seq.values() if len(v) > 1]
    return {
        "latency_p50_ms": _ms(pct(lat, 50)),
        "latency_p99_ms": _ms(pct(lat, 99)),
        "latency_max_ms": _ms(max(lat) if lat else float("nan")),
        "spread_p50_ms": _ms(pct(spread, 50)),
        "spread_p99_ms": _ms(pct(spread, 99)),
        "spread_max_ms": _ms(max(spread) if spread else float("nan")),
    }


async def fanout(subscribers: int = 1000, tokens: int = 100, token_ms: int = 10) -> dict[str, Any]:
    """One paced turn to K live subscribers: same sequence for all; latency and its spread."""
    raise_fd_limit()
    prompt = f"fanout [[sim tokens={tokens} token_ms={token_ms} ttft_ms=50]]"
    async with Server(pool_size=1, speed=1.0) as srv:
        rss0 = rss_bytes(srv.pid)
        t0 = time.monotonic()
        readers, _, entries = await _one_turn(srv, subscribers, prompt)
        elapsed = time.monotonic() - t0
        result: dict[str, Any] = {
            "subscribers": subscribers,
            "entries": len(expected_seqs(entries, 1)),
            "deliveries": sum(len(r.seqs) for r in readers),
            "seconds": round(elapsed, 2),
            "rss_delta_mb": round((rss_bytes(srv.pid) - rss0) / 1e6, 1),
            **_latency_figures(readers),
            "problems": _same_sequence(readers, entries),
        }
    result["server_exit"] = srv.exit_code
    return result


def _send_queue(port: int) -> int:
    """The largest unsent byte count (tx_queue) of the server's sockets on ``port`` (/proc/net/tcp*)."""
    worst = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                worst = max(worst, int(fields[4].split(":")[0], 16))
    return worst


async def _probe_run(
    srv: Server, k: int, filler: str, probe: str, *, with_staller: bool
) -> tuple[list[Reader], Reader | None, list[int], dict[str, Any]]:
    """A session; optionally a subscriber that stops reading, then a filler turn big enough to block the
    server's writes to it; then K live subscribers and a paced probe turn, whose latency is measured."""
    port = srv.port
    _status, body = await http(port, "POST", "/v1/sessions")
    sid = body["id"]
    limit = trio.Semaphore(_CONNECT)
    release = trio.Event()
    staller = Reader() if with_staller else None
    normal = [Reader() for _ in range(k)]
    facts: dict[str, Any] = {}

    async def turn(prompt: str) -> str:
        status, body = await http(port, "POST", f"/v1/sessions/{sid}/turns", {"prompt": prompt})
        if status != 202:
            raise RuntimeError(f"turn: {status} {body}")
        tid: str = body["turn_id"]
        with trio.fail_after(300):
            while True:
                _s, t = await http(port, "GET", f"/v1/sessions/{sid}/turns/{tid}")
                if t.get("ended"):
                    return tid
                await trio.sleep(0.05)

    async with trio.open_nursery() as n:
        path = f"/v1/sessions/{sid}/events"
        if staller is not None:
            await n.start(
                lambda task_status=trio.TASK_STATUS_IGNORED: read_sse(
                    port, path, staller, stall=release, task_status=task_status
                )
            )
        await turn(filler)
        _s, info = await http(port, "GET", f"/v1/sessions/{sid}")
        after = info["last_seq"]
        facts["send_queue_before_probe"] = _send_queue(port)
        for r in normal:
            await n.start(
                lambda r=r, task_status=trio.TASK_STATUS_IGNORED: read_sse(
                    port, path, r, after=after, connect_limit=limit, task_status=task_status
                )
            )
        t0 = time.monotonic()
        probe_tid = await turn(probe)
        with trio.fail_after(120):
            await until(lambda: all(r.ends >= 1 or r.errors for r in normal), 0.02)
        facts["probe_s"] = round(time.monotonic() - t0, 2)
        facts["send_queue_after_probe"] = _send_queue(port)
        release.set()
    entries = await log_of(port, sid)
    end = next(e["seq"] for e in entries if e.get("kind") == "stream.ended" and e.get("stream") == probe_tid)
    want = [e["seq"] for e in entries if after < e["seq"] <= end]
    facts["staller_want"] = expected_seqs(entries, 1)  # from the start up to the filler's end
    return normal, staller, want, facts


async def stall(
    subscribers: int = 100, filler_tokens: int = 20000, tokens: int = 100, token_ms: int = 10
) -> dict[str, Any]:
    """K-1 subscribers' latency on a paced turn, with and without one subscriber stalled (its socket full:
    the server's writes to it block) — see the module docstring."""
    raise_fd_limit()
    filler = f"filler [[sim tokens={filler_tokens} token_ms=0 ttft_ms=0]]"
    probe = f"probe [[sim tokens={tokens} token_ms={token_ms} ttft_ms=50]]"
    result: dict[str, Any] = {"subscribers": subscribers, "filler_tokens": filler_tokens}
    # A send timeout longer than the probe: the staller stays stalled (not yet dropped) while it runs.
    async with Server(pool_size=1, speed=1.0, env={"TURNSTILE_SEND_TIMEOUT_S": "30"}) as srv:
        base, _none, base_want, base_facts = await _probe_run(
            srv, subscribers - 1, filler, probe, with_staller=False
        )
        others, staller, want, facts = await _probe_run(
            srv, subscribers - 1, filler, probe, with_staller=True
        )
    problems = []
    for name, readers, expected in (("without", base, base_want), ("with", others, want)):
        bad = [r for r in readers if r.seqs != expected or r.errors]
        if bad:
            problems.append(
                f"{name} a staller: {len(bad)} of {len(readers)} subscribers did not get the turn"
            )
    assert staller is not None
    if staller.seqs != facts["staller_want"] or staller.errors:
        problems.append(
            f"the stalled subscriber got {len(staller.seqs)} of {len(facts['staller_want'])} entries once it "
            f"read again: {staller.errors[:1]}"
        )
    if facts["send_queue_before_probe"] == 0:
        problems.append("the staller's socket was not full: the filler turn was too small to block a write")
    b, s = _latency_figures(base), _latency_figures(others)
    result.update(
        {
            "probe_entries": len(want),
            "staller_send_queue_kb": round(facts["send_queue_before_probe"] / 1024),
            "probe_s_without": base_facts["probe_s"],
            "probe_s_with": facts["probe_s"],
            "p50_ms_without": b["latency_p50_ms"],
            "p50_ms_with": s["latency_p50_ms"],
            "p99_ms_without": b["latency_p99_ms"],
            "p99_ms_with": s["latency_p99_ms"],
            "staller_connections": staller.connections,
            "problems": problems,
            "server_exit": srv.exit_code,
        }
    )
    return result


# --- the script ---------------------------------------------------------------------------------------------


def _table(title: str, result: dict[str, Any]) -> None:
    print(f"\n### {title}\n")
    print("| figure | value |\n|---|---|")
    for key, value in result.items():
        if key != "problems":
            print(f"| {key} | {value} |")
    problems = result.get("problems", [])
    print(f"\nheld: {'yes' if not problems and result.get('server_exit') == 0 else 'NO'}"
          + "".join(f"\n  - {p}" for p in problems[:10]))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--subs", type=int, default=3, help="subscribers per session")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--fanout", type=int, default=1000, help="subscribers of the one-turn fan-out")
    ap.add_argument("--stall-among", type=int, default=100)
    ap.add_argument("--only", choices=["sessions", "fanout", "stall"], action="append")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.sessions, args.fanout, args.stall_among = 50, 100, 30
    only = set(args.only or ["sessions", "fanout", "stall"])
    figures: dict[str, Any] = {}
    if "sessions" in only:
        figures["sessions"] = trio.run(sessions, args.sessions, args.subs, args.turns)
        _table(
            f"{args.sessions} sessions x {args.subs} subscribers x {args.turns} turns", figures["sessions"]
        )
    if "fanout" in only:
        figures["fanout"] = trio.run(fanout, args.fanout)
        _table(f"one turn, {args.fanout} subscribers", figures["fanout"])
    if "stall" in only:
        figures["stall"] = trio.run(stall, args.stall_among)
        _table(f"a stalled subscriber among {args.stall_among}", figures["stall"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    held = all(not f.get("problems") and f.get("server_exit") == 0 for f in figures.values())
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
