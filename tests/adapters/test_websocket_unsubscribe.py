"""Unsubscribe on a real server: counted exactly, never a torn frame, nothing of a subscription after its ack.

Issue 13, item 5 and the item-6 bullet "``entries`` frames can arrive after the unsubscribe ack". Every test
runs a real server (``start_server``) and a real trio-websocket client; a corrupt frame makes the client's
wsproto raise (the connection ends with 1002 or 1007), and every text frame must parse as JSON. The server's
sockets get a small send buffer (:func:`small_send_buffers`), so the kernel takes a large ``entries`` frame
(~190 KB: 512 entries of catch-up) in many writes and an unsubscribe nearly always lands mid-frame, not
only under load. The item-6 race (a pump that already held a batch when it was cancelled) is provoked by
pipelining the unsubscribe right behind the subscribe.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.adapters.conftest import Server, log_entries, new_session, start_server
from turnstile.adapters import websocket
from turnstile.adapters.config import ServerConfig

pytestmark = pytest.mark.slow

BIG_TURN = "[[sim tokens=5000 token_ms=0 ttft_ms=0]] go"  # ~5,000 entries, ~1.9 MB of JSON
SMALL_TURN = "[[sim tokens=20 token_ms=0 ttft_ms=0]] go"
SEND_BUFFER = 8192  # bytes (the kernel doubles it): a catch-up frame (~190 KB) takes many writes
LIMIT_S = 60


@pytest.fixture
def small_send_buffers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shrink SO_SNDBUF on every WebSocket connection the server accepts (a test hook on the direct sender,
    which every connection builds once, before its first frame)."""
    original = websocket._DirectSend.of.__func__  # type: ignore[attr-defined]

    def of(cls: type[websocket._DirectSend], ws: WebSocketConnection, send_timeout_s: float = 10.0) -> Any:
        stream = getattr(ws, "_stream", None)
        assert isinstance(stream, trio.SocketStream), "trio-websocket's internals changed"
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        return original(cls, ws, send_timeout_s)

    monkeypatch.setattr(websocket._DirectSend, "of", classmethod(of))
    yield


@pytest.fixture
async def roomy_server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    """A server whose writes may take 30 s (not the usual 2): with the small send buffers, a loaded
    machine must not close the connection for slowness, which would look like the defect under test."""
    config = ServerConfig(port=0, ws_port=0, heartbeat_s=0.5, send_timeout_s=30.0)
    return await start_server(nursery, tmp_path, server=config)


async def send(ws: WebSocketConnection, obj: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(obj))


async def subscribers(c: httpx.AsyncClient) -> int:
    """The server's live log subscriptions (``turnstile_subscribers`` in /metrics): one per running pump."""
    text = (await c.get("/metrics")).text
    match = re.search(r"^turnstile_subscribers (\d+)(?:\.0)?$", text, re.M)
    assert match, text
    return int(match.group(1))


async def wait_subscribers(c: httpx.AsyncClient, want: int) -> None:
    with trio.move_on_after(LIMIT_S):
        while await subscribers(c) != want:  # noqa: ASYNC110 (the server's state: poll it)
            await trio.sleep(0.05)
    assert await subscribers(c) == want


async def session_with_turn(c: httpx.AsyncClient, prompt: str = BIG_TURN) -> tuple[str, str]:
    """A session with one completed turn (by default one that logged ~5,000 entries)."""
    sid = await new_session(c)
    r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": prompt})
    assert r.status_code == 202, r.text
    tid: str = r.json()["turn_id"]
    with trio.fail_after(LIMIT_S):
        while not (await c.get(f"/v1/sessions/{sid}/turns/{tid}")).json()["ended"]:  # noqa: ASYNC110
            await trio.sleep(0.05)
    return sid, tid


@dataclass
class Wire:
    """Every frame one client received, in order, parsed (a frame that does not parse is a failure)."""

    frames: list[dict[str, Any]] = field(default_factory=list)

    async def read_until(self, ws: WebSocketConnection, **match: Any) -> None:
        """Read until a frame with these fields has arrived (maybe already)."""
        if any(_matches(f, match) for f in self.frames):
            return
        with trio.fail_after(LIMIT_S):
            while True:
                self.frames.append(json.loads(await ws.get_message()))
                if _matches(self.frames[-1], match):
                    return

    def entries_of(self, sub: str) -> list[int]:
        return [
            e["seq"] for f in self.frames if f["type"] == "entries" and f["sub"] == sub for e in f["entries"]
        ]


def _matches(frame: dict[str, Any], match: dict[str, Any]) -> bool:
    return all(frame.get(k) == v for k, v in match.items())


