"""The WebSocket writer's direct path: frames written straight to the socket, whole and in order.

It relies on trio-websocket internals; these tests fail (rather than the server silently slowing down)
when an installed trio-websocket no longer has them, and check the fallback for writes the kernel does
not take at once (a frame larger than the socket buffer, a client that reads slowly).
"""

from __future__ import annotations

import json

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, open_websocket, serve_websocket

from adapters.websocket import _DirectSend


async def test_frames_go_direct_whole_and_in_order_even_when_the_kernel_takes_part() -> None:
    big = json.dumps({"type": "entries", "blob": "x" * 8_000_000}).encode()  # > the socket buffers
    frames = [b'{"n":1}', big, b'{"n":2}'] + [json.dumps({"n": i}).encode() for i in range(3, 200)]
    direct_seen: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        direct = _DirectSend.of(ws)
        direct_seen.append(direct is not None)
        assert direct is not None
        for frame in frames:
            await direct.send_text(frame)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        got: list[str] = []
        async with open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=False, max_message_size=1 << 25
        ) as ws:
            with trio.fail_after(30):
                await trio.sleep(0.2)  # the writer fills the buffers before anything is read
                for _ in frames:
                    got.append(str(await ws.get_message()))
        nursery.cancel_scope.cancel()
    assert direct_seen == [True], "trio-websocket's internals changed: the direct path is off"
    assert [g.encode() for g in got] == frames


async def test_a_closed_connection_raises_connection_closed() -> None:
    from trio_websocket import ConnectionClosed

    outcome: list[str] = []
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        direct = _DirectSend.of(ws)
        assert direct is not None
        await ws.aclose()
        try:
            await direct.send_text(b'{"late":true}')
            outcome.append("sent")
        except ConnectionClosed:
            outcome.append("closed")
        done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False):
            with trio.fail_after(10):
                await done.wait()
        nursery.cancel_scope.cancel()
    assert outcome == ["closed"]
