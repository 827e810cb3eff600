"""The endpoints the console and the replay viewer stand on, against a real server on loopback: session
titles (logged, surviving a restart), the live session feed, delete, the workspace directory picker (and its
escapes), GET /v1/server, and the replay endpoints (what ``turnstile replay --json --trace`` prints)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.adapters.conftest import Server, log_entries, new_session, new_turn, start_server
from turnstile.adapters.commands.replay import replay_text
from turnstile.adapters.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "transcripts"
TURNSTILE_LOG = FIXTURES / "turnstile__tool-use-two-turns.ndjson"
RAW_TRANSCRIPT = FIXTURES / "jackey8616__roma__test__fixtures__claude-stream__tool-use-partial-messages.jsonl"


def config(**kw: Any) -> ServerConfig:
    return ServerConfig(port=0, ws_port=-1, heartbeat_s=0.5, send_timeout_s=2.0, **kw)


async def finish(client: httpx.AsyncClient, sid: str, tid: str) -> dict[str, Any]:
    """Wait (on the turn's SSE) until the turn has ended; return the turn."""
    async with client.stream("GET", f"/v1/sessions/{sid}/turns/{tid}/events") as r:
        async for _ in r.aiter_lines():
            pass
    turn: dict[str, Any] = (await client.get(f"/v1/sessions/{sid}/turns/{tid}")).json()
    assert turn["ended"], turn
    return turn


# --- titles ----------------------------------------------------------------------------------------------


async def test_session_title_is_logged_and_survives_a_restart(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, server=config())
        async with server.client() as c:
            sid = await new_session(c)
            info = (await c.get(f"/v1/sessions/{sid}")).json()
            assert info["title"] is None and info["first_prompt"] is None and info["restarted"] is False
            tid, _ = await new_turn(c, sid, "Fix the flaky test [[sim text=3]]")
            await finish(c, sid, tid)

            r = await c.patch(f"/v1/sessions/{sid}", json={"title": "  Fix the\n   build  "})
            assert r.status_code == 200, r.text
            assert r.json()["title"] == "Fix the build"
            listed = {s["id"]: s for s in (await c.get("/v1/sessions")).json()["sessions"]}
            assert listed[sid]["title"] == "Fix the build"
            assert listed[sid]["first_prompt"] == "Fix the flaky test [[sim text=3]]"
            assert listed[sid]["last_activity"] is not None
            titled = [e for e in await log_entries(c, sid) if e["kind"] == "session.titled"]
            assert [e["title"] for e in titled] == ["Fix the build"]

            # Bad titles are refused with a reason; nothing is logged for them.
            for body, code in [
                ({"title": "x" * 201}, "invalid_title"),
                ({"title": "bell\x07"}, "invalid_title"),
                ({"title": "ok", "extra": 1}, "invalid_body"),
                ({}, "invalid_body"),
            ]:
                r = await c.patch(f"/v1/sessions/{sid}", json=body)
                assert (r.status_code, r.json()["error"]["code"]) == (400, code), r.text
            r = await c.patch(
                f"/v1/sessions/{sid}", content=b"title=x", headers={"content-type": "text/plain"}
            )
            assert r.status_code == 415
            r = await c.patch("/v1/sessions/s-nope", json={"title": "x"})
            assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
        nursery.cancel_scope.cancel()

    # The same data directory, a new server: the title came back from the log, and the session says it
    # lost its process to a restart (not a crash).
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, tmp_path, server=config())
        async with server.client() as c:
            info = (await c.get(f"/v1/sessions/{sid}")).json()
            assert info["title"] == "Fix the build"
            assert info["first_prompt"] == "Fix the flaky test [[sim text=3]]"
            assert (info["state"], info["restarted"]) == ("crashed", True)
            tid, _ = await new_turn(c, sid, "again [[sim text=2]]")
            await finish(c, sid, tid)
            info = (await c.get(f"/v1/sessions/{sid}")).json()
            assert (info["state"], info["restarted"]) == ("idle", False)

            r = await c.patch(f"/v1/sessions/{sid}", json={"title": ""})
            assert r.status_code == 200 and r.json()["title"] is None  # back to the first prompt
            assert (await c.delete(f"/v1/sessions/{sid}")).status_code == 202
            r = await c.patch(f"/v1/sessions/{sid}", json={"title": "too late"})
            assert (r.status_code, r.json()["error"]["code"]) == (409, "session_stopped"), r.text
        nursery.cancel_scope.cancel()


