"""SSE semantics on a real server: the terminal entry always arrives, resume has no gap or duplicate,
a finished turn answers 204 to a reconnect, many subscribers see the same sequence, a stalled client
never delays the others."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import trio

from tests.adapters.conftest import Server, log_entries, new_session, new_turn, sse_events

pytestmark = pytest.mark.slow


async def test_turn_streams_to_its_terminal_entry_then_ends(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        tid, url = await new_turn(c, sid, "[[sim tools=2 tool_s=0]] hello")
        events = await sse_events(c, url)
        kinds = [e.event for e in events]
        assert (
            kinds[0] == "turn.requested" and kinds[-1] == "stream.ended" and kinds.count("stream.ended") == 1
        )
        assert "cli.system" in kinds and "cli.result" in kinds and "cli.stream_event" in kinds
        end = json.loads(events[-1].data)
        assert end["outcome"] == "completed" and end["timing"]["tool_calls"] == 2
        # ids are the log seqs, strictly increasing; data is the log entry, byte for byte.
        ids = [int(e.id) for e in events]
        assert ids == sorted(set(ids))
        by_seq = {e["seq"]: e for e in await log_entries(c, sid)}
        for ev in events:
            assert json.loads(ev.data) == by_seq[int(ev.id)]
            assert by_seq[int(ev.id)]["stream"] == tid


async def test_raw_sse_has_retry_hint_and_byte_identical_cli_payload(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        _, url = await new_turn(c, sid, "bytes")
        raw = (await c.get(url)).text
        log_text = (await c.get(f"/v1/sessions/{sid}/log")).text
    assert raw.startswith(": stream\n\nretry: 1000\nid: ")
    data_lines = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
    log_lines = set(log_text.splitlines())
    assert data_lines and all(d in log_lines for d in data_lines)


async def test_disconnect_and_resume_with_last_event_id_no_gap_no_duplicate(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        tid, url = await new_turn(c, sid, "[[sim tokens=60 token_ms=15]]")
        first = await sse_events(c, url, limit=12)
        last_id = first[-1].id
        rest = await sse_events(c, url, headers={"last-event-id": last_id})
        got = [int(e.id) for e in first + rest]
        assert len(got) == len(set(got)), "duplicate event after resume"
        expected = [e["seq"] for e in await log_entries(c, sid) if e["stream"] == tid]
        assert got == expected, "gap after resume"
        # Resuming again at the terminal entry: 204, the signal for EventSource to stop reconnecting.
        r = await c.get(url, headers={"last-event-id": rest[-1].id})
        assert r.status_code == 204
        # ...and with ?after= too; and beyond the turn's end (later entries of the session).
        assert (await c.get(url, params={"after": rest[-1].id})).status_code == 204


async def test_finished_turn_without_id_replays_everything_then_ends(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        _tid, url = await new_turn(c, sid, "done quickly")
        live = await sse_events(c, url)
        again = await sse_events(c, url)
        assert [e.id for e in again] == [e.id for e in live] and again[-1].event == "stream.ended"


async def test_fifty_subscribers_receive_identical_sequences(server: Server) -> None:
    async with server.client(limits=httpx.Limits(max_connections=100)) as c:
        sid = await new_session(c)
        _tid, url = await new_turn(c, sid, "[[sim tokens=40 token_ms=10 tools=1 tool_s=0.1]]")
        results: list[list[tuple[str, str]]] = []

        async def one() -> None:
            events = await sse_events(c, url)
            results.append([(e.id, e.data) for e in events])

        async with trio.open_nursery() as n:
            for _ in range(50):
                n.start_soon(one)
        assert len(results) == 50
        assert all(r == results[0] for r in results)
        assert json.loads(results[0][-1][1])["kind"] == "stream.ended"


async def test_whole_session_stream_and_heartbeat(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        seen: list[str] = []
        comments = 0
        async with c.stream("GET", f"/v1/sessions/{sid}/events") as r:
            assert r.status_code == 200
            _tid, _ = await new_turn(c, sid, "[[sim ttft_ms=1200]] slow start")
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    comments += 1  # heartbeat while the agent is silent (heartbeat_s=0.5 in tests)
                if line.startswith("event: "):
                    seen.append(line[7:])
                    if line == "event: stream.ended":
                        break
        assert comments >= 1 and "turn.requested" in seen and seen[-1] == "stream.ended"


async def test_stalled_client_is_dropped_without_delaying_others(server: Server) -> None:
    async with server.client() as c:
        sid = await new_session(c)
        _tid, url = await new_turn(c, sid, "[[sim tokens=3000 token_ms=1]]")
        host, port = server.base.removeprefix("http://").split(":")
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stalled.connect((host, int(port)))
        stalled.sendall(f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        try:
            with trio.fail_after(60):
                events = await sse_events(c, url)
            assert events[-1].event == "stream.ended"
            # The stalled reader never took its data. Give the server more than its send timeout
            # (2 s in tests), then drain the socket: it must have been cut off (EOF) before the end.
            await trio.sleep(4)
            full = len((await c.get(url)).content)
            received = 0
            stalled.settimeout(10)
            while True:
                try:
                    chunk = stalled.recv(1 << 20)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                received += len(chunk)
            assert received < full, "the stalled client was not dropped"
        finally:
            stalled.close()
