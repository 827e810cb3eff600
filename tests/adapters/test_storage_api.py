"""Storage over the API: a log that cannot be written, a log damaged mid-file, and session ids as file names.

The full disk here is :class:`tests.fulldisk.Disk` (a quota on log appends) under a real in-process server
with real agent processes and real SSE and WebSocket clients; ``tests/reliability/test_disk_full.py`` does
it again on a real, full tmpfs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url

from tests.adapters.conftest import Server, new_session, new_turn, sse_events, start_server
from tests.fulldisk import ENOSPC, Disk, full_disk
from turnstile.engine.errors import LogError
from turnstile.engine.stores.file import FileLogRepository, validate_session_id


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    yield from full_disk(monkeypatch)


def _code(r: httpx.Response) -> tuple[int, str | None]:
    try:
        return r.status_code, r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return r.status_code, None


def _file_lines(server: Server, sid: str) -> list[bytes]:
    return (server.data_dir / "sessions" / f"{sid}.ndjson").read_bytes().splitlines()


async def _ws_frames_until_end(ws: Any) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    with trio.fail_after(30):
        while not frames or frames[-1].get("type") not in ("end", "error"):
            frames.append(json.loads(await ws.get_message()))
    return frames


async def _wait_ready(c: httpx.AsyncClient) -> None:
    with trio.fail_after(30):
        while (await c.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - polling the server
            await trio.sleep(0.05)


async def test_a_full_disk_ends_live_streams_with_a_notice_and_refuses_work_until_space_returns(
    nursery: trio.Nursery, tmp_path: Path, disk: Disk
) -> None:
    server = await start_server(nursery, tmp_path, pool_size=0, storage_retry_s=0.05)
    async with server.client() as c, open_websocket_url(server.ws) as ws:
        sid = await new_session(c)
        _, url = await new_turn(c, sid, "warm up")
        assert (await sse_events(c, url))[-1].event == "stream.ended"
        after = (await c.get(f"/v1/sessions/{sid}")).json()["last_seq"]
        await ws.send_message(json.dumps({"op": "subscribe", "session": sid, "after": after, "id": "w"}))
        assert json.loads(await ws.get_message())["type"] == "ack"
        disk.free = 6000  # fills a few dozen lines into the turn
        events = []
        with trio.fail_after(30):
            async with aconnect_sse(
                c, "POST", f"/v1/sessions/{sid}/turns", json={"prompt": "[[sim tokens=400]]"}
            ) as es:
                assert es.response.status_code == 200
                tid = es.response.headers["x-turn-id"]
                events = [ev async for ev in es.aiter_sse() if ev.data]
        notice = events[-1]
        assert notice.event == "storage.failed" and all(ev.event != "storage.failed" for ev in events[:-1])
        body = json.loads(notice.data)
        written = _file_lines(server, sid)
        assert (
            body["outcome"] == "failed" and body["last_written_seq"] == len(written) and body["stream"] == tid
        )
        assert ENOSPC in body["reason"] and f"{sid}.ndjson" in body["reason"]
        # Every entry the SSE client got is in the file, byte for byte; none past the last written seq.
        for ev in events[:-1]:
            assert written[int(ev.id) - 1] == ev.data.encode()
        frames = await _ws_frames_until_end(ws)
        end = frames[-1]
        assert end["type"] == "end" and end["storage_failed"] is True and end["outcome"] == "failed"
        assert end["last_seq"] == len(written) and ENOSPC in end["reason"]
        got = [e for f in frames if f["type"] == "entries" for e in f["entries"]]
        assert [json.loads(written[e["seq"] - 1]) for e in got] == got and got[-1]["seq"] == len(written)
        # While the log cannot be written: 503 for new work and for a reconnecting stream, not ready.
        last_id = events[-2].id
        r = await c.get(f"/v1/sessions/{sid}/turns/{tid}/events", headers={"last-event-id": last_id})
        assert _code(r) == (503, "storage_unavailable")
        assert _code(await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "x"})) == (
            503,
            "storage_unavailable",
        )
        assert _code(await c.post("/v1/sessions", json={"session_id": "later"})) == (
            503,
            "storage_unavailable",
        )
        assert not (server.data_dir / "sessions" / "later.ndjson").exists()
        r = await c.get("/readyz")
        assert r.status_code == 503 and ENOSPC in r.json()["reason"]
        await ws.send_message(json.dumps({"op": "prompt", "session": sid, "prompt": "x", "id": "p"}))
        assert json.loads(await ws.get_message())["code"] == "storage_unavailable"
        # Space comes back: readiness recovers by itself; a reconnect gets the rest and the real end.
        disk.free = None
        await _wait_ready(c)
        rest = []
        with trio.fail_after(30):
            async with aconnect_sse(
                c, "GET", f"/v1/sessions/{sid}/turns/{tid}/events", headers={"last-event-id": last_id}
            ) as es:
                assert es.response.status_code == 200
                rest = [ev async for ev in es.aiter_sse() if ev.data]
        assert rest[-1].event == "stream.ended" and int(rest[0].id) > int(last_id)
        ended = json.loads(rest[-1].data)
        assert ended["outcome"] == "failed" and ended["reason"].startswith("storage failed:")
        written = _file_lines(server, sid)
        for ev in [*events[:-1], *rest]:
            assert written[int(ev.id) - 1] == ev.data.encode()
        assert [json.loads(x)["seq"] for x in written] == list(range(1, len(written) + 1))
        assert not list((server.data_dir / "sessions").glob(".write-probe*"))
        turn = (await c.get(f"/v1/sessions/{sid}/turns/{tid}")).json()
        assert (turn["outcome"], turn["reason"]) == (ended["outcome"], ended["reason"])


async def test_a_session_id_with_a_trailing_newline_is_refused(server: Server) -> None:
    async with server.client() as c:
        for bad in ("nl\n", "nl\r\n", "a\nb", "ok\n\n"):
            r = await c.post("/v1/sessions", json={"session_id": bad})
            assert _code(r) == (400, "invalid_config"), (bad, r.text)
        assert [s["id"] for s in (await c.get("/v1/sessions")).json()["sessions"]] == []
    assert not list((server.data_dir / "sessions").iterdir())
    with pytest.raises(LogError):
        validate_session_id("nl\n")
    with pytest.raises(LogError):
        FileLogRepository(server.data_dir).path_for("nl\n")


async def test_a_log_damaged_mid_file_is_one_truth_on_every_endpoint(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, pool_size=0)
        async with server.client() as c:
            for sid in ("good", "bad"):
                await new_session(c, session_id=sid)
                tid, _ = await new_turn(c, sid, "hello")
        nursery.cancel_scope.cancel()
    path = tmp_path / "data" / "sessions" / "bad.ndjson"
    lines = path.read_bytes().split(b"\n")
    lines[2] = b'{"kind":"cli","seq":3,"dam'
    path.write_bytes(b"\n".join(lines))
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, pool_size=0)
        async with server.client() as c:
            for method, url, body in (
                ("GET", "/v1/sessions/bad", None),
                ("DELETE", "/v1/sessions/bad", None),
                ("POST", "/v1/sessions", {"session_id": "bad"}),
                ("POST", "/v1/sessions/bad/turns", {"prompt": "x"}),
                ("GET", f"/v1/sessions/bad/turns/{tid}", None),
                ("GET", f"/v1/sessions/bad/turns/{tid}/events", None),
                ("POST", f"/v1/sessions/bad/turns/{tid}/interrupt", None),
                ("GET", "/v1/sessions/bad/events", None),
                ("GET", "/v1/sessions/bad/log", None),
            ):
                r = await c.request(method, url, json=body)
                assert _code(r) == (409, "session_damaged"), (method, url, r.text)
                message = r.json()["error"]["message"]
                assert "bad.ndjson:3" in message and "move the file aside" in message, message
            async with open_websocket_url(server.ws) as ws:
                await ws.send_message(json.dumps({"op": "subscribe", "session": "bad", "id": 1}))
                assert json.loads(await ws.get_message())["code"] == "session_damaged"
            # The others work; readiness stays 200 but names the damaged log; a metric counts it.
            assert (await c.get("/v1/sessions/good")).status_code == 200
            ready = await c.get("/readyz")
            assert ready.status_code == 200 and "bad.ndjson:3" in ready.json()["damaged"]["bad"]
            assert "turnstile_damaged_logs 1.0" in (await c.get("/metrics")).text.splitlines()
            # Moved aside by the operator: the id is free again.
            shutil.move(path, tmp_path / "bad.ndjson.damaged")
            assert _code(await c.get("/v1/sessions/bad")) == (404, "session_not_found")
            assert (await c.post("/v1/sessions", json={"session_id": "bad"})).status_code == 201
            assert "turnstile_damaged_logs 0.0" in (await c.get("/metrics")).text.splitlines()
        nursery.cancel_scope.cancel()
