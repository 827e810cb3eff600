"""A torn line can leave a turn with no end — the reproduction, with real server processes.

kill -9 mid-turn, restart (the recovery appends ``session.recovered`` and the turn's ``stream.ended``),
kill -9 again, cut the last line of the session's log in half (the recovery's ``stream.ended``), restart:
the repair cuts the torn line off, and the recovery must end the turn again — whatever the earlier
``session.recovered`` says — so an SSE reader gets the end instead of heartbeats forever and a WebSocket
subscription gets its ``end``. (The property over every log and every tear:
``tests/runtime/test_recovery_property.py``.)
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse
from trio_websocket import open_websocket_url

from tests.reliability.servers import ServerProcess, wait_healthy

pytestmark = pytest.mark.slow


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def _recovered(c: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            r = await c.get(f"/v1/sessions/{sid}")
            if r.status_code == 200:
                info: dict[str, Any] = r.json()
                return info
            await trio.sleep(0.05)


async def _restart(sp: ServerProcess) -> None:
    sp.signal(signal.SIGKILL)
    assert await sp.wait_async() is not None
    sp.start()
    await wait_healthy(sp.base)


async def test_a_turn_whose_recovered_end_was_torn_off_is_ended_again(tmp_path: Path) -> None:
    sp = ServerProcess(data_dir=tmp_path / "data", pool_size=0)
    try:
        sp.start()
        await wait_healthy(sp.base)
        async with sp.live().client() as c:
            sid = (await c.post("/v1/sessions", json={"session_id": "torn"})).json()["id"]
            tid = (await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "[[sim hang=mid]]"})).json()[
                "turn_id"
            ]
            log = sp.data_dir / "sessions" / f"{sid}.ndjson"
            with trio.fail_after(30):
                while not any(b"text_delta" in line for line in log.read_bytes().splitlines()):  # noqa: ASYNC110
                    await trio.sleep(0.05)
        await _restart(sp)  # kill -9 mid-turn, restart: the recovery ends the turn
        async with sp.live().client() as c:
            await _recovered(c, sid)
        last = _entries(log)[-1]
        assert (last["kind"], last["stream"]) == ("stream.ended", tid), last
        sp.signal(signal.SIGKILL)  # kill -9 again, and tear the recovery's terminal entry in half
        assert await sp.wait_async() is not None
        raw = log.read_bytes()
        line = raw.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        log.write_bytes(raw[: len(raw) - len(line) // 2 - 1])
        sp.start()
        await wait_healthy(sp.base)
        async with sp.live().client() as c:
            info = await _recovered(c, sid)
            assert next(t for t in info["turns"] if t["id"] == tid)["ended"], info["turns"]
            events = []
            with trio.fail_after(30):  # before the fix: heartbeats forever
                async with aconnect_sse(c, "GET", f"/v1/sessions/{sid}/turns/{tid}/events") as es:
                    assert es.response.status_code == 200
                    events = [ev async for ev in es.aiter_sse() if ev.data]
            assert events[-1].event == "stream.ended", [ev.event for ev in events[-3:]]
            assert sp.ws is not None
            with trio.fail_after(30):  # before the fix: no `end`, ever
                async with open_websocket_url(sp.ws) as ws:
                    await ws.send_message(json.dumps({"op": "subscribe", "session": sid, "turn": tid}))
                    frames = [json.loads(await ws.get_message())]
                    while frames[-1]["type"] not in ("end", "error"):
                        frames.append(json.loads(await ws.get_message()))
            assert frames[-1]["type"] == "end", frames[-1]
            got = [e for f in frames if f["type"] == "entries" for e in f["entries"]]
            assert got[-1]["kind"] == "stream.ended" and got[-1]["stream"] == tid
        entries = _entries(log)
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert sum(1 for e in entries if e["kind"] == "stream.ended" and e["stream"] == tid) == 1
        assert any(e["kind"] == "log.repaired" for e in entries)
    finally:
        sp.stop()