async def exchange(ws: WebSocketConnection, wire: Wire, ops: list[dict[str, Any]], **until: Any) -> None:
    """Send ``ops`` while reading, until a frame like ``until`` arrives. (A client that sends a flood without
    reading stalls the server's writes and is closed after ``send_timeout_s``, as it should be.)"""

    async def send_ops() -> None:
        for op in ops:
            await send(ws, op)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_ops)
        await wire.read_until(ws, **until)


async def test_subscribe_unsubscribe_one_id_a_thousand_times_leaves_nothing_behind(server: Server) -> None:
    """The old pump's exit removed the *new* subscription with the same id: 1,000 x (subscribe k,
    unsubscribe k) left ~245 live subscriptions no unsubscribe could reach, past the cap of 64."""
    assert server.ws is not None
    rounds = 1000
    checked: list[str] = []
    async with server.client() as c, trio.open_nursery() as nursery:
        sid, _ = await session_with_turn(c, SMALL_TURN)
        peak = 0
        sampling = trio.CancelScope()

        async def sample() -> None:  # the server's count, every few ms (a sampling rate, not a wait)
            nonlocal peak
            with sampling:
                while True:
                    peak = max(peak, await subscribers(c))
                    await trio.sleep(0.005)

        nursery.start_soon(sample)
        async with open_websocket_url(server.ws, max_message_size=1 << 24, receive_buffer_size=1 << 16) as ws:
            wire = Wire()
            flood = [
                {"op": "subscribe", "session": sid, "id": "k"},
                {"op": "unsubscribe", "sub": "k", "id": "u"},
            ] * rounds
            await exchange(ws, wire, [*flood, {"op": "ping", "id": "flood"}], type="pong", id="flood")
            sampling.cancel()
            answers = [f for f in wire.frames if f["type"] in ("ack", "error")]
            subscribed = sum(1 for f in answers if f.get("op") == "subscribe")
            unsubscribed = sum(1 for f in answers if f.get("op") == "unsubscribe")
            refused = {f["code"] for f in answers if f["type"] == "error"}
            # On the server: never more than the cap at any sample, and nothing left running.
            assert peak <= 64, f"{peak} live subscriptions on one connection (cap 64)"
            await wait_subscribers(c, 0)
            assert len(answers) == 2 * rounds, answers[-5:]
            # Each subscribe is acked (or refused at the cap); the unsubscribe after it finds it exactly
            # when it was acked.
            assert subscribed == unsubscribed, (subscribed, unsubscribed, refused)
            assert refused <= {"too_many_subscriptions", "unknown_subscription"}
            assert subscribed > rounds // 2, f"only {subscribed} of {rounds} subscribes acked: {refused}"
            # The id is usable and cancellable again.
            mark = len(wire.frames)
            ops = [{"op": "subscribe", "session": sid, "id": "k"}, {"op": "ping", "id": "subscribed"}]
            await exchange(ws, wire, ops, type="pong", id="subscribed")
            assert {"type": "ack", "op": "subscribe", "id": "k", "sub": "k"} in wire.frames[mark:]
            await wait_subscribers(c, 1)
            ops = [{"op": "unsubscribe", "sub": "k", "id": "last"}]
            await exchange(ws, wire, ops, type="ack", op="unsubscribe", id="last")
            await wait_subscribers(c, 0)
        checked.append("all")
    assert checked == ["all"]


async def test_the_cap_counts_live_subscriptions_exactly(server: Server) -> None:
    """64 live subscriptions: every 65th subscribe is refused, however many unsubscribes came between."""
    assert server.ws is not None
    async with server.client() as c:
        sid, _ = await session_with_turn(c, SMALL_TURN)
        async with open_websocket_url(server.ws, max_message_size=1 << 24, receive_buffer_size=1 << 16) as ws:
            wire = Wire()
            ops = [{"op": "subscribe", "session": sid, "id": f"live{i}"} for i in range(64)]
            ops += [
                {"op": "subscribe", "session": sid, "id": "churn"},
                {"op": "unsubscribe", "sub": "churn"},
            ] * 50
            await exchange(ws, wire, [*ops, {"op": "ping", "id": "end"}], type="pong", id="end")
            acks = [f["sub"] for f in wire.frames if f["type"] == "ack" and f["op"] == "subscribe"]
            codes = [f["code"] for f in wire.frames if f["type"] == "error"]
            assert acks == [f"live{i}" for i in range(64)]
            assert codes == ["too_many_subscriptions", "unknown_subscription"] * 50
            await wait_subscribers(c, 64)
            ops = [{"op": "unsubscribe", "sub": f"live{i}", "id": i} for i in range(64)]
            await exchange(ws, wire, ops, type="ack", op="unsubscribe", id=63)
            await wait_subscribers(c, 0)


