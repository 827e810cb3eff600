"""Subscribers and checks over the public API: SSE and WebSocket readers that resume, and the invariants.

Every reader here is a real client on 127.0.0.1 (httpx + httpx-sse, trio-websocket). A reader keeps
what it received (seq, event name, the entry's JSON) and *never* silently drops a duplicate: a duplicate
or a gap is a finding. Readers resume like a browser does — ``Last-Event-ID`` for SSE, ``after`` for the
WebSocket — when the connection ends without the terminal entry or the server goes away, until a
deadline (every wait is bounded).

When the log cannot be written the server ends a live stream with a storage-failed notice (SSE: a
seq-less ``storage.failed`` event; WebSocket: an ``end`` frame with ``storage_failed``) and answers 503
``storage_unavailable`` until it can: readers keep the notices, count the 503s and go on resuming.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from httpx_sse import aconnect_sse
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from turnstile.engine.replay import replay
from turnstile.engine.transcript import frames_of, read_entries

__all__ = [
    "Received",
    "check_log",
    "check_subscriber",
    "fetch_log",
    "read_sse",
    "read_ws",
    "until",
    "wait_turn_ended",
]

RETRY_S = 0.1


async def until(condition: Callable[[], bool], interval: float = 0.02) -> None:
    """Wait until ``condition()`` holds, checking every ``interval`` s (bound it with a cancel scope).

    For conditions on other processes or on data filled by other tasks, which have no event to wait on.
    """
    while not condition():  # noqa: ASYNC110
        await trio.sleep(interval)


@dataclass
class Received:
    """What one subscriber got."""

    name: str
    seqs: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # time.time() at arrival
    connections: int = 0
    got_204: bool = False
    errors: list[str] = field(default_factory=list)
    terminal: dict[str, Any] | None = None
    dropped_by_server: int = 0  # responses that ended without the terminal entry
    notices: list[dict[str, Any]] = field(default_factory=list)  # storage-failed notices received
    unavailable: int = 0  # (re)connects answered 503 storage_unavailable

    def add(self, seq: int, event: str, data: dict[str, Any]) -> None:
        self.seqs.append(seq)
        self.events.append(event)
        self.data.append(data)
        self.arrived.append(time.time())

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0


def _is_terminal(data: dict[str, Any], stream: str | None) -> bool:
    return data.get("kind") == "stream.ended" and (stream is None or data.get("stream") == stream)


async def read_sse(
    client: httpx.AsyncClient,
    url: str | Callable[[], str],
    rec: Received,
    *,
    stream: str | None = None,
    first: Callable[[], Any] | None = None,
    on_open: Callable[[httpx.Response], None] | None = None,
    disconnect_after: int | None = None,
    stall_after: int | None = None,
    release: trio.Event | None = None,
    on_event: Callable[[Received], None] | None = None,
    deadline: float = 60.0,
) -> Received:
    """Read an SSE stream until the terminal entry of ``stream`` (any ``stream.ended`` when None).

    ``url`` is the GET to (re)connect to; the first connection may instead be ``first()`` (an
    ``aconnect_sse`` context, e.g. the POST that starts a turn). ``disconnect_after=N``: drop the
    connection after N events once, then resume. ``stall_after=N``: stop reading after N events until
    ``release`` is set (the server is then free to drop us; we resume). Transport errors (a server that
    died) are retried every 100 ms until ``deadline`` seconds have passed.
    """
    end_at = trio.current_time() + deadline
    disconnected = False
    stalled = False
    while trio.current_time() < end_at:
        headers = {"last-event-id": str(rec.last)} if rec.seqs else {}
        try:
            ctx = first() if (first is not None and rec.connections == 0) else None
            if ctx is None:
                ctx = aconnect_sse(client, "GET", url if isinstance(url, str) else url(), headers=headers)
            rec.connections += 1
            async with ctx as es:
                status = es.response.status_code
                if on_open is not None:
                    on_open(es.response)
                if status == 204:
                    rec.got_204 = True
                    if rec.terminal is None:
                        rec.errors.append(f"204 before the terminal entry was received (last {rec.last})")
                    return rec
                if status != 200:
                    body = (await es.response.aread())[:300]
                    if status == 503 and b'"storage_unavailable"' in body:
                        rec.unavailable += 1  # the log cannot be written yet: resume later
                    else:
                        rec.errors.append(f"status {status} on (re)connect: {body!r}")
                    await trio.sleep(RETRY_S)
                    continue
                async for ev in es.aiter_sse():
                    if ev.event == "storage.failed":
                        # Seq-less: the response ends after it; resume from the last id received.
                        rec.notices.append(json.loads(ev.data))
                        continue
                    if not ev.id or not ev.data:
                        # httpx-sse reports a heartbeat comment's blank line as an event carrying the
                        # previous id and no data; the SSE standard dispatches nothing for it.
                        continue
                    try:
                        data = json.loads(ev.data)
                    except ValueError:
                        rec.errors.append(
                            f"event {ev.id} ({ev.event}) has data that is not JSON: {ev.data[:200]!r}"
                        )
                        continue
                    rec.add(int(ev.id), ev.event, data)
                    if on_event is not None:
                        on_event(rec)
                    if _is_terminal(data, stream):
                        rec.terminal = data
                        return rec
                    if (
                        disconnect_after is not None
                        and not disconnected
                        and len(rec.seqs) >= disconnect_after
                    ):
                        disconnected = True
                        break
                    if stall_after is not None and not stalled and len(rec.seqs) >= stall_after:
                        stalled = True
                        assert release is not None
                        with trio.move_on_at(end_at):
                            await release.wait()
                else:
                    rec.dropped_by_server += 1
        except (httpx.TransportError, httpx.StreamError) as exc:
            rec.dropped_by_server += 1
            if rec.connections > 500:
                rec.errors.append(f"gave up after {rec.connections} connections: {exc!r}")
                return rec
        await trio.sleep(RETRY_S if not disconnected else 0.02)
    rec.errors.append(f"no terminal entry within {deadline}s (last seq {rec.last})")
    return rec


async def read_ws(
    ws_url: str,
    rec: Received,
    *,
    session: str,
    stream: str | None = None,
    subscribe_turn: bool = False,
    disconnect_after: int | None = None,
    on_event: Callable[[Received], None] | None = None,
    deadline: float = 60.0,
) -> Received:
    """Subscribe over the WebSocket (to the session, or to the turn with ``subscribe_turn``) and read
    until the terminal entry of ``stream``; reconnect and resubscribe ``after`` the last seq on a drop.
    ``disconnect_after=N``: close the connection after N entries once, then resubscribe."""
    end_at = trio.current_time() + deadline
    disconnected = False
    while trio.current_time() < end_at:
        try:
            # Short handshake and close timeouts: trio-websocket 0.12's client waits the whole
            # connect_timeout (60 s) when a server closes the connection before answering the handshake
            # (as one that is shutting down does).
            async with open_websocket_url(ws_url, connect_timeout=5, disconnect_timeout=5) as ws:
                rec.connections += 1
                op: dict[str, Any] = {"op": "subscribe", "session": session, "after": rec.last, "id": "r"}
                if subscribe_turn and stream is not None:
                    op["turn"] = stream
                await ws.send_message(json.dumps(op))
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame.get("type") == "error":
                        rec.errors.append(f"ws error: {frame}")
                        return rec
                    if frame.get("type") == "ack":
                        continue
                    if frame.get("type") == "end" and frame.get("storage_failed"):
                        rec.notices.append(frame)  # the log cannot be written: resubscribe later
                        break
                    if frame.get("type") == "end":
                        if rec.terminal is None:
                            rec.errors.append(f"ws end before the terminal entry: {frame}")
                        return rec
                    for data in frame.get("entries", []):
                        rec.add(int(data["seq"]), data["kind"], data)
                        if on_event is not None:
                            on_event(rec)
                        if _is_terminal(data, stream):
                            rec.terminal = data
                            return rec
                    if (
                        disconnect_after is not None
                        and not disconnected
                        and len(rec.seqs) >= disconnect_after
                    ):
                        disconnected = True
                        break
        except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
            rec.dropped_by_server += 1
            if rec.connections > 500:
                rec.errors.append(f"gave up: {exc!r}")
                return rec
        await trio.sleep(RETRY_S)
    rec.errors.append(f"no terminal entry within {deadline}s (last seq {rec.last})")
    return rec


async def fetch_log(client: httpx.AsyncClient, sid: str) -> tuple[bytes, list[dict[str, Any]]]:
    """The session's log as served (raw NDJSON bytes, parsed entries)."""
    r = await client.get(f"/v1/sessions/{sid}/log")
    r.raise_for_status()
    raw = r.content
    return raw, [json.loads(line) for line in raw.splitlines() if line.strip()]


