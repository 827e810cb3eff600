"""Bad WebSocket input: typed ``error`` frames or the right close codes; other connections unaffected.

While one connection misbehaves, a second one holds a live turn subscription; it must receive every
entry of that turn and its ``end``, whatever the first one does.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.reliability.clients import Received, fetch_log, read_ws
from tests.reliability.matrix import run_turn
from tests.reliability.servers import Live, inproc_server, runtime_config

pytestmark = pytest.mark.slow

MIB = 1 << 20


async def _answer(ws: WebSocketConnection, limit_s: float = 10) -> dict[str, Any]:
    """The next frame that is not a subscription's entries (acks, errors, pongs, ends)."""
    with trio.fail_after(limit_s):
        while True:
            frame: dict[str, Any] = json.loads(await ws.get_message())
            if frame.get("type") not in ("entries",):
                return frame


async def _watch_other(live: Live, c: httpx.AsyncClient, done: trio.Event, out: dict[str, Any]) -> None:
    """A well-behaved connection: subscribe to a hanging turn, then check it gets all of it."""
    assert live.ws is not None
    sid = (await c.post("/v1/sessions", json={})).json()["id"]
    r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "[[sim hang=mid]]"})
    tid = r.json()["turn_id"]
    rec = Received("bystander")
    out["rec"], out["sid"], out["tid"] = rec, sid, tid
    async with trio.open_nursery() as n:
        n.start_soon(lambda: read_ws(live.ws, rec, session=sid, stream=tid, subscribe_turn=True, deadline=60))  # type: ignore[arg-type]
        await done.wait()
        # The misbehaving connection is done: end the turn; the bystander must get the end.
        await c.post(f"/v1/sessions/{sid}/turns/{tid}/interrupt", json={})


