"""The WebSocket writer's direct path: frames written straight to the socket, whole and in order.

It relies on trio-websocket internals; these tests fail (rather than the server silently slowing down)
when an installed trio-websocket no longer has them, and check the fallback for writes the kernel does
not take at once (a frame larger than the socket buffer, a client that reads slowly).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import trio
import trio.testing
from trio_websocket import WebSocketConnection, WebSocketRequest, open_websocket, serve_websocket

from turnstile.adapters.websocket import _DirectSend, _Sub


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


def _small_send_buffer(ws: WebSocketConnection) -> _DirectSend:
    direct = _DirectSend.of(ws)
    assert direct is not None, "trio-websocket's internals changed: the direct path is off"
    ws._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # type: ignore[attr-defined]
    return direct


def _stalled_client(port: int) -> Any:
    """A client that takes the first message and then reads nothing more until ``get_message`` is
    called (``message_queue_size=0``): a large frame after it blocks midway, deterministically."""
    return open_websocket(
        "127.0.0.1", port, "/", use_ssl=False, max_message_size=1 << 24, message_queue_size=0
    )


async def test_a_frame_cancelled_mid_write_is_finished_before_the_next() -> None:
    """Issue 13 item 5: cancelling the task that writes a frame (an unsubscribe, the connection's end)
    left half a frame on the wire, and the next frame's bytes made the rest of the stream garbage for the
    client. A frame whose first byte is out is written to its end whatever is cancelled."""
    big = json.dumps({"blob": "x" * 1_000_000}).encode()  # >> the buffers: the write blocks midway
    cancelled = trio.Event()
    mid_write: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        direct = _small_send_buffer(ws)
        await direct.send_text(b'{"n":0}')
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def write_big() -> None:
                with scope:
                    await direct.send_text(big)

            nursery.start_soon(write_big)
            await trio.testing.wait_all_tasks_blocked()  # the client reads nothing: stuck mid-frame
            mid_write.append(direct._lock.locked())
            scope.cancel()
            cancelled.set()
        await direct.send_text(b'{"n":2}')
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with _stalled_client(server.port) as ws:
            with trio.fail_after(30):
                await cancelled.wait()
                got = [await ws.get_message() for _ in range(3)]  # a torn frame raises here
        nursery.cancel_scope.cancel()
    assert mid_write == [True], "the big frame was not mid-write when cancelled: the test tests nothing"
    assert [str(g).encode() for g in got] == [b'{"n":0}', big, b'{"n":2}']


async def test_frames_of_an_unsubscribed_owner_are_never_started() -> None:
    """Issue 13 item 6: nothing of a subscription after its unsubscribe ack. A frame whose owner is
    unsubscribed before the frame's first byte is dropped — also when the owner is unsubscribed while
    the frame waits for another one to finish — and a frame whose task is cancelled while it waits is
    not written either."""
    big = json.dumps({"blob": "y" * 1_000_000}).encode()
    locked: list[bool] = []
    ready = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        direct = _small_send_buffer(ws)
        gone, later, cancelled_while_waiting = _Sub(), _Sub(), trio.CancelScope()
        gone.cancel()
        await direct.send_text(b'{"dropped":"before"}', gone)  # never started
        await direct.send_text(b'{"n":0}')
        async with trio.open_nursery() as nursery:
            nursery.start_soon(direct.send_text, big)  # mid-write, holding the lock

            async def waits_then_cancelled() -> None:
                with cancelled_while_waiting:
                    await direct.send_text(b'{"dropped":"cancelled"}')

            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(direct.send_text, b'{"dropped":"while waiting"}', later)
            nursery.start_soon(waits_then_cancelled)
            await trio.testing.wait_all_tasks_blocked()
            locked.append(direct._lock.locked())
            later.cancel()
            cancelled_while_waiting.cancel()
            ready.set()
        await direct.send_text(b'{"n":"last"}')
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with _stalled_client(server.port) as ws:
            with trio.fail_after(30):
                await ready.wait()
                got = [await ws.get_message() for _ in range(3)]  # a dropped frame would come before "last"
        nursery.cancel_scope.cancel()
    assert locked == [True], "the big frame was not mid-write: the test tests nothing"
    assert [str(g).encode() for g in got] == [b'{"n":0}', big, b'{"n":"last"}']


async def test_abort_ends_a_frame_stuck_mid_write_at_once() -> None:
    """A frame is finished whatever is cancelled, but not for ever: when the connection itself ends
    (the server shuts down, the connection failed), :meth:`_DirectSend.abort` stops a write stuck on a
    client that reads nothing, closes the socket, and the writer gets ConnectionClosed at once — not
    after ``send_timeout_s`` (an hour here)."""
    from trio_websocket import ConnectionClosed

    big = json.dumps({"blob": "z" * 1_000_000}).encode()
    outcome: list[str] = []
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        direct = _DirectSend.of(ws, send_timeout_s=3600)
        assert direct is not None
        ws._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # type: ignore[attr-defined]
        await direct.send_text(b'{"n":0}')
        async with trio.open_nursery() as nursery:

            async def write_big() -> None:
                try:
                    await direct.send_text(big)
                    outcome.append("written")
                except ConnectionClosed as exc:
                    outcome.append(f"closed: {exc.reason.reason}")

            nursery.start_soon(write_big)
            await trio.testing.wait_all_tasks_blocked()
            outcome.append(f"locked={direct._lock.locked()}")
            nursery.cancel_scope.cancel()  # the connection's end, as in _Connection.run: a cancellation
            direct.abort()  # alone does not stop a started frame (see above); abort does
        done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        async with _stalled_client(server.port):
            with trio.fail_after(30):
                await done.wait()  # while the client still reads nothing
        nursery.cancel_scope.cancel()
    assert outcome == ["locked=True", "closed: the connection is closing"]
