"""The HTTP API on a real server on loopback: sessions, turns, errors, health, metrics."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.adapters.conftest import Server, log_entries, new_session, new_turn, sse_events
from tests.net import JSON

pytestmark = pytest.mark.slow


async def test_health_ready_and_metrics(server: Server) -> None:
    async with server.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert "pool" in ready.json()
        sid = await new_session(c)
        _, url = await new_turn(c, sid, "hello")
        await sse_events(c, url)
        metrics = {f.name: f for f in text_string_to_metric_families((await c.get("/metrics")).text)}
        assert "turnstile_sessions" in metrics
        streams = metrics["turnstile_streams"]  # exposed as turnstile_streams_total
        assert [(s.name, s.labels, s.value) for s in streams.samples] == [
            ("turnstile_streams_total", {"outcome": "completed"}, 1)
        ]
        # Turn timing histograms: one ended turn, counted in the +Inf bucket and in the count.
        duration = metrics["turnstile_turn_duration_seconds"]
        assert duration.type == "histogram"
        values = {(s.name, s.labels.get("le")): s.value for s in duration.samples}
        assert values[("turnstile_turn_duration_seconds_bucket", "+Inf")] == 1
        assert values[("turnstile_turn_duration_seconds_count", None)] == 1
        ttfe = {s.labels.get("le"): s.value for s in metrics["turnstile_turn_ttfe_seconds"].samples}
        assert ttfe["3600.0"] == 1


async def test_session_lifecycle(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        listed = (await c.get("/v1/sessions")).json()["sessions"]
        assert sid in [s["id"] for s in listed]
        tid, url = await new_turn(c, sid, '[[sim say="hi there"]]')
        events = await sse_events(c, url)
        assert events[-1].event == "stream.ended"
        info = (await c.get(f"/v1/sessions/{sid}")).json()
        assert info["id"] == sid and info["pool_key"]
        turns = {t["id"]: t for t in info["turns"]}
        assert turns[tid]["outcome"] == "completed"
        turn = (await c.get(f"/v1/sessions/{sid}/turns/{tid}")).json()
        assert turn["outcome"] == "completed" and turn["timing"]["total_ms"] is not None
        r = await c.delete(f"/v1/sessions/{sid}")
        assert r.status_code == 202
        again = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "x"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "session_stopped"


async def test_post_turn_with_accept_event_stream_streams_it(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        async with c.stream(
            "POST",
            f"/v1/sessions/{sid}/turns",
            json={"prompt": "stream me"},
            headers={"accept": "text/event-stream"},
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            tid = r.headers["x-turn-id"]
            body = (await r.aread()).decode()
        assert (
            "event: turn.requested" in body
            and body.rstrip().split("\n\n")[-1].count("event: stream.ended") == 1
        )
        assert f'"stream":"{tid}"' in body


async def test_log_endpoint_is_replayable_ndjson(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        _, url = await new_turn(c, sid, "log me")
        await sse_events(c, url)
        entries = await log_entries(c, sid)
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert entries[0]["kind"] == "session.created"
        tail = (await c.get(f"/v1/sessions/{sid}/log", params={"after": len(entries) - 2})).text.splitlines()
        assert len(tail) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/sessions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/sessions", b'{"agent": 3}', 400, "invalid_body"),
        ("POST", "/v1/sessions", b'{"agent": "gpt"}', 400, "invalid_agent"),
        ("POST", "/v1/sessions", b'{"surprise": 1}', 400, "invalid_body"),
        ("GET", "/v1/sessions/nope", None, 404, "session_not_found"),
        ("DELETE", "/v1/sessions/nope", None, 404, "session_not_found"),
        ("GET", "/v1/sessions/nope/events", None, 404, "session_not_found"),
        ("POST", "/v1/sessions/nope/turns", b'{"prompt":"x"}', 404, "session_not_found"),
        ("GET", "/v1/nothing-here", None, 404, "not_found"),
        ("PUT", "/v1/sessions", b"{}", 405, "method_not_allowed"),
    ],
)
async def test_bad_requests_get_json_4xx(
    server: Server, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    async with server.client() as c:
        r = await c.request(method, path, content=body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


async def test_bad_turn_requests(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        cases: list[tuple[bytes, int, str]] = [
            (b"", 400, "missing_body"),
            (b"[1,2]", 400, "invalid_body"),
            (b'{"prompt": 5}', 400, "invalid_body"),
            (b'{"prompt": "   "}', 400, "empty_prompt"),
            (b'{"prompt": "' + b"x" * (1 << 20) + b'"}', 413, "prompt_too_large"),
            (b"\xff\xfe", 400, "invalid_json"),
        ]
        for body, status, code in cases:
            r = await c.post(
                f"/v1/sessions/{sid}/turns", content=body, headers={"content-type": "application/json"}
            )
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), body[:20]
        r = await c.get(f"/v1/sessions/{sid}/turns/t99/events")
        assert r.status_code == 404 and r.json()["error"]["code"] == "turn_not_found"
        r = await c.post(f"/v1/sessions/{sid}/turns/t99/interrupt", json={})
        assert r.status_code == 404
        # The server is unaffected.
        _, url = await new_turn(c, sid, "still fine")
        assert (await sse_events(c, url))[-1].event == "stream.ended"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "99999"])
async def test_bad_last_event_id(server: Server, value: str) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        _tid, url = await new_turn(c, sid, "x")
        for headers, params in [({"last-event-id": value}, None), (None, {"after": value})]:
            r = await c.get(url, headers=headers, params=params)
            assert r.status_code == 400, (value, r.status_code)
            assert r.json()["error"]["code"] == "invalid_last_event_id"


async def test_queue_bound_is_enforced(nursery: object, tmp_path: object) -> None:
    from pathlib import Path

    import trio

    from tests.adapters.conftest import start_server

    assert isinstance(nursery, trio.Nursery) and isinstance(tmp_path, Path)
    srv = await start_server(nursery, tmp_path, max_queued_turns=2)
    async with srv.client() as c:
        sid = await new_session(c)
        await new_turn(c, sid, "[[sim hang=first]]")
        await new_turn(c, sid, "queued 1")
        await new_turn(c, sid, "queued 2")
        r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "one too many"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"


async def test_unreadable_data_dir_is_not_ready_with_reason(nursery: object, tmp_path: object) -> None:
    from pathlib import Path

    import trio

    from tests.adapters.conftest import start_server

    assert isinstance(nursery, trio.Nursery) and isinstance(tmp_path, Path)
    srv = await start_server(nursery, tmp_path)
    # Replace the sessions directory with a file: appends can no longer be persisted.
    sessions = srv.data_dir / "sessions"
    for f in sessions.iterdir():
        f.unlink()
    sessions.rmdir()
    sessions.write_text("in the way")
    async with httpx.AsyncClient(base_url=srv.base, headers=JSON) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503 and "not writable" in r.json()["reason"]
        assert (await c.get("/healthz")).status_code == 200


async def test_interrupt_ends_the_turn_cancelled(server: Server) -> None:
    import json

    async with server.client() as c:
        sid = await new_session(c)
        tid, url = await new_turn(c, sid, "[[sim hang=mid]] long")
        first = await sse_events(c, url, limit=3)
        r = await c.post(f"/v1/sessions/{sid}/turns/{tid}/interrupt", json={})
        assert r.status_code == 202
        rest = await sse_events(c, url, headers={"last-event-id": first[-1].id})
        end = json.loads(rest[-1].data)
        assert rest[-1].event == "stream.ended" and end["outcome"] == "cancelled"
        assert "interrupt.requested" in [e.event for e in rest]
        # The session takes the next turn.
        _, url2 = await new_turn(c, sid, "next")
        assert json.loads((await sse_events(c, url2))[-1].data)["outcome"] == "completed"


async def test_no_cors_unless_configured(nursery: object, tmp_path: object, server: Server) -> None:
    from pathlib import Path

    import trio

    from tests.adapters.conftest import start_server
    from turnstile.adapters.config import ServerConfig

    async with server.client() as c:
        r = await c.get("/v1/sessions", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    assert isinstance(nursery, trio.Nursery) and isinstance(tmp_path, Path)
    cors = ServerConfig(port=0, ws_port=-1, allowed_origins=("http://dash.example",))
    srv = await start_server(nursery, tmp_path / "cors", server=cors)
    async with srv.client() as c:
        pre = await c.options(
            "/v1/sessions",
            headers={"origin": "http://dash.example", "access-control-request-method": "POST"},
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://dash.example"
        other = await c.get("/v1/sessions", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_session_ids_chosen_by_clients_are_validated(server: Server) -> None:
    async with server.client() as c:
        r = await c.post("/v1/sessions", json={"session_id": "my-session"})
        assert r.status_code == 201 and r.json()["id"] == "my-session"
        r = await c.post("/v1/sessions", json={"session_id": "my-session"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "session_exists"
        r = await c.post("/v1/sessions", json={"session_id": "../../etc/passwd"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
