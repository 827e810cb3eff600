"""The data directory fills up mid-turn: a 64 KiB tmpfs as ``--data-dir``, real agents, real clients.

What must hold (DESIGN.md invariant 6, "nothing is sent that is not written"):

* every entry a client received is in the file, byte for byte — once space returns, and also after the
  server was SIGKILLed while the disk was full and restarted (no seq names another entry than the one a
  client was sent);
* the live clients are told at once: SSE gets a seq-less ``storage.failed`` event and the response ends;
  the WebSocket subscription gets an ``end`` frame with ``storage_failed`` and the last written seq;
* while the disk is full a new session or turn gets 503 ``storage_unavailable`` (and leaves no empty log),
  a reconnecting stream too; ``/readyz`` is 503; the failure is logged at ERROR with the log's path;
* once space returns ``/readyz`` goes back to 200 by itself (a timer retries the backlog), a client
  resuming after the last seq it got receives the rest and the turn's real terminal entry, and no
  ``.write-probe`` file is left behind.

Mounting a tmpfs needs root (``mount -t tmpfs``); without it these tests are skipped and say so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url

from tests.reliability.clients import until
from tests.reliability.servers import Live, ServerProcess, inproc_server, runtime_config, wait_healthy

pytestmark = pytest.mark.slow

ENOSPC = "No space left on device"
TMPFS = "64k"
# Free space left when the turn starts: it fills up a few dozen lines in.
ROOM = 8 * 1024
# Agent output kept in memory while the disk is full (the rest is counted: log.dropped). More than ROOM,
# so the backlog (which holds at least the append that failed, or BACKLOG of it) never fits in what is
# left: the disk stays full for the server until the test frees the ballast.
BACKLOG = 16 * 1024
TURN = "[[sim tokens=2000]]"  # ~500 KB of output at --speed 0: far more than the disk and the backlog


@contextlib.contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted at ``path`` for the test (skipped when it cannot be mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"the disk-full suite needs a small tmpfs as the data directory and cannot mount one "
            f"(root and mount(2) are needed): {exc} {detail.decode(errors='replace').strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=False)


def ballast(data: Path, leave: int = ROOM) -> Path:
    """Fill the file system of ``data`` but ``leave`` bytes; returns the file to delete to free it."""
    st = os.statvfs(data)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    path = data / "ballast"
    path.write_bytes(b"\0" * size)
    return path


def lines_of(data: Path, sid: str) -> list[bytes]:
    return (data / "sessions" / f"{sid}.ndjson").read_bytes().splitlines()


def code(r: httpx.Response) -> tuple[int, str | None]:
    try:
        return r.status_code, r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return r.status_code, None


class Client:
    """What the clients of one turn received: SSE events (seq, bytes) and WebSocket entries (parsed)."""

    def __init__(self) -> None:
        self.sse: list[tuple[int, bytes]] = []
        self.ws: list[dict[str, Any]] = []
        self.notice: dict[str, Any] | None = None
        self.ws_end: dict[str, Any] | None = None

    def check_against(self, lines: list[bytes]) -> None:
        """Every entry received names the same entry in the file (SSE: same bytes)."""
        for seq, data in self.sse:
            assert seq <= len(lines) and lines[seq - 1] == data, f"SSE seq {seq} is not what the file holds"
        for entry in self.ws:
            seq = entry["seq"]
            assert seq <= len(lines) and json.loads(lines[seq - 1]) == entry, f"WebSocket seq {seq} differs"


async def fill_mid_turn(live: Live, c: httpx.AsyncClient, data: Path) -> tuple[str, str, Client, Path]:
    """A session, a WebSocket subscribed to it and the turn's own SSE stream (the POST); the disk fills
    while the turn streams. Returns (session, turn, what the clients got, the ballast to free)."""
    assert live.ws is not None
    got = Client()
    r = await c.post("/v1/sessions", json={"session_id": "full"})
    assert r.status_code == 201, r.text
    sid, after = r.json()["id"], r.json()["last_seq"]
    room = ballast(data)
    async with open_websocket_url(live.ws) as ws:
        await ws.send_message(json.dumps({"op": "subscribe", "session": sid, "after": after, "id": "w"}))
        assert json.loads(await ws.get_message())["type"] == "ack"
        with trio.fail_after(60):
            async with aconnect_sse(c, "POST", f"/v1/sessions/{sid}/turns", json={"prompt": TURN}) as es:
                assert es.response.status_code == 200, es.response.status_code
                tid = es.response.headers["x-turn-id"]
                async for ev in es.aiter_sse():
                    if ev.event == "storage.failed":
                        got.notice = json.loads(ev.data)
                    elif ev.data:
                        assert got.notice is None, "an event after the storage-failed notice"
                        got.sse.append((int(ev.id), ev.data.encode()))
            while got.ws_end is None:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "entries":
                    got.ws.extend(frame["entries"])
                elif frame["type"] == "end":
                    got.ws_end = frame
    return sid, tid, got, room


def check_told(got: Client, data: Path, sid: str, tid: str) -> int:
    """The clients were told: the notice and the end frame carry the last written seq and the reason."""
    written = len(lines_of(data, sid))
    notice, end = got.notice, got.ws_end
    assert notice is not None, "the SSE client was never told that the storage failed"
    assert notice["outcome"] == "failed" and notice["stream"] == tid
    assert notice["last_written_seq"] == written and ENOSPC in notice["reason"]
    assert f"{sid}.ndjson" in notice["reason"], notice["reason"]
    assert end is not None and end.get("storage_failed") is True and end["last_seq"] == written, end
    assert got.sse and got.sse[-1][0] <= written and got.ws and got.ws[-1]["seq"] == written
    got.check_against(lines_of(data, sid))
    return written


async def resume(c: httpx.AsyncClient, sid: str, tid: str, after: int) -> list[tuple[str, int, bytes]]:
    """Reconnect the turn's SSE stream with Last-Event-ID: (event, seq, bytes) until it ends."""
    out: list[tuple[str, int, bytes]] = []
    url = f"/v1/sessions/{sid}/turns/{tid}/events"
    with trio.fail_after(60):
        async with aconnect_sse(c, "GET", url, headers={"last-event-id": str(after)}) as es:
            assert es.response.status_code == 200, es.response.status_code
            async for ev in es.aiter_sse():
                if ev.data:
                    out.append((ev.event, int(ev.id), ev.data.encode()))
    return out


