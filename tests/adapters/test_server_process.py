"""``turnstile serve`` as a real process: liveness from the first instant, SIGKILL and restart, the
token on all three front-ends, graceful SIGTERM."""

from __future__ import annotations

import json
import signal

import httpx
import pytest
import trio
from trio_websocket import HandshakeError, open_websocket_url

from tests.adapters.conftest import (
    ServerProcess,
    free_port,
    log_entries,
    new_session,
    new_turn,
    sse_events,
    wait_healthy,
)
from tests.net import JSON

pytestmark = pytest.mark.slow


async def test_sigkill_mid_turn_then_restart_reads_failed_server_restarted(
    server_process: ServerProcess,
) -> None:
    server_process.start()
    await wait_healthy(server_process.base)
    async with httpx.AsyncClient(base_url=server_process.base, headers=JSON, timeout=30) as c:
        sid = await new_session(c)
        _tid, url = await new_turn(c, sid, "[[sim hang=mid]] a long turn")
        first = await sse_events(c, url, limit=5)
        server_process.kill(signal.SIGKILL)
        server_process.start()
        await wait_healthy(server_process.base)
        rest = await sse_events(c, url, headers={"last-event-id": first[-1].id})
        end = json.loads(rest[-1].data)
        assert rest[-1].event == "stream.ended" and end["outcome"] == "failed"
        assert end["reason"] == "server restarted"
        ids = [int(e.id) for e in first + rest]
        assert ids == sorted(set(ids))
        # A new turn on the same session works.
        _tid2, url2 = await new_turn(c, sid, "after the restart")
        events = await sse_events(c, url2)
        assert json.loads(events[-1].data)["outcome"] == "completed"
        entries = await log_entries(c, sid)
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))


async def test_healthz_answers_at_once_while_a_slow_pool_warms(server_process: ServerProcess) -> None:
    server_process.args = ["--pool-size", "2"]
    server_process.env = {"TURNSTILE_AGENT_ARGS": "--speed 0 --slow-start 5"}
    server_process.start()
    async with httpx.AsyncClient(base_url=server_process.base, headers=JSON, timeout=5) as c:
        # Poll from the process start: the first answer is a 200, and it comes while the pool's processes
        # are still in their 5 s warm-up (so nothing waited on it) — shown by state, not by a stopwatch.
        while True:
            try:
                r = await c.get("/healthz")
                break
            except httpx.TransportError:
                await trio.sleep(0.01)
        assert r.status_code == 200
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        pool = ready.json()["pool"]
        assert pool["ready"] == 0 and pool["target"] == 2, f"the pool should still be warming: {pool}"
        # A session can be created now (its process starts cold, in the background).
        r = await c.post("/v1/sessions", json={})
        assert r.status_code == 201


async def test_token_required_on_http_sse_and_websocket(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    sp = ServerProcess(port=free_port(), data_dir=tmp_path / "data")
    ws_port = free_port()
    sp.args = ["--token", "s3cret", "--ws-port", str(ws_port)]
    sp.start()
    try:
        await wait_healthy_with_token(sp.base, "s3cret")
        async with httpx.AsyncClient(base_url=sp.base, headers=JSON, timeout=10) as c:
            for path in ["/healthz", "/v1/sessions", "/metrics", "/v1/sessions/x/events"]:
                r = await c.get(path)
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", path
            assert (await c.get("/v1/sessions", headers={"authorization": "Bearer wrong"})).status_code == 401
            auth = {"authorization": "Bearer s3cret"}
            r = await c.post("/v1/sessions", json={}, headers=auth)
            assert r.status_code == 201
            sid = r.json()["id"]
            _tid, url = await new_turn(
                httpx.AsyncClient(base_url=sp.base, headers={**JSON, **auth}), sid, "x"
            )
            assert (await c.get(url)).status_code == 401
            assert (await c.get(url, params={"token": "s3cret"})).status_code == 200
        with pytest.raises(HandshakeError):
            async with open_websocket_url(f"ws://127.0.0.1:{ws_port}/"):
                pass
        async with open_websocket_url(f"ws://127.0.0.1:{ws_port}/?token=s3cret") as ws:
            await ws.send_message('{"op":"ping"}')
            assert json.loads(await ws.get_message())["type"] == "pong"
    finally:
        sp.stop()


async def wait_healthy_with_token(base: str, token: str) -> None:
    async with httpx.AsyncClient(
        base_url=base, timeout=5, headers={**JSON, "authorization": f"Bearer {token}"}
    ) as c:
        for _ in range(1500):
            try:
                if (await c.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.02)
    raise AssertionError("server did not come up")


def test_binding_beyond_loopback_requires_a_token(tmp_path: object) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "turnstile.adapters.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--token" in proc.stderr and "Traceback" not in proc.stderr


async def test_sigterm_mid_turn_ends_the_stream_and_exits_cleanly(server_process: ServerProcess) -> None:
    server_process.start()
    await wait_healthy(server_process.base)
    async with httpx.AsyncClient(base_url=server_process.base, headers=JSON, timeout=30) as c:
        sid = await new_session(c)
        tid, url = await new_turn(c, sid, "[[sim hang=mid]]")
        first = await sse_events(c, url, limit=4)
        assert server_process.proc is not None
        server_process.proc.send_signal(signal.SIGTERM)
        assert server_process.proc.wait(timeout=30) == 0
    # The log on disk ends the stream with its one terminal entry.
    lines = (server_process.data_dir / "sessions" / f"{sid}.ndjson").read_text().splitlines()
    ended = [json.loads(x) for x in lines if '"kind":"stream.ended"' in x]
    assert len(ended) == 1 and ended[0]["stream"] == tid and ended[0]["outcome"] in ("cancelled", "failed")
    assert int(first[-1].id) < ended[0]["seq"]