async def wait_turn_ended(
    client: httpx.AsyncClient, sid: str, tid: str, limit_s: float = 30.0
) -> dict[str, Any]:
    """Poll the turn until it has ended (bounded); returns the turn."""
    with trio.fail_after(limit_s):
        while True:
            try:
                r = await client.get(f"/v1/sessions/{sid}/turns/{tid}")
                if r.status_code == 200 and r.json().get("ended"):
                    turn: dict[str, Any] = r.json()
                    return turn
            except httpx.TransportError:
                pass
            await trio.sleep(0.03)


def check_log(raw: bytes, entries: list[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """Invariants of one session's log against what the server reports (``GET /v1/sessions/{sid}``).

    Gap-free seqs from 1; exactly one ``stream.ended`` per stream; every stream ended; the log folds
    offline (``turnstile.engine.replay``) to the same outcome for every stream as the entries and the server say.
    """
    problems: list[str] = []
    seqs = [e["seq"] for e in entries]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"log seqs are not 1..N: {_gaps(seqs)}")
    streams = {e["stream"] for e in entries if e.get("kind") == "turn.requested"}
    ends: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if e.get("kind") == "stream.ended":
            ends.setdefault(e["stream"], []).append(e)
    for s in sorted(streams | set(ends)):
        n = len(ends.get(s, []))
        if n != 1:
            problems.append(f"stream {s} has {n} stream.ended entries")
    reported = {t["id"]: t for t in info.get("turns", [])}
    report = replay(read_entries(frames_of(raw)))
    replayed = {s.id: s for s in report.streams}
    for s, found in ends.items():
        end = found[0]
        turn = reported.get(s)
        if turn is None:
            problems.append(f"stream {s} is in the log but not in the session info")
        elif (turn.get("outcome"), turn.get("reason")) != (end["outcome"], end["reason"]):
            problems.append(
                f"stream {s}: server says {turn.get('outcome')}/{turn.get('reason')!r}, "
                f"log says {end['outcome']}/{end['reason']!r}"
            )
        view = replayed.get(s)
        if view is None:
            problems.append(f"stream {s}: not found when the log is replayed")
        elif view.outcome != end["outcome"] or not view.ended:
            problems.append(
                f"stream {s}: replay gives {view.outcome} (ended={view.ended}), log says {end['outcome']}"
            )
    for s, view in replayed.items():
        if not view.ended or view.outcome is None:
            problems.append(f"stream {s} is still open when the log is replayed ({view.state})")
    for t in reported.values():
        if not t.get("ended"):
            problems.append(f"turn {t['id']} has not ended per the server: {t.get('state')}")
    return problems


def check_subscriber(
    rec: Received, entries: list[dict[str, Any]], *, stream: str | None, whole_session: bool = False
) -> list[str]:
    """A subscriber got exactly the log's entries (of ``stream``, or the session's prefix up to the
    stream's terminal entry), in order, each once, with the same content, ending with the terminal."""
    problems = [f"{rec.name}: {e}" for e in rec.errors]
    if whole_session:
        end = next(
            (i for i, e in enumerate(entries) if _is_terminal(e, stream)),
            len(entries) - 1,
        )
        expected = entries[: end + 1]
    else:
        expected = [e for e in entries if e.get("stream") == stream]
    want = [e["seq"] for e in expected]
    if rec.seqs != want:
        dup = len(rec.seqs) - len(set(rec.seqs))
        problems.append(
            f"{rec.name}: got seqs {_short(rec.seqs)}, log has {_short(want)}"
            + (f" ({dup} duplicates)" if dup else "")
        )
    else:
        for got, exp in zip(rec.data, expected, strict=True):
            if got != exp:
                problems.append(f"{rec.name}: entry {exp['seq']} differs from the log")
                break
    if rec.terminal is None:
        problems.append(f"{rec.name}: never received the terminal entry")
    return problems


def _short(seqs: list[int]) -> str:
    return str(seqs) if len(seqs) <= 12 else f"[{seqs[0]}..{seqs[-1]}] ({len(seqs)} entries)"


def _gaps(seqs: list[int]) -> str:
    bad = [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]
    return f"first={seqs[:1]}, breaks={bad[:5]}"
