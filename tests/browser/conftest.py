"""Fixtures for the console's real-browser tests: a real ``turnstile serve`` subprocess, Debian's Chromium
driven by Playwright, a TCP proxy the tests can cut, and a screenshot of every failing test.

Chromium comes from Debian's ``chromium`` package (``/usr/bin/chromium``; ``.ci/run`` installs it), never
from ``playwright install``. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.net import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TURNSTILE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Counts every EventSource the page creates, so a test can check that none is left open (or reconnecting).
EVENTSOURCE_SPY = """
(() => {
  const Native = window.EventSource;
  const all = [];
  window.__eventSources = all;
  window.EventSource = class extends Native {
    constructor(url, init) { super(url, init); all.push(this); }
  };
})();
"""


# --- a real server --------------------------------------------------------------------------------------


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``, as ``{pid: start time}`` (to tell a pid reused later apart)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


class Server:
    """``turnstile serve`` as a subprocess in its own process group, on a fixed port and data directory
    (so :meth:`restart` comes back where it was)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        pool_size: int = 1,
        sim_speed: float = 1.0,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        token: str | None = None,
        websocket: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        #: The WebSocket port (-1: off, as the console does not use it).
        self.ws_port = free_port() if websocket else -1
        self.pool_size = pool_size
        self.sim_speed = sim_speed
        self.env = env or {}
        self.args = args
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.children: dict[int, str] = {}  # every agent process we saw it spawn (killed at the end)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        argv = [
            sys.executable,
            "-m",
            "turnstile.adapters.cli",
            "serve",
            "--port",
            str(self.port),
            "--ws-port",
            str(self.ws_port),
            "--data-dir",
            str(self.data_dir),
            "--pool-size",
            str(self.pool_size),
            "--sim-speed",
            str(self.sim_speed),
            *self.args,
        ]
        if self.token:
            argv += ["--token", self.token]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TURNSTILE_")}
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed below
        try:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until ``GET /healthz`` answers 200 (the port is open)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"the server exited with {code}; log:\n{self.log_tail()}")
            try:
                query = f"?token={self.token}" if self.token else ""  # --token guards /healthz too
                with urllib.request.urlopen(self.url + "/healthz" + query, timeout=2) as res:
                    if res.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                raise AssertionError(f"the server did not answer /healthz in {timeout} s; log:\n{tail}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server's process group (no graceful shutdown: like a crash)."""
        if self.proc is None:
            return
        self.children.update(_descendants(self.proc.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        """Teardown: SIGTERM (the server closes its runtime and reaps its agents), then SIGKILL the group,
        then any agent process it left behind (its own process group, so the killpg missed it)."""
        if self.proc is not None:
            self.children.update(_descendants(self.proc.pid))
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pass
            self.kill()
        for pid, started in self.children.items():
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- API helpers (the test's own view of the server, not the page's) ------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        sep = "&" if "?" in path else "?"
        url = self.url + path + (f"{sep}token={self.token}" if self.token else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body!r}"
        return json.loads(body)

    def log(self, sid: str) -> list[dict[str, Any]]:
        """The session's log, as entries."""
        status, body = self.request("GET", f"/v1/sessions/{sid}/log")
        assert status == 200, f"GET log: {status} {body!r}"
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """``server_factory(**options)`` starts a server (see :class:`Server`); all are stopped at the end."""
    servers: list[Server] = []

    def make(*, start: bool = True, **options: Any) -> Server:
        data = tmp_path / f"data{len(servers)}"
        data.mkdir()
        server = Server(data, **options)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


# --- a TCP proxy the test can cut ---------------------------------------------------------------------


_REQUEST_HEAD = re.compile(r"(?:GET|POST|DELETE|HEAD) \S+ HTTP/1\.1\r\n.*?\r\n\r\n", re.S)


class CuttableProxy:
    """A byte-for-byte TCP proxy from 127.0.0.1:``port`` to the server. :meth:`cut` closes every open
    connection on both sides (to the browser it looks like the server dropped it) and keeps listening.
    ``requests`` keeps the browser's request heads, to see what a reconnect sent (``Last-Event-ID``)."""

    def __init__(self, upstream_port: int, *, bad_gateway: bool = False) -> None:
        self.upstream_port = upstream_port
        self.bad_gateway = bad_gateway  # answer 502 (like nginx) while the server is down
        self.bad_gateways = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.sent: list[bytearray] = []  # client -> server bytes, per connection
        self.cuts = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                if self.bad_gateway:
                    threading.Thread(target=self._answer_502, args=(client,), daemon=True).start()
                else:
                    client.close()
                continue
            record = bytearray()
            with self.lock:
                self.pairs.append((client, upstream))
                self.sent.append(record)
            threading.Thread(target=self._pump, args=(client, upstream, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _answer_502(self, client: socket.socket) -> None:
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        with contextlib.suppress(OSError):
            client.settimeout(5)
            client.recv(65536)  # the request head (browsers send it in one segment)
            client.sendall(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            with self.lock:
                self.bad_gateways += 1
        client.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None and len(record) < 1 << 20:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Close every open connection now. Returns how many there were."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
            self.cuts += 1
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        return len(pairs)

    def requests(self) -> list[str]:
        """Every request head the browser sent through the proxy, in order."""
        with self.lock:
            blobs = [bytes(b) for b in self.sent]
        heads: list[str] = []
        for blob in blobs:
            text = blob.decode("latin-1")
            heads += [m.group(0) for m in _REQUEST_HEAD.finditer(text)]
        return heads

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    proxies: list[CuttableProxy] = []

    def make(upstream_port: int, **options: Any) -> CuttableProxy:
        proxy = CuttableProxy(upstream_port, **options)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


# --- the browser ---------------------------------------------------------------------------------------


# Module scope, not session: Chromium's helper processes must be gone before other suites (reliability)
# check that they leave no process behind.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does) "
            "or point TURNSTILE_CHROMIUM at a Chromium binary. Do not use `playwright install`.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageWatch:
    """What a page did that a test may want to assert on: JS errors, 5xx answers, every response."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.responses: list[tuple[int, str]] = []

    def server_errors(self) -> list[tuple[int, str]]:
        return [(status, url) for status, url in self.responses if status >= 500]


@pytest.fixture
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where failure screenshots go: $TURNSTILE_ARTIFACTS, else the pytest temp directory."""
    root = os.environ.get("TURNSTILE_ARTIFACTS")
    path = Path(root) if root else tmp_path_factory.getbasetemp() / "browser-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page_factory(browser: Any, request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Any]:
    """``page_factory(viewport=..., permissions=...)`` opens a fresh browser context and page (with the
    EventSource spy).
    A failing test leaves a full-page screenshot of each of its pages in ``artifacts_dir``."""
    opened: list[tuple[Any, Any, PageWatch]] = []

    def make(viewport: dict[str, int] | None = None, permissions: list[str] | None = None) -> Any:
        context = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 800}, permissions=permissions or []
        )
        context.add_init_script(EVENTSOURCE_SPY)
        page = context.new_page()
        page.set_default_timeout(15_000)
        watch = PageWatch()
        page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
        page.on("response", lambda res: watch.responses.append((res.status, res.url)))
        page.watch = watch
        opened.append((context, page, watch))
        return page

    yield make
    failed = any(
        getattr(request.node, f"rep_{when}", None) and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )
    for i, (context, page, _watch) in enumerate(opened):
        if failed:
            name = re.sub(r"[^\w.-]+", "_", request.node.name) + (f"-{i}" if i else "") + ".png"
            try:
                page.screenshot(path=str(artifacts_dir / name), full_page=True)
                print(f"screenshot of the failing page: {artifacts_dir / name}")
            except Exception as exc:  # the page may be gone; the failure itself matters more
                print(f"no screenshot ({exc})")
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so fixtures can tell a failing test in their teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def save_screenshot(page: Any, name: str, artifacts_dir: Path, *, full_page: bool = False) -> Path:
    """Save a picture of the page as ``<artifacts_dir>/screens/<name>`` (every run, for a person to look at)
    and, with ``TURNSTILE_DOCS_SCREENSHOT=1``, as ``docs/<name>`` too (the pictures docs/console.md shows)."""
    screens = artifacts_dir / "screens"
    screens.mkdir(parents=True, exist_ok=True)
    path = screens / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("TURNSTILE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, REPO / "docs" / name)
    return path
