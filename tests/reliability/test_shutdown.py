"""Shutdown of an in-process server: every subscriber receives the terminal entry before the listeners close.

``adapters/server.py`` promises: "Shutdown (SIGTERM, SIGINT, or cancelling run_server): the runtime is
closed first, while the HTTP server still runs, so every open stream gets its terminal entry and every
SSE/WebSocket subscriber receives it; then the listeners close." The SIGTERM path is a cell of the
fault matrix (``server_sigterm``); this is the cancellation path, which embedders use.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.net import JSON
from tests.reliability.clients import Received, read_sse, read_ws, until
from tests.reliability.servers import runtime_config
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.server import run_server

pytestmark = pytest.mark.slow


async def test_cancelling_run_server_delivers_the_terminal_entry_to_sse_and_websocket(tmp_path: Path) -> None:
    rc = runtime_config(tmp_path / "data", pool_size=1)
    sc = ServerConfig(port=0, ws_port=0, heartbeat_s=0.5, send_timeout_s=2.0)
    sse, ws = Received("sse"), Received("ws")
    with trio.fail_after(60):
        async with trio.open_nursery() as readers, trio.open_nursery() as server_nursery:
            ports = await server_nursery.start(run_server, sc, rc)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports.http}", headers=JSON, timeout=10
            ) as c:
                sid = (await c.post("/v1/sessions", json={})).json()["id"]
                r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "[[sim hang=mid]]"})
                tid = r.json()["turn_id"]

                # Readers get 5 s to see the end; they cannot reconnect to a server that is gone.
                async def sse_reader() -> None:
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}") as rc:
                        await read_sse(
                            rc, f"/v1/sessions/{sid}/turns/{tid}/events", sse, stream=tid, deadline=5
                        )

                async def ws_reader() -> None:
                    url = f"ws://127.0.0.1:{ports.ws}/"
                    await read_ws(url, ws, session=sid, stream=tid, subscribe_turn=True, deadline=5)

                readers.start_soon(sse_reader)
                readers.start_soon(ws_reader)
                with trio.fail_after(20):
                    await until(lambda: len(sse.seqs) >= 3 and len(ws.seqs) >= 3)
            server_nursery.cancel_scope.cancel()
    for rec in (sse, ws):
        assert rec.terminal is not None, f"{rec.name} never got stream.ended; it got {rec.events[-3:]}"
        assert rec.terminal["outcome"] == "cancelled", rec.terminal
        assert rec.connections == 1, f"{rec.name} had to reconnect"
