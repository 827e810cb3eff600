"""The WebSocket writer's direct path: frames written straight to the socket, whole and in order.

It relies on trio-websocket internals; these tests fail (rather than the server silently slowing down)
when an installed trio-websocket no longer has them, and check the fallback for writes the kernel does
not take at once (a frame larger than the socket buffer, a client that reads slowly).
"""

from __future__ import annotations

import json

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, open_websocket, serve_websocket

from turnstile.adapters.websocket import _DirectSend


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


async def test_concurrent_senders_never_interleave_and_keep_their_own_order() -> None:
    """Subscriptions send their frames from their own tasks (adapters/websocket.py _send_entries): frames
    from several tasks, some larger than the socket buffers (written partly, then under the stream lock),
    arrive whole, and each task's frames in the order it sent them."""
    senders = 4
    per_sender = 60

    def frame(s: int, i: int) -> bytes:
        blob = "y" * (3_000_000 if i % 20 == 7 else 10)  # a few frames the kernel cannot take at once
        return json.dumps({"s": s, "i": i, "blob": blob}).encode()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        direct = _DirectSend.of(ws)
        assert direct is not None

        async def send_all(s: int) -> None:
            for i in range(per_sender):
                await direct.send_text(frame(s, i))

        async with trio.open_nursery() as senders_nursery:
            for s in range(senders):
                senders_nursery.start_soon(send_all, s)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        seen: dict[int, list[int]] = {s: [] for s in range(senders)}
        async with open_websocket(
            "127.0.0.1", server.port, "/", use_ssl=False, max_message_size=1 << 25
        ) as ws:
            with trio.fail_after(60):
                await trio.sleep(0.2)  # let the senders fill the buffers first
                for _ in range(senders * per_sender):
                    message = json.loads(str(await ws.get_message()))  # a torn frame would not parse
                    seen[message["s"]].append(message["i"])
        nursery.cancel_scope.cancel()
    assert seen == {s: list(range(per_sender)) for s in range(senders)}