async def test_bad_frames_get_typed_errors_and_others_are_unaffected(tmp_path: Path) -> None:
    rc = runtime_config(tmp_path / "data", pool_size=1)
    async with inproc_server(rc) as live, live.client() as c:
        assert live.ws is not None
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        outcome, _ = await run_turn(c, sid, "hi")
        assert outcome == "completed"
        done = trio.Event()
        other: dict[str, Any] = {}
        wrong: list[str] = []
        async with trio.open_nursery() as n:
            n.start_soon(_watch_other, live, c, done, other)
            async with open_websocket_url(live.ws) as ws:
                cases: list[tuple[str | bytes, str]] = [
                    (b"\x00\x01binary", "binary_not_supported"),
                    ("not json", "invalid_message"),
                    ("{", "invalid_message"),
                    ("[]", "invalid_message"),
                    ("{}", "invalid_message"),
                    ('{"op": 5}', "invalid_message"),
                    ('{"op": null}', "invalid_message"),
                    ('{"op": "subscribe", "after": "x", "session": "s"}', "invalid_message"),
                    ('{"op": "subscribe", "session": "s", "after": 1e30}', "invalid_message"),
                    (json.dumps({"op": "subscribe", "session": sid, "after": 10**23}), "invalid_after"),
                    ('{"op": "subscribe", "id": {"a": 1}, "session": "s"}', "invalid_message"),
                    ('{"op": "launch"}', "unknown_op"),
                    ('{"op": ""}', "unknown_op"),
                    ('{"op": "subscribe"}', "missing_field"),
                    ('{"op": "subscribe", "session": "nope"}', "session_not_found"),
                    (json.dumps({"op": "subscribe", "session": "x" * 5000}), "session_not_found"),
                    (json.dumps({"op": "subscribe", "session": sid, "turn": "t99"}), "turn_not_found"),
                    (json.dumps({"op": "subscribe", "session": sid, "after": -1}), "invalid_after"),
                    (json.dumps({"op": "subscribe", "session": sid, "after": 10**9}), "invalid_after"),
                    ('{"op": "unsubscribe", "sub": "nope"}', "unknown_subscription"),
                    ('{"op": "unsubscribe"}', "missing_field"),
                    ('{"op": "prompt", "session": "nope", "prompt": "x"}', "session_not_found"),
                    (json.dumps({"op": "prompt", "session": sid}), "empty_prompt"),
                    (json.dumps({"op": "prompt", "session": sid, "prompt": "  "}), "empty_prompt"),
                    (json.dumps({"op": "interrupt", "session": sid}), "missing_field"),
                    (json.dumps({"op": "interrupt", "session": sid, "turn": "t99"}), "turn_not_found"),
                ]
                for i, (frame, code) in enumerate(cases):
                    if (
                        isinstance(frame, str)
                        and frame.startswith("{")
                        and frame.endswith("}")
                        and '"id"' not in frame
                    ):
                        frame = frame[:-1] + (", " if frame != "{}" else "") + f'"id": "c{i}"' + "}"
                    await ws.send_message(frame)
                    answer = await _answer(ws)
                    if answer.get("type") != "error" or answer.get("code") != code:
                        wrong.append(f"{str(frame)[:80]}: {answer}")
                # Still usable after all of that.
                await ws.send_message('{"op": "ping", "id": 1}')
                if (await _answer(ws)).get("type") != "pong":
                    wrong.append("no pong after the bad frames")
                # A flood of subscribes: 64 are acked, then too_many_subscriptions; nothing breaks.
                acks = errors = 0
                for i in range(100):
                    await ws.send_message(
                        json.dumps({"op": "subscribe", "session": sid, "turn": "t1", "id": f"f{i}"})
                    )
                with trio.fail_after(20):
                    while acks + errors < 100:
                        frame_ = json.loads(await ws.get_message())
                        if frame_.get("type") == "ack":
                            acks += 1
                        elif frame_.get("type") == "error":
                            errors += 1
                            if frame_.get("code") != "too_many_subscriptions":
                                wrong.append(f"flood: {frame_}")
                if acks < 64 or acks + errors != 100:
                    wrong.append(f"flood of 100 subscribes: {acks} acks, {errors} errors")
                await ws.send_message(json.dumps({"op": "subscribe", "session": sid, "id": "dup"}))
                await ws.send_message(json.dumps({"op": "subscribe", "session": sid, "id": "dup"}))
            # An oversized frame closes that connection with 1009, and only that one.
            async with open_websocket_url(live.ws) as big:
                await big.send_message(
                    json.dumps({"op": "prompt", "session": sid, "prompt": "x" * (MIB + 10)})
                )
                with trio.fail_after(10):
                    try:
                        while True:
                            await big.get_message()
                    except ConnectionClosed as exc:
                        if exc.reason is None or exc.reason.code != 1009:
                            wrong.append(f"oversized frame closed with {exc.reason}")
            # Random frames: only typed answers; never a 1011 (internal error) close.
            rng = random.Random(11)
            async with open_websocket_url(live.ws) as fuzz:
                for i in range(200):
                    await fuzz.send_message(_random_frame(rng, sid, i))
                    try:
                        answer = await _answer(fuzz)
                    except ConnectionClosed as exc:
                        wrong.append(f"random frame {i} closed the connection: {exc.reason}")
                        break
                    if answer.get("type") not in ("error", "ack", "pong", "end"):
                        wrong.append(f"random frame {i}: {answer}")
            done.set()
        rec: Received = other["rec"]
        _raw, entries = await fetch_log(c, other["sid"])
        want = [e["seq"] for e in entries if e.get("stream") == other["tid"]]
        if rec.seqs != want or rec.terminal is None or rec.connections != 1 or rec.errors:
            wrong.append(
                f"the bystander got {rec.seqs} (want {want}), {rec.connections} connections, {rec.errors}"
            )
        assert (await c.get("/healthz")).status_code == 200
        outcome, problems = await run_turn(c, sid, "still fine?")
        assert outcome == "completed", problems
        assert not wrong, "\n".join(wrong)


def _random_frame(rng: random.Random, sid: str, i: int) -> str:
    values: list[Any] = [None, True, -1, 0, 2**40, 1.5, "", "x", [], {}, sid, "t1", "t99", "€" * 3]
    op = rng.choice(["subscribe", "unsubscribe", "ping", "interrupt", "nope", 7, None, ""])
    frame: dict[str, Any] = {"op": op, "id": f"r{i}"}
    for key in rng.sample(["session", "turn", "after", "sub", "prompt", "extra"], rng.randint(0, 4)):
        frame[key] = rng.choice(values)
    if op == "interrupt" and frame.get("session") == sid:
        frame["turn"] = "t99"  # never interrupt the bystander's real turn by chance
    return json.dumps(frame)
