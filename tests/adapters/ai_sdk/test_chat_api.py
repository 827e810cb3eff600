"""The chat endpoints over HTTP on a real server on loopback (the simulator as the agent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.adapters.ai_sdk.conftest import map_turn, sse_body
from tests.adapters.conftest import Server, log_entries, start_server
from turnstile.adapters.config import ServerConfig
from turnstile.engine.log import decode_entry

pytestmark = pytest.mark.slow

SLOW = "[[sim tokens=30 token_ms=400 ttft_ms=0]]"  # ~1.2 s of text deltas at the server's --speed 0.1


def post_body(chat: str, text: str, **extra: Any) -> dict[str, Any]:
    user = {"id": f"u-{text[:8]}", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat, "messages": [user], "trigger": "submit-message", "messageId": None, **extra}


def events(text: str) -> list[dict[str, Any]]:
    """The SSE events of a body: ``{"id": seq or None, "data": chunk or "[DONE]"}``."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {"id": None}
        for line in block.splitlines():
            if line.startswith("id: "):
                fields["id"] = int(line[4:])
            elif line.startswith("data: "):
                raw = line[6:]
                fields["data"] = raw if raw == "[DONE]" else json.loads(raw)
        if "data" in fields:
            out.append(fields)
    return out


def chunks(text: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events(text) if e["data"] != "[DONE]"]


async def logged_turn_body(c: httpx.AsyncClient, sid: str, tid: str) -> str:
    """What the mapping makes of the turn as logged: the body a client must have received."""
    entries = [decode_entry(json.dumps(e).encode()) for e in await log_entries(c, sid)]
    return sse_body(map_turn([e for e in entries if e.stream == tid], tid))


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    return await start_server(nursery, tmp_path, speed=0.1)


