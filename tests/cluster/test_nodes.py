"""Three ``turnstile serve`` processes sharing one real Redis: every node serves every session.

A turn started on node A is read by SSE on B and by WebSocket on C — the same entries, byte for byte,
one terminal entry each; a client resumes with ``Last-Event-ID`` on another node than the one it first
read from, and when the node it reads from is killed; Redis restarted in the middle of a turn loses
nothing (the turn's entries wait and are written, or the turn ends ``failed`` saying why); a Redis that
cannot be reached at start makes ``/readyz`` 503 (``/healthz`` stays 200) until it answers; a session is
replayed straight from Redis exactly as its NDJSON export is.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.cluster.conftest import Cluster
from tests.net import JSON
from tests.reliability.clients import (
    Received,
    check_log,
    check_subscriber,
    fetch_log,
    read_sse,
    read_ws,
    until,
    wait_turn_ended,
)
from tests.reliability.servers import ServerProcess, wait_healthy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LONG_TURN = "stream for a while [[sim tokens=60 token_ms=25 ttft_ms=50 tools=1 tool_s=0.3]]"


async def start(*nodes: ServerProcess) -> None:
    """Start the nodes and wait until each is ready (logs recovered, Redis reachable)."""
    for node in nodes:
        node.start()
    for node in nodes:
        await wait_healthy(node.base)
        await wait_ready(node)


async def wait_ready(node: ServerProcess, limit_s: float = 30.0) -> None:
    async with httpx.AsyncClient(base_url=node.base, timeout=5) as client:
        with trio.fail_after(limit_s):
            while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110 (another process)
                await trio.sleep(0.05)


def client(node: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.base, headers=JSON, timeout=30)


async def new_session(node: ServerProcess) -> str:
    async with client(node) as c:
        r = await c.post("/v1/sessions", json={})
        assert r.status_code == 201, r.text
        sid: str = r.json()["id"]
        return sid


async def new_turn(node: ServerProcess, sid: str, prompt: str = LONG_TURN) -> str:
    async with client(node) as c:
        r = await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": prompt})
        assert r.status_code == 202, r.text
        tid: str = r.json()["turn_id"]
        return tid


async def session_info(node: ServerProcess, sid: str) -> dict[str, Any]:
    async with client(node) as c:
        r = await c.get(f"/v1/sessions/{sid}")
        assert r.status_code == 200, r.text
        info: dict[str, Any] = r.json()
        return info


async def test_a_turn_on_a_reads_the_same_by_sse_on_b_and_websocket_on_c(cluster: Cluster) -> None:
    a, b, c = cluster.node("a"), cluster.node("b"), cluster.node("c")
    await start(a, b, c)
    sid = await new_session(a)
    tid = await new_turn(a, sid)
    url = f"/v1/sessions/{sid}/turns/{tid}/events"
    sse, ws = Received("sse on b"), Received("ws on c")
    async with client(b) as on_b, trio.open_nursery() as nursery:
        nursery.start_soon(lambda: read_sse(on_b, url, sse, stream=tid))
        nursery.start_soon(lambda: read_ws(c.ws, ws, session=sid, stream=tid, subscribe_turn=True))
    async with client(a) as on_a:
        raw, entries = await fetch_log(on_a, sid)
        info = (await on_a.get(f"/v1/sessions/{sid}")).json()
    assert check_log(raw, entries, info) == []
    for rec in (sse, ws):
        assert check_subscriber(rec, entries, stream=tid) == []
        assert [d.get("kind") for d in rec.data].count("stream.ended") == 1
    assert sse.data == ws.data  # the same entries, byte for byte as JSON
    assert sse.terminal is not None and sse.terminal["outcome"] == "completed"
    # Every node serves the same log and says who runs the session.
    for node in (b, c):
        async with client(node) as other:
            assert (await fetch_log(other, sid))[0] == raw
            remote = (await other.get(f"/v1/sessions/{sid}")).json()
            assert remote["node"] == "a" and remote["last_seq"] == info["last_seq"]
            assert [t["outcome"] for t in remote["turns"]] == ["completed"]
            listed = (await other.get("/v1/sessions")).json()["sessions"]
            assert [s["id"] for s in listed] == [sid]
            refused = await other.post(f"/v1/sessions/{sid}/turns", json={"prompt": "here?"})
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "session_owned_elsewhere"
            assert "node 'a'" in refused.json()["error"]["message"]


async def test_resume_with_last_event_id_on_another_node(cluster: Cluster) -> None:
    a, b, c = cluster.node("a"), cluster.node("b"), cluster.node("c")
    await start(a, b, c)
    sid = await new_session(a)
    tid = await new_turn(a, sid)
    url = f"/v1/sessions/{sid}/turns/{tid}/events"
    first = Received("first read, on b")
    # Read a few entries on B, then leave (as a browser tab that is closed mid-turn).
    async with client(b) as on_b, httpx_sse_events(on_b, url) as events:
        async for ev in events:
            if ev.id and ev.data:
                first.add(int(ev.id), ev.event, json.loads(ev.data))
            if len(first.seqs) >= 5:
                break
    assert len(first.seqs) == 5
    rest = Received("resumed on c")
    rest.seqs, rest.data, rest.events = list(first.seqs), list(first.data), list(first.events)
    async with client(c) as on_c:
        await read_sse(on_c, url, rest, stream=tid)  # sends Last-Event-ID: the last seq it has
    async with client(a) as on_a:
        _raw, entries = await fetch_log(on_a, sid)
    assert check_subscriber(rest, entries, stream=tid) == []
    assert rest.connections == 1  # one connection to C picked up exactly where B left off
    # A reconnect after the terminal entry, on yet another node: 204, EventSource stops.
    async with client(a) as on_a:
        r = await on_a.get(url, headers={"last-event-id": str(rest.last)})
        assert r.status_code == 204


def httpx_sse_events(c: httpx.AsyncClient, url: str) -> Any:
    from httpx_sse import aconnect_sse

    class _Events:
        async def __aenter__(self) -> Any:
            self._cm = aconnect_sse(c, "GET", url)
            es = await self._cm.__aenter__()
            assert es.response.status_code == 200
            return es.aiter_sse()

        async def __aexit__(self, *exc: object) -> None:
            await self._cm.__aexit__(*exc)

    return _Events()


async def test_a_reader_whose_node_is_killed_resumes_on_another(cluster: Cluster) -> None:
    a, b, c = cluster.node("a"), cluster.node("b"), cluster.node("c")
    await start(a, b, c)
    sid = await new_session(a)
    tid = await new_turn(a, sid)
    path = f"/v1/sessions/{sid}/turns/{tid}/events"
    current = [b]

    def url() -> str:
        return current[0].base + path

    def kill_b_after_a_few(rec: Received) -> None:
        if len(rec.seqs) == 8 and current[0] is b:
            b.signal(signal.SIGKILL)  # mid-response: the client sees its connection break
            current[0] = c  # ... and, like a load balancer, sends the retry elsewhere

    rec = Received("reader")
    async with httpx.AsyncClient(headers=JSON, timeout=30) as anywhere:
        await read_sse(anywhere, url, rec, stream=tid, on_event=kill_b_after_a_few)
    assert await b.wait_async() is not None
    async with client(a) as on_a:
        raw, entries = await fetch_log(on_a, sid)
        info = (await on_a.get(f"/v1/sessions/{sid}")).json()
    assert check_log(raw, entries, info) == []
    assert check_subscriber(rec, entries, stream=tid) == []
    assert rec.connections >= 2 and rec.terminal is not None


async def test_redis_restarted_mid_turn_loses_nothing(durable_cluster: Cluster) -> None:
    cluster = durable_cluster
    a, b = cluster.node("a"), cluster.node("b")
    await start(a, b)
    sid = await new_session(a)
    tid = await new_turn(a, sid, "long [[sim tokens=120 token_ms=25 ttft_ms=50]]")
    url = f"/v1/sessions/{sid}/turns/{tid}/events"
    restarted = trio.Event()

    async def restart_redis_mid_turn(rec: Received) -> None:
        with trio.fail_after(60):
            await until(lambda: len(rec.seqs) >= 10)
            await trio.to_thread.run_sync(cluster.redis.stop)
            # Down until A has had to keep the turn's entries waiting (its writer says so) and says it is
            # not ready; then Redis is back, with what it had acknowledged (AOF).
            await until(lambda: "cannot write seqs" in a.stderr_tail(20000))
            async with client(a) as on_a:
                while (await on_a.get("/readyz")).status_code != 503:  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.05)
        await trio.to_thread.run_sync(cluster.redis.start)
        restarted.set()

    sse = Received("sse on b")
    ws = Received("ws on a")
    async with client(b) as on_b, trio.open_nursery() as nursery:
        nursery.start_soon(restart_redis_mid_turn, sse)
        nursery.start_soon(lambda: read_sse(on_b, url, sse, stream=tid, deadline=90))
        nursery.start_soon(
            lambda: read_ws(a.ws, ws, session=sid, stream=tid, subscribe_turn=True, deadline=90)
        )
    assert restarted.is_set()
    await wait_ready(a)
    async with client(a) as on_a:
        turn = await wait_turn_ended(on_a, sid, tid)
        raw, entries = await fetch_log(on_a, sid)
        info = (await on_a.get(f"/v1/sessions/{sid}")).json()
    # Either Redis was back within the grace and the turn went on, or it ended failed saying why;
    # never a silent loss: the log is whole, and both readers got all of it.
    assert turn["outcome"] in ("completed", "failed"), turn
    if turn["outcome"] == "failed":
        assert "storage failed" in turn["reason"], turn
    assert check_log(raw, entries, info) == []
    for rec in (sse, ws):
        assert check_subscriber(rec, entries, stream=tid) == []
    async with client(b) as on_b:
        assert (await fetch_log(on_b, sid))[0] == raw
    # The session goes on on A after the restart.
    next_tid = await new_turn(a, sid, "after the restart")
    async with client(a) as on_a:
        assert (await wait_turn_ended(on_a, sid, next_tid))["outcome"] == "completed"


async def test_redis_restarted_without_persistence_is_reported_not_papered_over(cluster: Cluster) -> None:
    a = cluster.node("a", TURNSTILE_STORAGE_GRACE_S="1")
    await start(a)
    sid = await new_session(a)
    tid = await new_turn(a, sid, "long [[sim tokens=200 token_ms=25 ttft_ms=50]]")
    async with client(a) as on_a:
        seen = Received("sse on a")
        url = f"/v1/sessions/{sid}/turns/{tid}/events"

        async def lose_everything(rec: Received) -> None:
            await until(lambda: len(rec.seqs) >= 10)
            await trio.to_thread.run_sync(cluster.redis.restart)  # persistence off: it comes back empty

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lose_everything, seen)
            nursery.start_soon(lambda: read_sse(on_a, url, seen, stream=tid, deadline=60))
            turn = await wait_turn_ended(on_a, sid, tid)
            with trio.fail_after(30):
                await until(lambda: bool(seen.notices))
            nursery.cancel_scope.cancel()
        assert turn["outcome"] == "failed" and "lost entries" in turn["reason"], turn
        assert seen.notices and "lost entries" in seen.notices[0]["reason"]  # the reader was told
        ready = (await on_a.get("/readyz")).json()
        assert not ready["ready"] and "lost entries" in ready["reason"]
        # No new turn is taken on a log that cannot be continued.
        r = await on_a.post(f"/v1/sessions/{sid}/turns", json={"prompt": "more"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"


async def test_redis_unreachable_at_start(cluster_without_redis: Cluster) -> None:
    cluster = cluster_without_redis
    a = cluster.node("a")
    a.start()
    await wait_healthy(a.base)
    where = f"127.0.0.1:{cluster.redis.port}"
    async with client(a) as on_a:
        assert (await on_a.get("/healthz")).status_code == 200
        with trio.fail_after(30):
            while True:
                r = await on_a.get("/readyz")
                if r.status_code == 503 and where in (r.json().get("reason") or ""):
                    break
                await trio.sleep(0.05)
        assert r.json()["ready"] is False
        refused = await on_a.post("/v1/sessions", json={})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "storage_unavailable"
        assert where in refused.json()["error"]["message"]
        assert (await on_a.get("/v1/sessions/s-any")).status_code == 503
        await trio.to_thread.run_sync(cluster.redis.start)
        await wait_ready(a)
        sid = await new_session(a)
        tid = await new_turn(a, sid, "hello")
        assert (await wait_turn_ended(on_a, sid, tid))["outcome"] == "completed"


def turnstile(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "turnstile.adapters.cli", *args], cwd=ROOT, capture_output=True, timeout=60
    )


async def test_replay_from_redis_is_the_replay_of_the_export(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.node("a", speed=0)
    await start(a)
    sid = await new_session(a)
    async with client(a) as on_a:
        for prompt in ("one [[sim tools=2]]", "two [[sim crash=mid]]", "three"):
            tid = await new_turn(a, sid, prompt)
            await wait_turn_ended(on_a, sid, tid)
        raw, _entries = await fetch_log(on_a, sid)
    source = f"{cluster.redis.url}/{sid}"
    exported = tmp_path / "export.ndjson"
    done = await trio.to_thread.run_sync(lambda: turnstile("log", "export", source, "-o", str(exported)))
    assert done.returncode == 0, done.stderr
    assert exported.read_bytes() == raw  # the stream's entries are the file log's bytes
    again = tmp_path / "again.ndjson"
    done = await trio.to_thread.run_sync(lambda: turnstile("log", "export", str(exported), "-o", str(again)))
    assert done.returncode == 0 and again.read_bytes() == raw
    for flags in ((), ("--json",), ("--trace",)):
        from_redis = await trio.to_thread.run_sync(turnstile, "replay", source, *flags)
        from_file = await trio.to_thread.run_sync(turnstile, "replay", str(exported), *flags)
        assert from_redis.returncode == from_file.returncode == 0, from_redis.stderr
        assert from_redis.stdout == from_file.stdout and from_redis.stdout
    report = json.loads(turnstile("replay", source, "--json").stdout)
    assert [s["outcome"] for s in report["streams"]] == ["completed", "failed", "completed"]
    missing = await trio.to_thread.run_sync(lambda: turnstile("replay", f"{cluster.redis.url}/s-nothing"))
    assert missing.returncode == 2 and b"no session 's-nothing'" in missing.stderr
