"""Browser safety, as an attacker's requests see it (issue "Hardening", item 1; adapters/guard.py).

Each test sends what a hostile web page (or a DNS-rebinding page) can make the user's browser send — the
exact headers — to a real server on loopback, and checks it is refused before it can start, steer or read
an agent; and that the same request from the console's own origin still works. The Chromium suite
(tests/browser/test_browser_safety.py) checks the same from a real page on another origin.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.net import JSON
from tests.reliability.servers import Live, inproc_server, runtime_config
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.server import run_server

EVIL = "http://evil.example"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with inproc_server(runtime_config(tmp_path / "data", pool_size=0), _server(tmp_path)) as srv:
        yield srv


def _server(tmp_path: Path, **kw: Any) -> ServerConfig:
    workspace = tmp_path / "ws"
    (workspace / "project").mkdir(parents=True, exist_ok=True)
    kw.setdefault("workspace_root", str(workspace))
    return ServerConfig(port=0, ws_port=0, heartbeat_s=0.5, send_timeout_s=2.0, **kw)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].strip("/"))


async def _sessions(c: httpx.AsyncClient) -> list[str]:
    r = await c.get("/v1/sessions")
    assert r.status_code == 200, r.text
    return [s["id"] for s in r.json()["sessions"]]


def _code(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


# --- the reproduction from the issue ------------------------------------------------------------------


async def test_the_reported_cross_site_session_and_turn_are_refused(live: Live) -> None:
    """`curl -H 'Content-Type: text/plain' -H 'Origin: http://evil.example' -H 'Host: evil.example:8700'`
    created a session (201) and started a turn (202). Every variant of it is refused now."""
    port = _port(live.base)
    body = b'{"session_id":"x","cwd":"/"}'
    attacks = [
        (
            {"content-type": "text/plain", "origin": EVIL, "host": f"evil.example:{port}"},
            (421, "host_not_allowed"),
        ),
        ({"content-type": "text/plain", "origin": EVIL}, (403, "origin_not_allowed")),
        ({"content-type": "text/plain"}, (415, "unsupported_media_type")),
        ({"content-type": "application/json", "origin": EVIL}, (403, "origin_not_allowed")),
        ({"content-type": "application/json", "origin": "null"}, (403, "origin_not_allowed")),
    ]
    async with live.client() as c:
        for headers, expected in attacks:
            r = await c.post("/v1/sessions", content=body, headers=headers)
            assert _code(r) == expected, (headers, r.text)
        assert await _sessions(c) == []
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        for headers, expected in attacks:
            r = await c.post(f"/v1/sessions/{sid}/turns", content=b'{"prompt":"hi"}', headers=headers)
            assert _code(r) == expected, (headers, r.text)
        info = (await c.get(f"/v1/sessions/{sid}")).json()
        assert info["turns"] == [], "a refused request started a turn"


# --- Host (DNS rebinding) --------------------------------------------------------------------------------


async def test_host_must_name_this_server(live: Live) -> None:
    port = _port(live.base)
    async with live.client() as c:
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}", "", "a b"):
            for method, path in (("GET", "/healthz"), ("GET", "/v1/sessions"), ("GET", "/metrics")):
                r = await c.request(method, path, headers={"host": host})
                assert r.status_code == 421, (host, path, r.status_code)
                assert r.json()["error"]["code"] == "host_not_allowed"
                assert "--allowed-host" in r.json()["error"]["message"]
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"LOCALHOST:{port}",
            "127.0.0.2",
            f"app.localhost:{port}",
        ):
            r = await c.get("/v1/sessions", headers={"host": host})
            assert r.status_code == 200, (host, r.text)


async def test_allowed_host_opens_one_name(tmp_path: Path) -> None:
    config = _server(tmp_path, allowed_hosts=("turnstile.internal",))
    async with (
        inproc_server(runtime_config(tmp_path / "data", pool_size=0), config) as live,
        live.client() as c,
    ):
        r = await c.get("/v1/sessions", headers={"host": "turnstile.internal:1234"})
        assert r.status_code == 200
        assert (await c.get("/v1/sessions", headers={"host": "evil.example"})).status_code == 421


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine cannot bind ::1")
async def test_ipv6_loopback_host(tmp_path: Path) -> None:
    config = ServerConfig(host="::1", port=0, ws_port=-1, workspace_root=str(tmp_path))
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(run_server, config, runtime_config(tmp_path / "data", pool_size=0))
        async with httpx.AsyncClient(base_url=f"http://[::1]:{ports.http}", headers=JSON, timeout=10) as c:
            assert (await c.get("/v1/sessions")).status_code == 200
            r = await c.post("/v1/sessions", json={}, headers={"origin": f"http://[::1]:{ports.http}"})
            assert r.status_code == 201, r.text
            r = await c.get("/v1/sessions", headers={"host": f"evil.example:{ports.http}"})
            assert r.status_code == 421
        nursery.cancel_scope.cancel()


# --- Origin, fetch metadata, content type -----------------------------------------------------------------


async def test_origin_rules(live: Live) -> None:
    port = _port(live.base)
    async with live.client() as c:
        refused = [
            EVIL,
            "null",
            f"http://127.0.0.1:{port + 1}",
            f"http://evil.example:{port}",
            f"http://127.0.0.1:{port}/path",
            "file://",
            f"ftp://127.0.0.1:{port}",
        ]
        for origin in refused:
            r = await c.post("/v1/sessions", json={}, headers={"origin": origin})
            assert r.status_code == 403 and _code(r) == (403, "origin_not_allowed"), (origin, r.text)
            r = await c.get("/v1/sessions", headers={"origin": origin})
            assert _code(r) == (403, "origin_not_allowed"), origin
        # The console's own origin, under either loopback name (or as https, behind a TLS proxy).
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"https://127.0.0.1:{port}"):
            host = origin.split("://", 1)[1]
            r = await c.post("/v1/sessions", json={}, headers={"origin": origin, "host": host})
            assert r.status_code == 201, (origin, r.text)
        # No CORS headers for anyone not allowed.
        r = await c.options(
            "/v1/sessions",
            headers={"origin": EVIL, "access-control-request-method": "POST"},
        )
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


async def test_allowed_origin_gets_cors_and_nothing_else_does(tmp_path: Path) -> None:
    dash = "http://dash.example:3000"
    config = _server(tmp_path, allowed_origins=(dash,))
    async with (
        inproc_server(runtime_config(tmp_path / "data", pool_size=0), config) as live,
        live.client() as c,
    ):
        r = await c.options(
            "/v1/sessions",
            headers={
                "origin": dash,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == dash
        r = await c.post("/v1/sessions", json={}, headers={"origin": dash})
        assert r.status_code == 201 and r.headers["access-control-allow-origin"] == dash
        r = await c.post("/v1/sessions", json={}, headers={"origin": "http://dash.example:3001"})
        assert _code(r) == (403, "origin_not_allowed")


async def test_no_cors_loads_from_other_sites_are_refused(live: Live) -> None:
    """`<img>`/`<script src>` and no-cors fetches carry no Origin, but Chromium marks them Sec-Fetch-Site."""
    async with live.client() as c:
        for site in ("cross-site", "same-site"):
            for mode in ("no-cors", "cors"):
                r = await c.get("/v1/sessions", headers={"sec-fetch-site": site, "sec-fetch-mode": mode})
                assert _code(r) == (403, "cross_site_request"), (site, mode)
        # A person following a link to the console from another site is fine (a top-level navigation).
        r = await c.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
        assert r.status_code == 200
        r = await c.get("/v1/sessions", headers={"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"})
        assert r.status_code == 200


async def test_state_changing_requests_must_be_json(live: Live) -> None:
    """The content types an HTML form or a no-cors fetch can send are exactly the ones refused."""
    async with live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        simple = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "")
        for media in simple:
            headers = {"content-type": media} if media else {}
            async with httpx.AsyncClient(base_url=live.base, timeout=10) as bare:
                for path in (
                    "/v1/sessions",
                    f"/v1/sessions/{sid}/turns",
                    f"/v1/sessions/{sid}/turns/t1/interrupt",
                ):
                    r = await bare.post(path, content=b'{"prompt":"x"}', headers=headers)
                    assert _code(r) == (415, "unsupported_media_type"), (media, path)
        r = await c.post(
            f"/v1/sessions/{sid}/turns",
            json={"prompt": "ok"},
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 202, r.text
        assert len((await c.get(f"/v1/sessions/{sid}")).json()["turns"]) == 1


# --- what a client may choose ----------------------------------------------------------------------------


async def test_cwd_must_stay_inside_the_workspace_root(tmp_path: Path, live: Live) -> None:
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "escape").symlink_to(outside)
    (workspace / "project" / "inner").mkdir()
    async with live.client() as c:
        for cwd in ("/", "..", "../outside", str(outside), "escape", "project/../../outside", "/etc"):
            r = await c.post("/v1/sessions", json={"cwd": cwd})
            assert _code(r) == (403, "cwd_not_allowed"), (cwd, r.text)
        for cwd in ("missing", "project/nope", "a\x00b"):
            r = await c.post("/v1/sessions", json={"cwd": cwd})
            assert _code(r) == (400, "invalid_cwd"), (cwd, r.text)
        assert await _sessions(c) == []
        for cwd, expected in (
            ("project", workspace / "project"),
            ("project/inner/..", workspace / "project"),
            (str(workspace / "project" / "inner"), workspace / "project" / "inner"),
            (".", workspace),
        ):
            r = await c.post("/v1/sessions", json={"cwd": cwd})
            assert r.status_code == 201, (cwd, r.text)
            assert r.json()["agent"]["cwd"] == str(expected.resolve())


async def test_agent_and_tools_only_within_the_servers_own(tmp_path: Path) -> None:
    runtime = runtime_config(tmp_path / "data", pool_size=0)
    agent = runtime.default_agent
    import msgspec

    runtime = msgspec.structs.replace(
        runtime, default_agent=msgspec.structs.replace(agent, allowed_tools=("Read",))
    )
    async with inproc_server(runtime, _server(tmp_path)) as live, live.client() as c:
        r = await c.post("/v1/sessions", json={"agent": "claude"})
        assert _code(r) == (403, "agent_not_allowed")
        r = await c.post("/v1/sessions", json={"allowed_tools": ["Read", "Bash"]})
        assert _code(r) == (403, "tools_not_allowed") and "Bash" in r.json()["error"]["message"]
        assert await _sessions(c) == []
        r = await c.post("/v1/sessions", json={"allowed_tools": []})
        assert r.status_code == 201 and r.json()["agent"]["allowed_tools"] == []
        r = await c.post(
            "/v1/sessions", json={"allowed_tools": ["Read"], "agent": runtime.default_agent.agent}
        )
        assert r.status_code == 201 and r.json()["agent"]["allowed_tools"] == ["Read"]


# --- the token ------------------------------------------------------------------------------------------


async def test_token_bearer_any_case_and_the_console_cookie(tmp_path: Path) -> None:
    token = "s3cret;/ +x"
    config = _server(tmp_path, token=token)
    async with inproc_server(runtime_config(tmp_path / "data", pool_size=0), config) as live:
        port = _port(live.base)
        async with httpx.AsyncClient(base_url=live.base, headers=JSON, timeout=10) as c:
            assert (await c.get("/v1/sessions")).status_code == 401
            for scheme in ("Bearer", "bearer", "BEARER"):
                r = await c.get("/v1/sessions", headers={"authorization": f"{scheme} {token}"})
                assert r.status_code == 200, scheme
            assert (
                await c.get("/v1/sessions", headers={"authorization": "Basic " + token})
            ).status_code == 401
            assert (await c.get("/", params={"token": "wrong"})).status_code == 401
            # Opening the console with ?token= sets the cookie and strips the token from the address.
            r = await c.get("/", params={"token": token, "x": "1"})
            assert r.status_code == 303
            assert r.headers["location"] == "/?x=1"
            cookie = r.headers["set-cookie"]
            name = f"turnstile_token_{port}"
            assert cookie.startswith(f"{name}=")
            for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
                assert flag in cookie
            value = cookie.split(";", 1)[0].split("=", 1)[1]
            assert token not in value, "the cookie value is percent-encoded"
            with_cookie = {"cookie": f"{name}={value}"}
            assert (await c.get("/v1/sessions", headers=with_cookie)).status_code == 200
            assert (await c.get("/console/console.js", headers=with_cookie)).status_code == 200
            assert (
                await c.get("/v1/sessions", headers={"cookie": f"turnstile_token_1={value}"})
            ).status_code == 401
            # The cookie opens the WebSocket port too (cookies ignore ports), for the console's origin only.
            assert live.ws is not None
            origin = {"origin": f"http://127.0.0.1:{port}"}
            async with open_websocket_url(
                live.ws, extra_headers=list({**with_cookie, **origin}.items())
            ) as ws:
                await ws.send_message('{"op":"ping"}')
                assert '"pong"' in await ws.get_message()
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(
                    live.ws, extra_headers=[("origin", EVIL), *with_cookie.items()]
                ):
                    pass
            assert rejected.value.status_code == 403


# --- WebSocket handshakes on both ports -----------------------------------------------------------------


async def test_websocket_handshakes_from_other_origins_are_refused(live: Live) -> None:
    assert live.ws is not None
    http_port, ws_port = _port(live.base), _port(live.ws)
    async with live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
    refused = [
        ([("origin", EVIL)], 403),
        ([("origin", "null")], 403),
        ([("origin", f"http://127.0.0.1:{http_port + 2}")], 403),
    ]
    for headers, status in refused:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(live.ws, extra_headers=headers) as ws:
                await ws.send_message(f'{{"op":"subscribe","session":"{sid}"}}')
                pytest.fail(f"accepted {headers}: {await ws.get_message()}")
        assert rejected.value.status_code == status, headers
    # A DNS-rebinding page names its own host (trio-websocket cannot send another Host: a raw handshake).
    for port in (ws_port, http_port):
        for host, origin in (
            (f"evil.example:{port}", None),
            (f"evil.example:{port}", f"http://evil.example:{port}"),
        ):
            status = await _raw_ws_status(port, host, origin)
            assert status == 421, (port, host, origin)
        assert await _raw_ws_status(port, f"127.0.0.1:{port}", EVIL) == 403
    assert await _raw_ws_status(ws_port, f"127.0.0.1:{ws_port}", None) == 101
    # The console's page (the HTTP port's origin) and non-browser clients (no Origin) are accepted.
    for headers in (
        [("origin", f"http://127.0.0.1:{http_port}")],
        [("origin", f"http://localhost:{http_port}")],
        [],
    ):
        async with open_websocket_url(live.ws, extra_headers=headers) as ws:
            await ws.send_message(f'{{"op":"subscribe","session":"{sid}","id":"a"}}')
            assert '"ack"' in await ws.get_message()
    # The HTTP port serves no WebSocket, and refuses a foreign origin's handshake before routing too.
    url = live.base.replace("http://", "ws://") + "/"
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url, extra_headers=[("origin", EVIL)]):
            pass
    assert rejected.value.status_code == 403


async def _raw_ws_status(port: int, host: str, origin: str | None) -> int:
    """The status a WebSocket handshake with these headers gets."""
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    answer = await _raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), read_until_close=False)
    return int(answer.split(b" ", 2)[1])


# --- limits and timeouts (items 2 and 6) ---------------------------------------------------------------


async def _raw(port: int, data: bytes, *, read_until_close: bool = True, limit_s: float = 20) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.fail_after(limit_s):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return out
                out += chunk
                if not read_until_close and b"\r\n\r\n" in out:
                    return out


async def test_oversized_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    config = _server(tmp_path, max_body_bytes=1000, max_prompt_bytes=5000)
    async with (
        inproc_server(runtime_config(tmp_path / "data", pool_size=0), config) as live,
        live.client() as c,
    ):
        port = _port(live.base)
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        # A declared length over the limit: answered from the headers, the body never sent.
        for path, size, code in (
            ("/v1/sessions", 100 << 20, "body_too_large"),
            (f"/v1/sessions/{sid}/turns", 100 << 20, "prompt_too_large"),
        ):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n\r\n"
            ).encode()
            answer = await _raw(port, head, read_until_close=False)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
            assert code.encode() in answer or b"\r\n\r\n" in answer
        # A chunked body (no length) is counted as it streams and refused at the limit: the client gets
        # its 413 long before it could send 100 MB.
        sent = 0
        answer = b""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"POST /v1/sessions/{sid}/turns HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            )

            async def pump() -> None:
                nonlocal sent
                chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
                with trio.move_on_after(60):
                    try:
                        while sent < 100 << 20:
                            await stream.send_all(chunk)
                            sent += 0x10000
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                with trio.fail_after(30):
                    while b"\r\n\r\n" not in answer:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        answer += data
                nursery.cancel_scope.cancel()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 50 << 20, f"the client had to send {sent} bytes before the server answered"
        # The server is fine, and took no turn.
        assert (await c.get(f"/v1/sessions/{sid}")).json()["turns"] == []
        r = await c.post("/v1/sessions", content=b'{"model":"' + b"m" * 2000 + b'"}')
        assert _code(r) == (413, "body_too_large")


async def test_slow_headers_are_cut_off(tmp_path: Path) -> None:
    """A client that trickles its request headers (slowloris) is disconnected after header_timeout_s,
    on the HTTP port and on the WebSocket port; a quiet keep-alive connection is not."""
    config = _server(tmp_path, header_timeout_s=0.5)
    async with inproc_server(runtime_config(tmp_path / "data", pool_size=0), config) as live:
        assert live.ws is not None
        for port in (_port(live.base), _port(live.ws)):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                request = b"GET /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400
                closed = False
                with trio.fail_after(60):
                    for byte in request:
                        try:
                            await stream.send_all(bytes([byte]))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            closed = True
                            break
                        with trio.move_on_after(0.1):
                            if await stream.receive_some(1024) == b"":
                                closed = True
                                break
                assert closed, f"port {port}: a 40 s trickle of header bytes was never cut off"
        # A keep-alive connection that is idle (no bytes) longer than the header timeout stays usable.
        stream = await trio.open_tcp_stream("127.0.0.1", _port(live.base))
        async with stream:
            req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            await stream.send_all(req)
            assert (await _one_response(stream)).startswith(b"HTTP/1.1 200")
            await trio.sleep(1.5)  # proving that something does NOT happen needs a wait: 3x the timeout
            await stream.send_all(req)
            assert (await _one_response(stream)).startswith(b"HTTP/1.1 200")


async def _one_response(stream: trio.SocketStream) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length (headers and body may come in several reads)."""
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, "the connection closed"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            assert chunk, "the connection closed"
            body += chunk
    assert len(body) == length, "more bytes than one response"
    return head + b"\r\n\r\n" + body