async def test_a_post_answers_with_the_turns_ui_message_stream(server: Server) -> None:
    async with server.client() as c:
        r = await c.post(
            "/v1/chat", json=post_body("chat-a", "hi [[sim thinking=2 tools=1 tool_s=0 tokens=3]]")
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert r.headers["cache-control"].startswith("no-cache")
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["x-turn-id"] == "t1"
        evs = events(r.text)
        assert evs[0]["data"] == {"type": "start", "messageId": "t1"}
        assert evs[-1] == {"id": None, "data": "[DONE]"}
        assert evs[-2]["data"] == {"type": "finish", "finishReason": "stop"}
        kinds = [e["data"]["type"] for e in evs[:-1]]
        assert {"reasoning-delta", "tool-input-available", "tool-output-available", "text-delta"} <= set(
            kinds
        )
        # id: lines are the log's seqs, increasing, and the body is exactly the logged turn's mapping.
        ids = [e["id"] for e in evs if e["id"] is not None]
        assert ids == sorted(set(ids))
        session = (await c.get("/v1/sessions/chat-a")).json()  # the chat is a session
        assert ids[-1] == session["last_seq"] or ids[-1] < session["last_seq"]
        assert r.text.endswith(await logged_turn_body(c, "chat-a", "t1"))


async def test_a_chat_is_one_session_and_its_history_folds_the_log(server: Server) -> None:
    async with server.client() as c:
        for n, text in enumerate(['one [[sim say="first answer"]]', 'two [[sim say="second answer"]]'], 1):
            r = await c.post("/v1/chat", json=post_body("chat-h", text))
            assert r.headers["x-turn-id"] == f"t{n}"
        sessions = [s["id"] for s in (await c.get("/v1/sessions")).json()["sessions"]]
        assert sessions.count("chat-h") == 1
        history = (await c.get("/v1/chat/chat-h/messages")).json()
        assert [(m["id"], m["role"]) for m in history] == [
            ("t1-user", "user"),
            ("t1", "assistant"),
            ("t2-user", "user"),
            ("t2", "assistant"),
        ]
        assert history[2]["parts"] == [{"type": "text", "text": 'two [[sim say="second answer"]]'}]
        texts = [p["text"] for p in history[3]["parts"] if p["type"] == "text"]
        assert texts == ["second answer"]
        assert (await c.get("/v1/chat/chat-h/stream")).status_code == 204  # nothing runs


async def test_resume_replays_the_running_turn_then_goes_live(server: Server) -> None:
    async with server.client() as c:
        got: list[str] = []
        async with c.stream("POST", "/v1/chat", json=post_body("chat-r", f"slow {SLOW}")) as r:
            async for line in r.aiter_lines():
                got.append(line)
                if '"text-delta"' in line and sum('"text-delta"' in g for g in got) == 3:
                    break  # drop the connection mid-answer
        r = await c.get("/v1/chat/chat-r/stream")  # what useChat({resume: true}) calls
        assert r.status_code == 200 and r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        resumed = chunks(r.text)
        assert resumed[0] == {"type": "start", "messageId": "t1"}  # the whole message again, same id
        assert resumed[-1]["type"] == "finish" and r.text.endswith("data: [DONE]\n\n")
        assert r.text.endswith(await logged_turn_body(c, "chat-r", "t1"))
        assert "".join(ch["delta"] for ch in resumed if ch["type"] == "text-delta").count(" ") >= 29
        assert (await c.get("/v1/chat/chat-r/stream")).status_code == 204  # after the end


async def test_last_event_id_resumes_exactly_after_that_seq(server: Server) -> None:
    async with server.client() as c:
        full = events((await c.post("/v1/chat", json=post_body("chat-l", "x [[sim tokens=5]]"))).text)
        marked = [i for i, e in enumerate(full) if e["id"] is not None]
        for i in (marked[0], marked[len(marked) // 2], marked[-2]):
            r = await c.get("/v1/chat/chat-l/stream", headers={"last-event-id": str(full[i]["id"])})
            assert r.status_code == 200
            assert events(r.text) == full[i + 1 :]
        r = await c.get("/v1/chat/chat-l/stream", params={"after": str(full[marked[-1]]["id"])})
        assert r.status_code == 204  # at the terminal entry: nothing more
        r = await c.get("/v1/chat/chat-l/stream", headers={"last-event-id": "99999"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_last_event_id"


async def test_stop_interrupts_the_running_turn(server: Server) -> None:
    async with server.client() as c, trio.open_nursery() as nursery:
        bodies: list[str] = []
        started = trio.Event()

        async def talk() -> None:
            async with c.stream("POST", "/v1/chat", json=post_body("chat-s", f"long {SLOW}")) as r:
                text = ""
                async for part in r.aiter_text():
                    text += part
                    if '"text-delta"' in text:
                        started.set()
                bodies.append(text)

        nursery.start_soon(talk)
        with trio.fail_after(30):
            await started.wait()
        r = await c.post("/v1/chat/chat-s/stop", json={})
        assert (r.status_code, r.json()) == (202, {"chat_id": "chat-s", "interrupted": ["t1"]})
    answer = chunks(bodies[0])
    assert answer[-1]["type"] == "abort" and "interrupt" in answer[-1]["reason"]
    assert bodies[0].endswith("data: [DONE]\n\n")
    async with server.client() as c:
        r = await c.post("/v1/chat/chat-s/stop", json={})
        assert (r.status_code, r.json()) == (200, {"chat_id": "chat-s", "interrupted": []})
        assert (await c.post("/v1/chat/nobody/stop", json={})).status_code == 404
        # The chat goes on after an interrupt.
        r = await c.post("/v1/chat", json=post_body("chat-s", '[[sim say="still here"]]'))
        assert chunks(r.text)[-1] == {"type": "finish", "finishReason": "stop"}


async def test_an_api_error_is_an_error_chunk_with_the_reason(server: Server) -> None:
    async with server.client() as c:
        r = await c.post("/v1/chat", json=post_body("chat-e", "[[sim api_error=529 retries=2]]"))
        got = chunks(r.text)
        retries = [ch for ch in got if ch["type"] == "data-turnstile-api-retry"]
        assert [ch["data"]["attempt"] for ch in retries] == [1, 2] and all(ch["transient"] for ch in retries)
        assert {"type": "error", "errorText": "API Error: 529 Overloaded"} in got
        assert got[-1] == {"type": "finish", "finishReason": "error"}


async def test_unknown_chats_and_bad_input(server: Server) -> None:
    async with server.client() as c:
        assert (await c.get("/v1/chat/never-used/stream")).status_code == 204
        assert (await c.get("/v1/chat/never-used/messages")).json() == []
        r = await c.get("/v1/chat/..bad/messages")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_chat_id"
        r = await c.post("/v1/chat", json=post_body("bad id!", "x"))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_chat_id"
        r = await c.post("/v1/chat", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = await c.post("/v1/chat", json={"id": "c", "messages": [{"id": "u", "role": "user", "parts": []}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_prompt"
        answered = {
            "id": "t1",
            "role": "assistant",
            "parts": [
                {
                    "type": "dynamic-tool",
                    "toolName": "Bash",
                    "toolCallId": "toolu_1",
                    "state": "approval-responded",
                    "approval": {"id": "req_1", "approved": True},
                }
            ],
        }
        r = await c.post(
            "/v1/chat", json={"id": "c", "messages": [post_body("c", "x")["messages"][0], answered]}
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_pending_approval"
        assert (await c.get("/v1/sessions/c")).status_code == 404  # nothing was started
        r = await c.post("/v1/chat", json=post_body("c", "x" * ((1 << 20) + 1)))
        assert r.status_code == 413 and r.json()["error"]["code"] == "prompt_too_large"
        r = await c.post("/v1/chat", content=b" " * (9 << 20), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        r = await c.get("/v1/chat")
        assert r.status_code == 405


async def test_a_token_guards_the_chat_too(nursery: trio.Nursery, tmp_path: Path) -> None:
    sc = ServerConfig(port=0, ws_port=-1, token="s3cret", heartbeat_s=0.5, send_timeout_s=2.0)
    server = await start_server(nursery, tmp_path, server=sc, speed=0)
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as anonymous:
        assert (await anonymous.post("/v1/chat", json=post_body("g", "x"))).status_code == 401
        assert (await anonymous.get("/v1/chat/g/stream")).status_code == 401
    async with server.client() as c:
        r = await c.post("/v1/chat", json=post_body("g", '[[sim say="ok"]]'))
        assert r.status_code == 200 and chunks(r.text)[-1]["type"] == "finish"


async def test_a_reader_that_falls_behind_gets_the_same_stream(nursery: trio.Nursery, tmp_path: Path) -> None:
    # A tiny live buffer: the response falls behind and re-reads the log; the mapping must not notice.
    server = await start_server(nursery, tmp_path, speed=0, subscriber_buffer=2)
    async with server.client() as c:
        r = await c.post("/v1/chat", json=post_body("chat-lag", "[[sim tokens=400 text=400 thinking=50]]"))
        assert r.text.endswith(await logged_turn_body(c, "chat-lag", "t1"))
        metrics = (await c.get("/metrics")).text
        lagged = next(
            line for line in metrics.splitlines() if line.startswith("turnstile_lagged_subscribers_total")
        )
        assert float(lagged.split()[-1]) > 0, "the test did not make the reader lag"
