"""A real hostile page in real Chromium cannot start, steer or read an agent (adapters/guard.py).

An "attacker" web server on another loopback port serves a page that tries what any web page the user
opens can try against ``turnstile serve`` on 127.0.0.1: a no-cors ``fetch`` POST, a CORS ``fetch`` POST and
GET, an auto-submitted HTML form (``text/plain``, the classic JSON CSRF), ``<img>``/``<script>`` loads, and
WebSockets to both ports. Then a DNS-rebinding page: Chromium resolves ``rebind.test`` to 127.0.0.1 (as a
rebinding DNS server would after the page loaded) and the page reads "its own" origin. Everything is
refused; the test's own, trusted view of the server shows no session was created.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, Server

pytestmark = pytest.mark.slow

ATTACK_PAGE = """<!doctype html>
<html><body>
<iframe name="sink" style="display:none"></iframe>
<form id="csrf" method="POST" enctype="text/plain" target="sink" action="{http}/v1/sessions">
  <input name='{{"session_id":"csrf","cwd":"/","x":"' value='"}}'>
</form>
<script>
const http = "{http}", ws = "{ws}";
const results = {{}};
window.__results = results;
async function attempt(name, fn) {{
  try {{ results[name] = await fn(); }} catch (e) {{ results[name] = "error: " + e.name; }}
}}
function socket(url) {{
  return new Promise((resolve) => {{
    const s = new WebSocket(url);
    let opened = false, received = [];
    s.onopen = () => {{ opened = true; s.send(JSON.stringify({{op: "subscribe", session: "victim"}})); }};
    s.onmessage = (m) => received.push(String(m.data));
    s.onclose = (ev) => resolve({{opened, received, code: ev.code}});
    setTimeout(() => {{ try {{ s.close(); }} catch (e) {{}} }}, 3000);
  }});
}}
(async () => {{
  await attempt("nocors_post", async () => {{
    const r = await fetch(http + "/v1/sessions", {{method: "POST", mode: "no-cors",
      headers: {{"content-type": "text/plain"}}, body: '{{"session_id":"nocors","cwd":"/"}}'}});
    return "opaque:" + r.type;
  }});
  await attempt("cors_post", async () => {{
    const r = await fetch(http + "/v1/sessions", {{method: "POST",
      headers: {{"content-type": "application/json"}}, body: '{{"session_id":"cors"}}'}});
    return "status:" + r.status;
  }});
  await attempt("cors_read", async () => {{
    const r = await fetch(http + "/v1/sessions");
    return "read:" + (await r.text()).slice(0, 80);
  }});
  await attempt("turn_post", async () => {{
    const r = await fetch(http + "/v1/sessions/victim/turns", {{method: "POST", mode: "no-cors",
      headers: {{"content-type": "text/plain"}}, body: '{{"prompt":"rm -rf ~"}}'}});
    return "opaque:" + r.type;
  }});
  await attempt("ws_port", () => socket(ws));
  await attempt("ws_on_http_port", () => socket(http.replace("http:", "ws:") + "/"));
  await attempt("script_tag", () => new Promise((resolve) => {{
    const s = document.createElement("script");
    s.src = http + "/v1/sessions";
    s.onload = () => resolve("loaded");
    s.onerror = () => resolve("blocked");
    document.body.append(s);
  }}));
  document.getElementById("csrf").submit();
  results.form_submitted = true;
  setTimeout(() => {{ results.done = true; }}, 1500);
}})();
</script>
</body></html>
"""


class _Attacker:
    """A plain web server on another port: the hostile site."""

    def __init__(self, pages: dict[str, str]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.pages = pages
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def attacker() -> Iterator[_Attacker]:
    site = _Attacker({})
    yield site
    site.close()


def _sessions(server: Server) -> list[str]:
    return [s["id"] for s in server.get_json("/v1/sessions")["sessions"]]


def test_a_hostile_page_can_neither_drive_nor_read_the_server(
    server_factory: Any, page_factory: Any, attacker: _Attacker
) -> None:
    server: Server = server_factory(pool_size=0, websocket=True)
    status, body = server.request("POST", "/v1/sessions", {"session_id": "victim"})
    assert status == 201, body
    http = server.url
    ws = f"ws://127.0.0.1:{server.ws_port}/"
    attacker.pages["/attack.html"] = ATTACK_PAGE.format(http=http, ws=ws)
    page = page_factory()
    page.goto(f"http://127.0.0.1:{attacker.port}/attack.html")
    page.wait_for_function("window.__results && window.__results.done === true", timeout=30_000)
    results: dict[str, Any] = page.evaluate("window.__results")

    # The server saw the attempts and created nothing, started nothing.
    assert _sessions(server) == ["victim"], results
    victim = server.get_json("/v1/sessions/victim")
    assert victim["turns"] == [], results
    # CORS reads fail in the page (no Access-Control-Allow-Origin for a foreign origin).
    assert results["cors_read"].startswith("error"), results
    assert results["cors_post"].startswith("error"), results
    assert results["script_tag"] == "blocked", results
    # Neither WebSocket port lets the page in.
    for name in ("ws_port", "ws_on_http_port"):
        assert results[name]["opened"] is False and results[name]["received"] == [], (name, results)
    assert not any("session" in r for r in page.watch.errors if "victim" in r)


def test_a_rebinding_page_is_refused_by_host(server_factory: Any, browser: Any) -> None:
    """Chromium resolves rebind.test to 127.0.0.1, as a DNS-rebinding attacker's DNS would once the page
    has loaded: the page's "same-origin" requests now reach our server under the attacker's name."""
    server: Server = server_factory(pool_size=0)
    port = server.url.rsplit(":", 1)[1]
    # A second Chromium from the same Playwright, with the resolver rule (a launch flag).
    rebinding = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.test 127.0.0.1"],
    )
    try:
        page = rebinding.new_page()
        answer = page.goto(f"http://rebind.test:{port}/")
        assert answer is not None and answer.status == 421, answer and answer.status
        assert "host_not_allowed" in page.content()
        for path in ("/v1/sessions", "/healthz", "/console/console.js"):
            answer = page.goto(f"http://rebind.test:{port}{path}")
            assert answer is not None and answer.status == 421, (path, answer and answer.status)
        # A script running on that origin (the rebinding page) reads "its own" API: refused.
        page.goto(f"http://rebind.test:{port}/")
        seen = page.evaluate(
            "fetch('/v1/sessions', {method: 'POST', headers: {'content-type': 'application/json'},"
            " body: '{}'}).then(async (r) => r.status + ' ' + (await r.text()))"
        )
        assert seen.startswith("421 ") and "host_not_allowed" in seen, seen
    finally:
        rebinding.close()
    assert _sessions(server) == []
