"""A real Turnstile server on loopback for the adapter tests: in-process (trio) or as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.net import JSON, free_port
from turnstile.adapters.config import ServerConfig
from turnstile.adapters.server import run_server
from turnstile.engine.runtime.config import AgentConfig, RuntimeConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    """Where a test server listens."""

    base: str
    ws: str | None
    data_dir: Path
    token: str | None = None

    def client(self, **kw: Any) -> httpx.AsyncClient:
        headers = dict(JSON)
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30, **kw)


def sim_runtime(data_dir: Path, *, pool_size: int = 1, speed: float = 0, **kw: Any) -> RuntimeConfig:
    agent = AgentConfig(agent="sim", extra_args=("--speed", str(speed)))
    return RuntimeConfig(data_dir=str(data_dir), pool_size=pool_size, default_agent=agent, **kw)


async def start_server(
    nursery: trio.Nursery, tmp_path: Path, *, server: ServerConfig | None = None, **runtime_kw: Any
) -> Server:
    data = tmp_path / "data"
    sc = server or ServerConfig(port=0, ws_port=0, heartbeat_s=0.5, send_timeout_s=2.0)
    ports = await nursery.start(run_server, sc, sim_runtime(data, **runtime_kw))
    ws = f"ws://127.0.0.1:{ports.ws}/" if ports.ws else None
    return Server(base=f"http://127.0.0.1:{ports.http}", ws=ws, data_dir=data, token=sc.token)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    return await start_server(nursery, tmp_path)


async def sse_events(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None, limit: int | None = None
) -> list[ServerSentEvent]:
    """Read an SSE response to its end (or ``limit`` events, then disconnect)."""
    out: list[ServerSentEvent] = []
    async with aconnect_sse(client, "GET", url, headers=dict(headers or {})) as es:
        assert es.response.status_code == 200, es.response.status_code
        async for ev in es.aiter_sse():
            out.append(ev)
            if limit is not None and len(out) >= limit:
                break
    return out


async def new_session(client: httpx.AsyncClient, **options: Any) -> str:
    r = await client.post("/v1/sessions", json=options)
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


async def new_turn(client: httpx.AsyncClient, sid: str, prompt: str) -> tuple[str, str]:
    r = await client.post(f"/v1/sessions/{sid}/turns", json={"prompt": prompt})
    assert r.status_code == 202, r.text
    body = r.json()
    return body["turn_id"], body["events_url"]


async def log_entries(client: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/sessions/{sid}/log")
    assert r.status_code == 200
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


# --- a server in its own process (for SIGKILL, restarts and signal handling) -----------------------------


@dataclass
class ServerProcess:
    """``turnstile serve`` as a real process in its own process group."""

    port: int
    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "turnstile.adapters.cli",
            "serve",
            "--port",
            str(self.port),
            "--ws-port",
            "-1",
        ]
        argv += ["--data-dir", str(self.data_dir), *self.args]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Graceful stop (SIGTERM: the server closes its sessions and reaps its agents), then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    sp = ServerProcess(port=free_port(), data_dir=tmp_path / "data")
    try:
        yield sp
    finally:
        sp.stop()


async def wait_healthy(base: str, limit_s: float = 30.0) -> float:
    """Poll /healthz until 200; return seconds waited. Fails on any non-200 answer."""
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while time.monotonic() - start < limit_s:
            try:
                r = await client.get("/healthz")
            except httpx.TransportError:
                await trio.sleep(0.02)
                continue
            assert r.status_code == 200, r.text
            return time.monotonic() - start
    raise AssertionError(f"server at {base} not healthy after {limit_s}s")


async def iter_sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        yield line