# --- the live session feed -------------------------------------------------------------------------------


class Feed:
    """A client of GET /v1/sessions/events: its events, in order, as (name, data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        name = ""
        data = ""
        async for line in self.lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and name:
                return name, json.loads(data)
        raise AssertionError("the feed ended")

    async def heartbeat(self) -> None:
        """Read until a heartbeat comment (nothing else may come meanwhile)."""
        async for line in self.lines:
            if line.startswith(": heartbeat"):
                return
            assert not line.startswith("event: "), f"an event during silence: {line}"
        raise AssertionError("the feed ended")

    async def until(self, test: Any) -> tuple[str, Any]:
        while True:
            name, data = await self.next()
            if test(name, data):
                return name, data


async def test_session_feed_pushes_lifecycle_changes_live(server: Server) -> None:
    async with server.client() as c, c.stream("GET", "/v1/sessions/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        feed = Feed(r)
        with trio.fail_after(60):
            name, data = await feed.next()
            assert name == "sessions" and data == {"sessions": []}

            sid = await new_session(c)
            await feed.until(lambda n, d: n == "session" and d["id"] == sid)

            tid, _ = await new_turn(c, sid, "go [[sim tools=2 tool_s=0.05 text=40 token_ms=1 ttft_ms=1]]")
            summaries = 0

            def ended(n: str, d: Any) -> bool:
                nonlocal summaries
                if n == "session" and d["id"] == sid:
                    summaries += 1
                    return bool(d["turns"]) and d["turns"][0]["ended"] and d["state"] == "idle"
                return False

            _, info = await feed.until(ended)
            assert info["turns"][0]["outcome"] == "completed"
            assert info["first_prompt"].startswith("go [[sim")
            # Summaries follow lifecycle entries, not tokens: far fewer than the turn's entries.
            entries = [e for e in await log_entries(c, sid) if e.get("stream") == tid]
            deltas = [
                e
                for e in entries
                if e.get("type") == "stream_event" and e["msg"]["event"]["type"] == "content_block_delta"
            ]
            assert len(deltas) > 40
            assert summaries < len(entries) - len(deltas) + 2, (summaries, len(entries), len(deltas))

            assert (await c.patch(f"/v1/sessions/{sid}", json={"title": "named"})).status_code == 200
            await feed.until(lambda n, d: n == "session" and d["id"] == sid and d["title"] == "named")

            # Silence: a heartbeat (heartbeat_s is 0.5 s here), then a deletion.
            await feed.heartbeat()
            assert (await c.delete(f"/v1/sessions/{sid}?purge=true")).status_code == 200
            _, data = await feed.until(lambda n, d: n == "session.deleted")
            assert data == {"id": sid}


async def test_a_new_feed_starts_with_a_snapshot_of_every_session(server: Server) -> None:
    async with server.client() as c:
        a = await new_session(c)
        b = await new_session(c)
        await c.patch(f"/v1/sessions/{b}", json={"title": "second"})
        async with c.stream("GET", "/v1/sessions/events") as r:
            with trio.fail_after(30):
                name, data = await Feed(r).next()
        assert name == "sessions"
        titles = {s["id"]: s["title"] for s in data["sessions"]}
        assert titles == {a: None, b: "second"}


# --- delete ----------------------------------------------------------------------------------------------


async def test_delete_with_purge_removes_the_session_and_its_log(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c, session_id="doomed")
        tid, _ = await new_turn(c, sid, "hi [[sim text=2]]")
        await finish(c, sid, tid)
        log_file = server.data_dir / "sessions" / "doomed.ndjson"
        assert log_file.exists()

        r = await c.delete(f"/v1/sessions/{sid}?purge=maybe")
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_purge")
        r = await c.delete(f"/v1/sessions/{sid}?purge=true")
        assert r.status_code == 200, r.text
        assert r.json() == {"id": sid, "deleted": True}
        assert not log_file.exists()
        assert (await c.get(f"/v1/sessions/{sid}")).status_code == 404
        assert (await c.get(f"/v1/sessions/{sid}/log")).status_code == 404
        assert sid not in [s["id"] for s in (await c.get("/v1/sessions")).json()["sessions"]]
        r = await c.delete(f"/v1/sessions/{sid}?purge=true")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
        # The id is free again.
        assert await new_session(c, session_id="doomed") == "doomed"

        # A plain DELETE still only stops: the session stays listed, its log readable.
        other = await new_session(c)
        r = await c.delete(f"/v1/sessions/{other}")
        assert r.status_code == 202 and r.json()["state"] == "stopped"
        assert (await c.get(f"/v1/sessions/{other}/log")).status_code == 200


async def test_the_feed_route_is_not_a_session_id(server: Server) -> None:
    async with server.client() as c:
        r = await c.post("/v1/sessions", json={"session_id": "events"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_config")


# --- the workspace directory picker ----------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "proj" / "sub").mkdir(parents=True)
    (ws / "alpha").mkdir()
    (ws / ".hidden").mkdir()
    (ws / "notes.txt").write_text("not a directory")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws / "escape")  # a link inside the root that points out of it
    os.symlink(ws / "proj" / "sub", ws / "shortcut")  # a link that stays inside
    os.symlink(ws / "loop", ws / "loop")  # a link to itself
    return ws


async def test_directory_listing_stays_inside_the_workspace(
    nursery: trio.Nursery, tmp_path: Path, workspace: Path
) -> None:
    server = await start_server(nursery, tmp_path, server=config(workspace_root=str(workspace)))
    resolved = trio.Path(workspace)
    root_path = str(await resolved.resolve())
    sub_path = str(await (resolved / "proj" / "sub").resolve())
    async with server.client() as c:
        info = (await c.get("/v1/server")).json()
        assert info["workspace_root"] == root_path
        assert "workspace_dirs" in info["features"] and "permission_mode" not in info["features"]

        root = (await c.get("/v1/workspace/dirs")).json()
        assert (root["path"], root["parent"]) == ("", None)
        assert [d["name"] for d in root["dirs"]] == ["alpha", "proj", "shortcut"]  # no escape, file, loop
        hidden = (await c.get("/v1/workspace/dirs", params={"hidden": "1"})).json()
        assert [d["name"] for d in hidden["dirs"]] == [".hidden", "alpha", "proj", "shortcut"]
        proj = (await c.get("/v1/workspace/dirs", params={"path": "proj"})).json()
        assert (proj["path"], proj["parent"], proj["dirs"]) == (
            "proj",
            "",
            [{"name": "sub", "path": "proj/sub"}],
        )
        via_link = (await c.get("/v1/workspace/dirs", params={"path": "shortcut"})).json()
        assert via_link["path"] == "proj/sub"  # resolved, like a session's cwd

        for path in [
            "..",
            "../",
            "proj/../..",
            "proj/../../outside",
            "escape",
            "escape/",
            "/etc",
            str(tmp_path),
        ]:
            r = await c.get("/v1/workspace/dirs", params={"path": path})
            assert (r.status_code, r.json()["error"]["code"]) == (403, "cwd_not_allowed"), (path, r.text)
        for path in ["notes.txt", "missing", "loop", "a\x00b"]:
            r = await c.get("/v1/workspace/dirs", params={"path": path})
            assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_cwd"), (path, r.text)

        # Session creation applies the very same rule.
        for cwd in ["escape", "..", "proj/../../outside"]:
            r = await c.post("/v1/sessions", json={"cwd": cwd})
            assert (r.status_code, r.json()["error"]["code"]) == (403, "cwd_not_allowed"), (cwd, r.text)
        r = await c.post("/v1/sessions", json={"cwd": "shortcut", "model": "picked-model"})
        assert r.status_code == 201, r.text
        assert r.json()["agent"]["cwd"] == sub_path
        assert r.json()["agent"]["model"] == "picked-model"


# --- replay ----------------------------------------------------------------------------------------------


def expected_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(replay_text(path, as_json=True, trace=True))
    return report


@pytest.mark.parametrize("fixture", [TURNSTILE_LOG, RAW_TRANSCRIPT], ids=["turnstile-log", "raw-transcript"])
async def test_replaying_a_posted_file_is_turnstile_replay_json_trace(server: Server, fixture: Path) -> None:
    text = await trio.Path(fixture).read_text()
    async with server.client() as c:
        r = await c.post("/v1/replay", json={"name": fixture.name, "text": text})
        assert r.status_code == 200, r.text
        doc = r.json()
    assert doc["name"] == fixture.name
    assert doc["format"] == ("turnstile" if fixture.suffix == ".ndjson" else "transcript")
    report = doc["report"]
    assert report == expected_report(fixture)
    assert any(c["dest"] == "tool_running" for c in report["changes"])
    assert len(doc["entries"]) == report["entries"]
    assert [e["seq"] for e in doc["entries"]] == list(range(1, report["entries"] + 1))
    if fixture == RAW_TRANSCRIPT:
        assert all(isinstance(e["ts"], float) for e in doc["entries"])  # the recorder's _t, as seconds


async def test_replaying_a_session_is_turnstile_replay_of_its_log(server: Server, tmp_path: Path) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        tid, _ = await new_turn(c, sid, "work [[sim tools=2 tool_s=0.05 text=5]]")
        await finish(c, sid, tid)
        r = await c.get(f"/v1/sessions/{sid}/replay")
        assert r.status_code == 200, r.text
        doc = r.json()
        log = (await c.get(f"/v1/sessions/{sid}/log")).content
    path = tmp_path / "session.ndjson"
    path.write_bytes(log)
    assert doc["name"] == sid and doc["format"] == "turnstile"
    assert doc["report"] == expected_report(path)
    assert [json.dumps(e, sort_keys=True) for e in doc["entries"]] == [
        json.dumps(json.loads(line), sort_keys=True) for line in log.splitlines()
    ]
    calls = [ch for ch in doc["report"]["changes"] if ch["id"] == tid and ch["dest"] == "tool_running"]
    assert len(calls) == 2


async def test_replay_input_is_bounded_and_checked(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path, server=config(max_replay_bytes=4096))
    async with server.client() as c:
        r = await c.post("/v1/replay", json={"name": "big", "text": TURNSTILE_LOG.read_text()})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "log_too_large")
        sid = await new_session(c)
        tid, _ = await new_turn(c, sid, "long [[sim text=300 token_ms=0 ttft_ms=0]]")
        await finish(c, sid, tid)
        r = await c.get(f"/v1/sessions/{sid}/replay")
        assert (r.status_code, r.json()["error"]["code"]) == (413, "log_too_large")
        assert "turnstile replay" in r.json()["error"]["message"]

        for text in ["", "\n\n  \n"]:
            r = await c.post("/v1/replay", json={"name": "empty.jsonl", "text": text})
            assert (r.status_code, r.json()["error"]["code"]) == (400, "not_replayable"), r.text
        r = await c.post("/v1/replay", json={"name": "notes.txt", "text": "hello\nworld\n"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "not_replayable")
        assert "neither a Turnstile log nor a CLI transcript" in r.json()["error"]["message"]
        r = await c.post("/v1/replay", json={"text": "{}", "path": "/etc/passwd"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_body")
        assert (await c.get("/v1/sessions/s-nope/replay")).status_code == 404

        # Only JSON: what an HTML form (or a no-cors fetch) on another site could send is refused, and a
        # cross-site page is refused whatever it sends.
        for content_type in ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]:
            r = await c.post("/v1/replay", content=b"text=x", headers={"content-type": content_type})
            assert r.status_code == 415, (content_type, r.text)
        r = await c.post("/v1/replay", json={"text": "{}"}, headers={"origin": "https://evil.example"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "origin_not_allowed")