async def test_streamed_responses_close_for_http10_and_connection_close(live: Live) -> None:
    """nginx speaks HTTP/1.0 to its upstreams: a finished turn's SSE and the /log download must end the
    connection, not leave it open until the client gives up. A keep-alive client gets its next answer."""
    port = _port(live.base)
    async with live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        tid = (await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "hi"})).json()["turn_id"]
        async with c.stream("GET", f"/v1/sessions/{sid}/turns/{tid}/events") as r:
            async for _ in r.aiter_bytes():
                pass
    for path in (f"/v1/sessions/{sid}/turns/{tid}/events", f"/v1/sessions/{sid}/log"):
        for version, extra in (("1.0", ""), ("1.1", "Connection: close\r\n")):
            answer = await _raw(port, f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
            assert b"stream.ended" in answer or b"session.created" in answer
        # Keep-alive: two requests back to back on one connection, both answered.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            out = b""
            with trio.fail_after(10):
                while b'{"status":"ok"}' not in out:
                    out += await stream.receive_some(65536)


async def test_a_lone_surrogate_is_explained(live: Live) -> None:
    async with live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        r = await c.post(f"/v1/sessions/{sid}/turns", content=b'{"prompt": "bad \\ud800 half"}')
        assert _code(r) == (400, "invalid_json")
        message = r.json()["error"]["message"]
        assert "\\ud800" in message and "surrogate" in message, message
        # A proper pair is fine.
        r = await c.post(f"/v1/sessions/{sid}/turns", content=b'{"prompt": "ok \\ud83d\\ude00"}')
        assert r.status_code == 202, r.text


async def test_a_completed_turns_reason_is_the_same_everywhere(live: Live) -> None:
    async with live.client() as c:
        sid = (await c.post("/v1/sessions", json={})).json()["id"]
        tid = (await c.post(f"/v1/sessions/{sid}/turns", json={"prompt": "hi"})).json()["turn_id"]
        ended: dict[str, Any] = {}
        async with c.stream("GET", f"/v1/sessions/{sid}/turns/{tid}/events") as r:
            async for line in r.aiter_lines():
                if line.startswith("data:") and '"stream.ended"' in line:
                    import json

                    ended = json.loads(line[5:])
        assert ended["outcome"] == "completed"
        turn = (await c.get(f"/v1/sessions/{sid}/turns/{tid}")).json()
        assert turn["reason"] == ended["reason"] == ""