def check_log(lines: list[bytes], tid: str) -> dict[str, Any]:
    """Seqs 1..N, exactly one terminal entry for the turn; returns it."""
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1)), "the log's seqs are not 1..N"
    ends = [e for e in entries if e["kind"] == "stream.ended" and e["stream"] == tid]
    assert len(ends) == 1, f"turn {tid} has {len(ends)} terminal entries"
    return ends[0]


async def test_a_full_disk_mid_turn_sends_nothing_unwritten_and_readiness_recovers_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "data") as data:
        rc = runtime_config(data, pool_size=0, storage_backlog_bytes=BACKLOG, storage_retry_s=0.2)
        async with inproc_server(rc) as live, live.client() as c:
            sid, tid, got, room = await fill_mid_turn(live, c, data)
            last = check_told(got, data, sid, tid)
            # While the disk is full: 503 for new work and for a reconnecting stream; not ready.
            r = await c.post("/v1/sessions", json={"session_id": "refused"})
            assert code(r) == (503, "storage_unavailable"), r.text
            assert not (data / "sessions" / "refused.ndjson").exists(), "an empty log was left behind"
            r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "more"})
            assert code(r) == (503, "storage_unavailable"), r.text
            r = await c.get(f"/v1/sessions/{sid}/turns/{tid}/events", headers={"last-event-id": str(last)})
            assert code(r) == (503, "storage_unavailable"), r.text
            r = await c.get("/readyz")
            assert r.status_code == 503 and ENOSPC in r.json()["reason"], r.text
            errors = [
                rec.getMessage()
                for rec in caplog.records
                if rec.levelno >= logging.ERROR and f"{sid}.ndjson" in rec.getMessage()
            ]
            assert len(errors) == 1 and ENOSPC in errors[0], errors
            # Space comes back: nobody asks the server anything but /readyz, which recovers by itself.
            room.unlink()
            with trio.fail_after(30):
                while (await c.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - another server
                    await trio.sleep(0.1)
            rest = await resume(c, sid, tid, got.sse[-1][0])
            assert rest and rest[-1][0] == "stream.ended" and rest[0][1] > got.sse[-1][0]
            lines = lines_of(data, sid)
            got.sse += [(seq, raw) for _event, seq, raw in rest]
            got.check_against(lines)
            end = check_log(lines, tid)
            assert end["outcome"] == "failed" and end["reason"].startswith("storage failed:")
            assert ENOSPC in end["reason"] and f"{sid}.ndjson" in end["reason"]
            # Output past the backlog bound (usually: ~500 KB were printed) is counted, never silently lost.
            dropped = [json.loads(x) for x in lines if b'"kind":"log.dropped"' in x]
            assert len(dropped) <= 1 and all(d["limit"] == BACKLOG and d["entries"] > 0 for d in dropped)
            turn = (await c.get(f"/v1/sessions/{sid}/turns/{tid}")).json()
            assert (turn["outcome"], turn["reason"]) == (end["outcome"], end["reason"])
            # The same session goes on.
            r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "after the disk came back"})
            assert r.status_code == 202, r.text
            with trio.fail_after(60):
                await until(lambda: b'"outcome":"completed"' in b"".join(lines_of(data, sid)[len(lines) :]))
        assert not list(data.rglob(".write-probe*")), "a write probe was left behind"


async def test_a_server_killed_while_the_disk_is_full_reuses_no_seq_a_client_was_sent(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "data") as data:
        env = {"TURNSTILE_STORAGE_BACKLOG_BYTES": str(BACKLOG), "TURNSTILE_STORAGE_RETRY_S": "0.2"}
        sp = ServerProcess(data_dir=data, pool_size=0, env=env)
        try:
            sp.start()
            await wait_healthy(sp.base)
            async with sp.live().client() as c:
                sid, tid, got, room = await fill_mid_turn(sp.live(), c, data)
                check_told(got, data, sid, tid)
                assert (await c.get("/readyz")).status_code == 503
            sp.signal(signal.SIGKILL)  # with the backlog still in memory: it is lost, and nobody saw it
            assert await sp.wait_async() is not None
            log = sp.stderr_tail(100_000)
            assert "ERROR" in log and f"{sid}.ndjson" in log and ENOSPC in log, log[-2000:]
            room.unlink()
            sp.start()
            await wait_healthy(sp.base)
            async with sp.live().client() as c:
                with trio.fail_after(30):
                    while (await c.get(f"/v1/sessions/{sid}")).status_code != 200:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                lines = lines_of(data, sid)
                got.check_against(lines)  # no seq names another entry than the one a client was sent
                end = check_log(lines, tid)
                assert end["outcome"] == "failed", end
                rest = await resume(c, sid, tid, got.sse[-1][0])
                assert rest[-1][0] == "stream.ended" and rest[-1][2] == lines[end["seq"] - 1]
                assert (await c.get("/readyz")).status_code == 200
        finally:
            sp.stop()
        assert not list(data.rglob(".write-probe*")), "a write probe was left behind"
