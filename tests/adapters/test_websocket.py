"""The WebSocket front-end on a real server: the same entries as SSE, client ops, and bad frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.adapters.conftest import Server, log_entries, new_session

pytestmark = pytest.mark.slow


async def send(ws: WebSocketConnection, obj: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(obj))


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(30):
        msg: dict[str, Any] = json.loads(await ws.get_message())
        return msg


async def test_prompt_subscribe_and_receive_to_the_end(server: Server) -> None:
    assert server.ws is not None
    async with server.client() as c:
        sid = await new_session(c)
        async with open_websocket_url(server.ws) as ws:
            await send(ws, {"op": "ping", "id": 1})
            assert await recv(ws) == {"type": "pong", "id": 1}
            await send(
                ws, {"op": "prompt", "session": sid, "prompt": "[[sim tools=1 tool_s=0]] hi", "id": "p"}
            )
            ack = await recv(ws)
            assert ack["type"] == "ack" and ack["op"] == "prompt"
            tid = ack["turn_id"]
            await send(ws, {"op": "subscribe", "session": sid, "turn": tid, "id": "sub1"})
            assert (await recv(ws))["type"] == "ack"
            entries: list[dict[str, Any]] = []
            while True:
                frame = await recv(ws)
                if frame["type"] == "end":
                    assert frame["sub"] == "sub1" and frame["last_seq"] == entries[-1]["seq"]
                    break
                assert frame["type"] == "entries" and frame["sub"] == "sub1"
                entries += frame["entries"]
        assert entries[-1]["kind"] == "stream.ended" and entries[-1]["outcome"] == "completed"
        expected = [e for e in await log_entries(c, sid) if e["stream"] == tid]
        assert entries == expected


async def test_subscribe_after_resumes_without_duplicates(server: Server) -> None:
    assert server.ws is not None
    async with server.client() as c:
        sid = await new_session(c)
        r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "[[sim tokens=20 token_ms=5]]"})
        tid = r.json()["turn_id"]
        requested = next(e["seq"] for e in await log_entries(c, sid) if e["kind"] == "turn.requested")
        async with open_websocket_url(server.ws) as ws:
            await send(ws, {"op": "subscribe", "session": sid, "turn": tid, "after": requested})
            assert (await recv(ws))["type"] == "ack"
            seqs: list[int] = []
            while (frame := await recv(ws))["type"] != "end":
                seqs += [e["seq"] for e in frame["entries"]]
        expected = [
            e["seq"] for e in await log_entries(c, sid) if e["stream"] == tid and e["seq"] > requested
        ]
        assert seqs == expected


async def test_bad_frames_get_typed_errors_and_the_server_carries_on(server: Server) -> None:
    assert server.ws is not None
    async with open_websocket_url(server.ws) as ws:
        await ws.send_message(b"\x00\x01binary")
        assert (await recv(ws))["code"] == "binary_not_supported"
        await ws.send_message("{not json")
        assert (await recv(ws))["code"] == "invalid_message"
        await send(ws, {"no": "op"})
        assert (await recv(ws))["code"] == "invalid_message"
        await send(ws, {"op": "dance", "id": 7})
        err = await recv(ws)
        assert err == {"type": "error", "id": 7, "code": "unknown_op", "message": err["message"]}
        await send(ws, {"op": "subscribe", "session": "nope"})
        assert (await recv(ws))["code"] == "session_not_found"
        await send(ws, {"op": "prompt", "session": "nope", "prompt": "x"})
        assert (await recv(ws))["code"] == "session_not_found"
        await send(ws, {"op": "interrupt", "session": "nope"})
        assert (await recv(ws))["code"] == "missing_field"
        await send(ws, {"op": "ping"})
        assert (await recv(ws))["type"] == "pong"


async def test_oversized_frame_closes_with_1009_and_others_are_unaffected(server: Server) -> None:
    assert server.ws is not None
    async with open_websocket_url(server.ws) as other:
        async with open_websocket_url(server.ws) as ws:
            # The server may close (1009) while the frame is still being sent, or right after.
            with pytest.raises(ConnectionClosed) as info:
                with trio.fail_after(10):
                    await ws.send_message("x" * (2 << 20))
                    await ws.get_message()
            assert info.value.reason.code == 1009
        await send(other, {"op": "ping"})
        assert (await recv(other))["type"] == "pong"


async def test_subscription_flood_is_bounded(server: Server) -> None:
    assert server.ws is not None
    async with server.client() as c:
        sid = await new_session(c)
    async with open_websocket_url(server.ws) as ws:
        codes = []
        for i in range(70):
            await send(ws, {"op": "subscribe", "session": sid, "id": f"s{i}"})
        for _ in range(70):
            frame = await recv(ws)
            while frame["type"] == "entries":
                frame = await recv(ws)
            codes.append(frame.get("code", frame["type"]))
        assert codes.count("ack") == 64 and codes.count("too_many_subscriptions") == 6


async def test_many_subscriptions_on_one_connection_each_get_their_whole_stream(server: Server) -> None:
    """Subscriptions write their own frames when nothing is queued (adapters/websocket.py): with several
    turns streaming at once on one connection, every frame parses, and each subscription gets exactly its
    stream's entries, in order, then its ``end``."""
    assert server.ws is not None
    async with server.client() as c:
        turns: dict[str, tuple[str, str]] = {}
        for i in range(6):
            sid = await new_session(c)
            r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "[[sim tokens=80 token_ms=1]] go"})
            turns[f"sub{i}"] = (sid, r.json()["turn_id"])
        got: dict[str, list[dict[str, Any]]] = {sub: [] for sub in turns}
        ended: set[str] = set()
        async with open_websocket_url(server.ws) as ws:
            for sub, (sid, tid) in turns.items():
                await send(ws, {"op": "subscribe", "session": sid, "turn": tid, "id": sub})
            while len(ended) < len(turns):
                frame = await recv(ws)
                if frame["type"] == "ack":
                    continue
                if frame["type"] == "end":
                    assert frame["last_seq"] == got[frame["sub"]][-1]["seq"]
                    ended.add(frame["sub"])
                    continue
                assert frame["type"] == "entries" and frame["sub"] not in ended
                got[frame["sub"]] += frame["entries"]
        for sub, (sid, tid) in turns.items():
            assert got[sub] == [e for e in await log_entries(c, sid) if e["stream"] == tid]
            assert got[sub][-1]["kind"] == "stream.ended"