async def _churn(server: Server, sid: str, tid: str, mode: str) -> tuple[Wire, BaseException | None]:
    """On one connection: a bystander subscribes to the whole big turn; then 50 times, subscribe ``x{i}``
    to it and unsubscribe it — ``pipelined``: at once, back to back; ``mid-stream``: as soon as its
    first ``entries`` frame arrives (the next one is being written then); ``behind-pongs``: the same
    with a ping just before, so that frames queue in the connection's outbox behind the pong. Read on
    until the last pong and the bystander's ``end``."""
    assert server.ws is not None
    wire = Wire()
    try:
        async with open_websocket_url(server.ws, max_message_size=1 << 24, receive_buffer_size=1 << 16) as ws:
            ops: list[dict[str, Any]] = [{"op": "subscribe", "session": sid, "turn": tid, "id": "keep"}]
            for i in range(50):
                ops.append({"op": "subscribe", "session": sid, "turn": tid, "id": f"x{i}"})
                if mode != "pipelined":
                    for op in ops:
                        await send(ws, op)
                    ops = []
                    await wire.read_until(ws, type="entries", sub=f"x{i}")
                if mode == "behind-pongs":
                    ops.append({"op": "ping", "id": f"p{i}"})
                ops.append({"op": "unsubscribe", "sub": f"x{i}", "id": f"u{i}"})
            ops.append({"op": "ping", "id": "last"})
            await exchange(ws, wire, ops, type="pong", id="last")
            await wire.read_until(ws, type="end", sub="keep")
    except ConnectionClosed as exc:  # the client's wsproto found a corrupt frame (1002)
        return wire, exc
    return wire, None


@pytest.mark.parametrize("mode", ["mid-stream", "behind-pongs"])
async def test_unsubscribe_mid_frame_never_tears_a_frame(
    roomy_server: Server, small_send_buffers: None, mode: str
) -> None:
    """Cancelling a subscription mid-write left half a frame on the wire: the client got "reserved bits
    must be 0" / invalid UTF-8, then 1002, and every subscription on the connection died."""
    async with roomy_server.client() as c:
        sid, tid = await session_with_turn(c)
        wire, closed = await _churn(roomy_server, sid, tid, mode)
        assert closed is None, f"the connection died: {closed!r} after {len(wire.frames)} frames"
        want = [e["seq"] for e in await log_entries(c, sid) if e["stream"] == tid]
        assert wire.entries_of("keep") == want, "the bystander subscription lost entries"
        ends = [f for f in wire.frames if f["type"] == "end" and f["sub"] == "keep"]
        assert ends == [{"type": "end", "sub": "keep", "last_seq": want[-1]}]
        await wait_subscribers(c, 0)


@pytest.mark.parametrize("mode", ["pipelined", "mid-stream", "behind-pongs"])
async def test_nothing_of_a_subscription_follows_its_unsubscribe_ack(
    roomy_server: Server, small_send_buffers: None, mode: str
) -> None:
    """Once ``{"type":"ack","op":"unsubscribe"}`` is on the wire, no ``entries`` or ``end`` frame of that
    subscription follows — not one already queued in the outbox, not one mid-write (that one finishes
    before the ack), and what came before the ack is a gap-free prefix of the turn."""
    async with roomy_server.client() as c:
        sid, tid = await session_with_turn(c)
        wire, closed = await _churn(roomy_server, sid, tid, mode)
        assert closed is None, f"the connection died: {closed!r} after {len(wire.frames)} frames"
        want = [e["seq"] for e in await log_entries(c, sid) if e["stream"] == tid]
        late: list[str] = []
        cancelled_mid_stream = 0
        for i in range(50):
            sub = f"x{i}"
            answer = [n for n, f in enumerate(wire.frames) if f.get("id") == f"u{i}" and f["type"] != "pong"]
            assert len(answer) == 1, f"no single answer to unsubscribe {sub}"
            after = wire.frames[answer[0] + 1 :]
            late += [f"{sub}: {f['type']} after its ack" for f in after if f.get("sub") == sub]
            got = wire.entries_of(sub)
            assert got == want[: len(got)], f"{sub}: not a gap-free prefix of the turn"
            if wire.frames[answer[0]]["type"] == "ack" and len(got) < len(want):
                cancelled_mid_stream += 1
        assert not late, late[:5]
        assert cancelled_mid_stream > 0, (
            "no unsubscribe landed while its entries streamed: this tests nothing"
        )
        await wait_subscribers(c, 0)
