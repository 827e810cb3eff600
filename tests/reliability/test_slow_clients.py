"""A client that stops reading: dropped after ``send_timeout_s``, never holding the server up.

docs/api.md: "A client that does not read for ``send_timeout_s`` (10 s) is dropped; it never slows the
turn or other clients and resumes from the log." The reader here opens a session's SSE stream and stops
reading after its first event, while a turn writes ~6 MB of entries — far more than the kernel's socket
buffers hold for a reader that does not read — so the server's writes to it block.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from bench.load import Reader, expected_seqs, http, log_of, read_sse
from tests.reliability.clients import until
from tests.reliability.servers import ServerProcess, inproc_server, runtime_config, wait_healthy
from turnstile.adapters.config import ServerConfig

pytestmark = pytest.mark.slow

BIG_TURN = "[[sim tokens=20000]]"  # ~6 MB of SSE: far more than the kernel's socket buffers hold
SEND_TIMEOUT_S = 2.0


async def test_a_stalled_sse_client_is_dropped_and_resumes_without_loss(tmp_path: Path) -> None:
    sc = ServerConfig(port=0, ws_port=-1, heartbeat_s=0.5, send_timeout_s=SEND_TIMEOUT_S)
    async with inproc_server(runtime_config(tmp_path / "data", pool_size=1), sc) as live:
        port = int(live.base.rsplit(":", 1)[1])
        _status, body = await http(port, "POST", "/v1/sessions")
        sid = body["id"]
        normal, staller, release = Reader(), Reader(), trio.Event()
        path = f"/v1/sessions/{sid}/events"
        with trio.fail_after(120):
            async with trio.open_nursery() as n:
                await n.start(lambda task_status: read_sse(port, path, normal, task_status=task_status))
                await n.start(
                    lambda task_status: read_sse(port, path, staller, stall=release, task_status=task_status)
                )
                await http(port, "POST", f"/v1/sessions/{sid}/turns", {"prompt": BIG_TURN})
                await until(lambda: normal.ends >= 1 or bool(normal.errors))
                # The turn is over for everyone else; the staller has not read for longer than the timeout.
                await trio.sleep(SEND_TIMEOUT_S + 3)
                release.set()
        want = expected_seqs(await log_of(port, sid), 1)
        assert normal.seqs == want and not normal.errors
        assert staller.seqs == want, f"the stalled client got {len(staller.seqs)} of {len(want)} entries"
        assert staller.connections >= 2, (
            f"the server never dropped a client that did not read for {SEND_TIMEOUT_S + 3:.0f}s "
            f"(send_timeout_s={SEND_TIMEOUT_S}); it got the whole turn on its first connection once it read "
            "again. Under hypercorn the SSE writer's move_on_after cannot interrupt the write: hypercorn's "
            "TCPServer.protocol_send shields stream.send_all"
        )


async def test_sigterm_is_not_held_up_by_a_stalled_client(tmp_path: Path) -> None:
    sp = ServerProcess(data_dir=tmp_path / "data", pool_size=1)
    sp.start()
    try:
        await wait_healthy(sp.base)
        _status, body = await http(sp.port, "POST", "/v1/sessions")
        sid = body["id"]
        normal, staller, release = Reader(), Reader(), trio.Event()
        path = f"/v1/sessions/{sid}/events"
        with trio.fail_after(120):
            async with trio.open_nursery() as n:
                await n.start(lambda task_status: read_sse(sp.port, path, normal, task_status=task_status))
                n.start_soon(lambda: read_sse(sp.port, path, staller, stall=release, deadline=60))
                await http(sp.port, "POST", f"/v1/sessions/{sid}/turns", {"prompt": BIG_TURN})
                await until(lambda: normal.ends >= 1 or bool(normal.errors))
                started = time.monotonic()
                sp.signal(signal.SIGTERM)
                code = await sp.wait_async(25)
                took = time.monotonic() - started
                release.set()
                n.cancel_scope.cancel()
        assert code == 0, (
            f"turnstile serve did not exit within 25 s of SIGTERM (exit status {code}, {took:.0f}s) "
            "while one client held an SSE response without reading"
        )
    finally:
        sp.stop()


async def _read_ws_turn(
    url: str, sid: str, tid: str, after: int, seqs: list[int], stall: trio.Event | None = None
) -> bool:
    """Subscribe to a turn from ``after`` and append its entries' seqs; True if its ``end`` came, False if
    the server closed the connection first. With ``stall``: read only the ack, then nothing until set."""
    async with open_websocket_url(url, max_message_size=1 << 26) as ws:
        await ws.send_message(json.dumps({"op": "subscribe", "session": sid, "turn": tid, "after": after}))
        try:
            assert json.loads(await ws.get_message())["type"] == "ack"
            if stall is not None:
                await stall.wait()  # trio-websocket stops reading the socket once its queue is full
            while True:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "end":
                    return True
                seqs.extend(e["seq"] for e in frame["entries"])
        except ConnectionClosed:
            return False


async def test_a_stalled_websocket_client_is_dropped_and_resumes_without_loss(tmp_path: Path) -> None:
    sc = ServerConfig(port=0, ws_port=0, heartbeat_s=0.5, send_timeout_s=SEND_TIMEOUT_S)
    async with inproc_server(runtime_config(tmp_path / "data", pool_size=1), sc) as live:
        assert live.ws is not None
        port = int(live.base.rsplit(":", 1)[1])
        _status, body = await http(port, "POST", "/v1/sessions")
        sid = body["id"]
        _status, body = await http(port, "POST", f"/v1/sessions/{sid}/turns", {"prompt": BIG_TURN})
        tid = body["turn_id"]
        normal: list[int] = []
        staller: list[int] = []
        release = trio.Event()
        outcome: dict[str, bool] = {}

        async def run(name: str, seqs: list[int], stall: trio.Event | None) -> None:
            outcome[name] = await _read_ws_turn(live.ws or "", sid, tid, 0, seqs, stall)

        with trio.fail_after(120):
            async with trio.open_nursery() as n:
                n.start_soon(run, "normal", normal, None)
                n.start_soon(run, "staller", staller, release)
                await until(lambda: "normal" in outcome)
                # The turn is over for everyone else; the staller has not read for longer than the timeout.
                await trio.sleep(SEND_TIMEOUT_S + 3)
                release.set()
            assert outcome == {"normal": True, "staller": False}, (
                f"the server never dropped a WebSocket client that did not read for {SEND_TIMEOUT_S + 3:.0f}s "
                f"(send_timeout_s={SEND_TIMEOUT_S}): {outcome}"
            )
            # The dropped client resumes after the last entry it got: the rest, no gap, no duplicate.
            resumed = await _read_ws_turn(live.ws, sid, tid, staller[-1] if staller else 0, staller)
        want = [e["seq"] for e in await log_of(port, sid) if e["stream"] == tid]
        assert normal == want
        assert resumed and staller == want
